package reactor

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// countingHandler counts events and timers of one fd; it never accepts, so
// a listener with a waiting connection stays readable (level-triggered).
type countingHandler struct {
	events atomic.Int64
	timers atomic.Int64
	loop   *Loop
	fd     int
	onTime func()
}

func (h *countingHandler) OnEvent(fd int, ev Events) {
	if fd == h.fd {
		h.events.Add(1)
		_ = h.loop.Detach(fd) // the first event detaches: no spin
	}
}

func (h *countingHandler) OnTimer(fd int, at int64) {
	if fd == h.fd {
		h.timers.Add(1)
		h.onTime()
	}
}

// A detached fd reports nothing, however long it stays ready, but its
// timer still fires; Attach makes it report again under the same
// generation.
func TestDetachAttach(t *testing.T) {
	lfd, bound, err := Listen("127.0.0.1:0", 16)
	if err != nil {
		t.Fatal(err)
	}
	h := &countingHandler{fd: lfd}
	l, err := New(0, h)
	if err != nil {
		t.Fatal(err)
	}
	h.loop = l
	gen, err := l.Add(lfd, Readable)
	if err != nil {
		t.Fatal(err)
	}
	attached := make(chan struct{})
	h.onTime = func() {
		if err := l.Attach(lfd, Readable); err != nil {
			t.Error(err)
		}
		close(attached)
	}
	go func() { _ = l.Run() }()
	defer func() { l.Stop(); <-l.Done(); unix.Close(lfd) }()

	c, err := net.Dial("tcp", bound.String()) // waits in the backlog, never accepted
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(300 * time.Millisecond)
	if n := h.events.Load(); n != 1 {
		t.Fatalf("%d events while detached, want 1", n)
	}
	l.Post(func() { l.SetTimer(lfd, gen, l.Now.Add(200*time.Millisecond)) })
	select {
	case <-attached:
	case <-time.After(5 * time.Second):
		t.Fatal("timer of a detached fd did not fire")
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.events.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no event after Attach")
		}
		time.Sleep(10 * time.Millisecond)
	}
	errc := make(chan error, 1)
	l.Post(func() { errc <- l.Attach(1<<20, Readable) })
	if err := <-errc; err == nil {
		t.Fatal("Attach of an fd never added succeeded")
	}
}
