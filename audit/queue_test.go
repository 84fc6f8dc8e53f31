package audit

import (
	"sync"
	"testing"
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
	if q.buf != nil {
		t.Fatalf("drained queue keeps a ring of %d events", len(q.buf))
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
