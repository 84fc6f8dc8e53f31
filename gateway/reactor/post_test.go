package reactor

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// nopHandler is a Handler for loops that watch no fd.
type nopHandler struct{}

func (nopHandler) OnEvent(int, Events) {}
func (nopHandler) OnTimer(int, int64)  {}

// postCounts tallies, for one posting goroutine, the tasks Post accepted
// and the tasks that ran.
type postCounts struct {
	accepted atomic.Int64
	ran      atomic.Int64
	refused  atomic.Int64
}

// Many goroutines post while the loop stops. Every Post that returned true
// must have run by the time Done is closed, and every Post that returned
// false must never run: the counts of accepted and run tasks are equal.
// Some tasks post a follow-up from the loop goroutine, so posts also race
// with the final drain from inside it. A waiter shaped like Server.post
// (wg.Add, Post, wg.Done when refused) must never hang.
func TestPostRacingStop(t *testing.T) {
	const rounds, posters = 25, 8
	for round := 0; round < rounds; round++ {
		l, err := New(round, nopHandler{})
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = l.Run() }()

		counts := make([]postCounts, posters)
		var started, wgPosters sync.WaitGroup
		started.Add(posters)
		for g := range counts {
			wgPosters.Add(1)
			go func(c *postCounts) {
				defer wgPosters.Done()
				started.Done()
				var post func(depth int)
				post = func(depth int) {
					ok := l.Post(func() {
						c.ran.Add(1)
						if depth == 0 {
							post(1) // a follow-up posted from the loop goroutine
						}
					})
					if ok {
						c.accepted.Add(1)
					} else {
						c.refused.Add(1)
					}
				}
				// Keep posting until refused, then a few more: every
				// later Post must be refused too.
				for c.refused.Load() < 3 {
					post(0)
				}
			}(&counts[g])
		}
		started.Wait()

		// A publisher waiting for every posted task, as Server.post does.
		waiterDone := make(chan struct{})
		go func() {
			defer close(waiterDone)
			for {
				var wg sync.WaitGroup
				wg.Add(1)
				if !l.Post(wg.Done) {
					return
				}
				wg.Wait()
			}
		}()

		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		l.Stop()
		select {
		case <-l.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: loop did not stop", round)
		}
		wgPosters.Wait()
		select {
		case <-waiterDone:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: a waiter on a posted task hangs: the task was accepted and lost", round)
		}
		var total int64
		for g := range counts {
			c := &counts[g]
			acc, ran := c.accepted.Load(), c.ran.Load()
			if acc != ran {
				t.Fatalf("round %d poster %d: Post returned true %d times but %d tasks ran (refused %d)",
					round, g, acc, ran, c.refused.Load())
			}
			total += acc
		}
		if total == 0 {
			t.Fatalf("round %d: no Post was accepted before Stop", round)
		}
		if l.Post(func() { t.Error("a task posted after Run returned ran") }) {
			t.Fatalf("round %d: Post after Run returned gave true", round)
		}
		l.Stop() // again, after Run returned: no effect, no write to a closed eventfd
	}
}

// A task posted before Stop runs even when the loop is stopped before it
// could take its regular batch; a Post after Stop is refused at once.
func TestPostBeforeStopRuns(t *testing.T) {
	l, err := New(0, nopHandler{})
	if err != nil {
		t.Fatal(err)
	}
	var ran atomic.Bool
	if !l.Post(func() { ran.Store(true) }) {
		t.Fatal("Post before Run was refused")
	}
	l.Stop()
	if l.Post(func() { t.Error("a task posted after Stop ran") }) {
		t.Fatal("Post after Stop returned true")
	}
	go func() { _ = l.Run() }()
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("loop did not stop")
	}
	if !ran.Load() {
		t.Fatal("a task posted before Stop did not run")
	}
}
