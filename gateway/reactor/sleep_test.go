package reactor

import (
	"testing"
	"time"
)

// recorder is a Handler that reports its events and timers on channels.
type recorder struct {
	events chan int
	timers chan int64
}

func (r recorder) OnEvent(fd int, _ Events) {
	var buf [64]byte
	_, _ = Read(fd, buf[:]) // level-triggered: consume what woke us
	r.events <- fd
}

func (r recorder) OnTimer(_ int, at int64) { r.timers <- at }

// A loop with nothing to do sleeps in epoll_wait, and each of the three
// things that must end its sleep does: a ready socket, a posted task, and
// the timer wheel's next tick (epoll_wait's timeout, with no event at
// all).
func TestSleepingLoopWakes(t *testing.T) {
	r := recorder{events: make(chan int, 4), timers: make(chan int64, 4)}
	l, err := New(0, r)
	if err != nil {
		t.Fatal(err)
	}
	a, b := socketPair(t)
	gen, err := l.Add(a, Readable)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = l.Run() }()
	defer l.Stop()
	asleep := func() {
		t.Helper()
		// The loop announces its sleep (sleeping) before it blocks.
		for i := 0; i < 500; i++ {
			if l.sleeping.Load() {
				time.Sleep(5 * time.Millisecond)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("the loop never went to sleep")
	}

	asleep()
	if _, err := Write(b, []byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case fd := <-r.events:
		if fd != a {
			t.Fatalf("event for fd %d, want %d", fd, a)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a ready socket did not wake the sleeping loop")
	}

	asleep()
	ran := make(chan struct{})
	l.Post(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("a posted task did not wake the sleeping loop")
	}

	asleep()
	at := time.Now().Add(300 * time.Millisecond)
	l.Post(func() { l.SetTimer(a, gen, at) })
	select {
	case got := <-r.timers:
		// The wheel fires a timer when the tick holding it begins.
		if late := time.Since(at); got != at.UnixNano() || late < -tick {
			t.Fatalf("timer for %v fired %v early", at, -late)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the timer wheel's tick did not end the sleep")
	}
	select {
	case fd := <-r.events:
		t.Fatalf("spurious event for fd %d", fd)
	default:
	}
}
