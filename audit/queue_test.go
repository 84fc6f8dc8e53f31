package audit

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestQueueOrderBoundAndRelease(t *testing.T) {
	q := NewQueue(300)
	for i := 0; i < 300; i++ {
		if !q.Push(Event{Conn: uint64(i)}) {
			t.Fatalf("push %d refused below the bound", i)
		}
	}
	if q.Push(Event{Conn: 300}) {
		t.Fatal("push beyond the bound accepted")
	}
	if q.Len() != 300 {
		t.Fatalf("Len = %d, want 300", q.Len())
	}
	// Pop part, push more so the ring wraps, then pop everything in order.
	got := q.Pop(nil, 100)
	for i := 0; i < 50; i++ {
		if !q.Push(Event{Conn: uint64(300 + i)}) {
			t.Fatalf("push after pop refused")
		}
	}
	for {
		n := len(got)
		got = q.Pop(got, 64)
		if len(got) == n {
			break
		}
	}
	if len(got) != 350 {
		t.Fatalf("popped %d events, want 350", len(got))
	}
	for i, e := range got {
		if e.Conn != uint64(i) {
			t.Fatalf("event %d is conn %d: order lost", i, e.Conn)
		}
	}
	// A drained ring stays while the burst may go on; Trim lets it go, but
	// never while events wait.
	if len(q.buf) != 300 {
		t.Fatalf("drained queue has a ring of %d events, want the 300 the burst grew", len(q.buf))
	}
	q.Push(Event{Conn: 1})
	q.Trim()
	if len(q.buf) != 300 || q.Len() != 1 {
		t.Fatalf("Trim with an event waiting: ring %d, %d waiting", len(q.buf), q.Len())
	}
	q.Pop(nil, 1)
	q.Trim()
	if q.buf != nil {
		t.Fatalf("trimmed queue keeps a ring of %d events", len(q.buf))
	}
	if !q.Push(Event{Conn: 2}) || len(q.buf) != queueMinCap {
		t.Fatalf("push after Trim: ring %d, want %d", len(q.buf), queueMinCap)
	}
}

func TestQueueSmallBacklogKeepsSmallRing(t *testing.T) {
	q := NewQueue(8192)
	var dst []Event
	for i := 0; i < 10000; i++ {
		q.Push(Event{Event: KindConnOpen})
		if i%10 == 9 {
			dst = q.Pop(dst[:0], 256)
		}
	}
	if len(q.buf) > queueMinCap {
		t.Fatalf("a backlog of 10 grew the ring to %d events", len(q.buf))
	}
}

func TestQueueConcurrentProducers(t *testing.T) {
	q := NewQueue(1 << 20)
	const producers, each = 4, 5000
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				q.Push(Event{Event: Kind(p + 1), Conn: uint64(i)})
			}
		}(p)
	}
	seen := make(map[Kind]uint64)
	total := 0
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var buf []Event
	for finished := false; ; {
		select {
		case <-q.Ready():
		case <-done:
			finished = true
		}
		for {
			buf = q.Pop(buf[:0], 128)
			if len(buf) == 0 {
				break
			}
			for _, e := range buf {
				if next := seen[e.Event]; e.Conn != next {
					t.Fatalf("producer %s: got %d, want %d", e.Event, e.Conn, next)
				}
				seen[e.Event]++
				total++
			}
		}
		if finished {
			break
		}
	}
	if total != producers*each {
		t.Fatalf("consumed %d events, want %d", total, producers*each)
	}
}

// TestWriterKeepsBurstMemoryUntilQuiet: while events keep coming the
// writer keeps the queue's grown ring (a burst drains it many times a
// second); once only small batches came for trimAfter it lets go.
func TestWriterKeepsBurstMemoryUntilQuiet(t *testing.T) {
	tt := newTrail(t)
	clk := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	o := tt.opts()
	o.clock = clk.now
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ring := func() int {
		w.q.mu.Lock()
		defer w.q.mu.Unlock()
		return len(w.q.buf)
	}
	var wg sync.WaitGroup
	for p := 0; p < 4; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000; i++ {
				w.Emit(Event{Event: KindAdmin, Severity: Info, Detail: "burst"})
			}
		}()
	}
	wg.Wait()
	checkFor(t, 10*time.Second, func() error {
		// Written counts the header too; a full queue drops.
		if s := w.Stats(); s.Queued > 0 || s.Written+s.Dropped+s.Summarized <= 20000 {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})
	grown := ring()
	if grown <= queueMinCap {
		t.Fatalf("20,000 events from 4 goroutines left a ring of %d", grown)
	}
	time.Sleep(300 * time.Millisecond) // three housekeeping ticks, no time passed
	if r := ring(); r != grown {
		t.Fatalf("ring %d → %d before the writer was quiet for %v", grown, r, trimAfter)
	}
	clk.advance(trimAfter)
	checkFor(t, 5*time.Second, func() error {
		if r := ring(); r != 0 {
			return fmt.Errorf("ring of %d kept after %v of quiet", r, trimAfter)
		}
		return nil
	})
}
