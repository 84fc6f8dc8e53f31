package app

import (
	"context"
	"sync"
)

// background is a component's one goroutine, run until the component
// closes.
type background struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// spawn runs run on its own goroutine, with a context stop cancels.
func (b *background) spawn(run func(context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		run(ctx)
	}()
}

// stop cancels the goroutine and waits for it to end; before spawn it
// does nothing.
func (b *background) stop() {
	if b.cancel != nil {
		b.cancel()
		b.wg.Wait()
	}
}
