package audit

import "sync"

// queueMinCap is the smallest ring a Queue allocates, and the largest one
// Trim keeps.
const queueMinCap = 64

// Queue is a bounded FIFO of events whose memory follows its backlog rather
// than its bound. A buffered channel of 8,192 events holds 2.6 MB from the
// first burst on; a Queue holds a small ring while the gateway is quiet,
// doubles it up to the bound while a backlog builds, keeps it while the
// burst lasts (the backlog comes and goes many times a second then), and
// lets it go when its consumer says the burst is over (Trim). Push never
// blocks. Safe for concurrent use; it is meant for one consumer.
type Queue struct {
	max   int
	ready chan struct{} // holds a token while events may be waiting

	mu   sync.Mutex
	buf  []Event // ring; guarded by mu
	head int     // index of the oldest event; guarded by mu
	n    int     // events held; guarded by mu
}

// NewQueue returns an empty queue holding at most max events (at least 1).
func NewQueue(max int) *Queue {
	if max < 1 {
		max = 1
	}
	return &Queue{max: max, ready: make(chan struct{}, 1)}
}

// Push appends e and reports whether it fit; a full queue drops e.
func (q *Queue) Push(e Event) bool {
	q.mu.Lock()
	if q.n == len(q.buf) {
		if len(q.buf) == q.max {
			q.mu.Unlock()
			return false
		}
		q.grow()
	}
	q.buf[(q.head+q.n)%len(q.buf)] = e
	q.n++
	wake := q.n == 1
	q.mu.Unlock()
	if wake {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return true
}

// grow doubles the ring, keeping the events in order. q.mu must be held.
func (q *Queue) grow() {
	c := min(max(2*len(q.buf), queueMinCap), q.max)
	buf := make([]Event, c)
	k := copy(buf, q.buf[q.head:])
	copy(buf[k:], q.buf[:q.head])
	q.buf, q.head = buf, 0
}

// Ready is signalled when the queue goes from empty to not empty. A consumer
// waits on it, then calls Pop until Pop returns nothing; a signal may find
// the queue already drained.
func (q *Queue) Ready() <-chan struct{} { return q.ready }

// Pop appends to dst up to limit of the oldest events, removes them and
// returns dst.
func (q *Queue) Pop(dst []Event, limit int) []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := min(limit, q.n)
	for k > 0 {
		end := min(q.head+k, len(q.buf))
		dst = append(dst, q.buf[q.head:end]...)
		clear(q.buf[q.head:end]) // the strings they hold can be collected
		q.n -= end - q.head
		k -= end - q.head
		q.head = end % len(q.buf)
	}
	if q.n == 0 {
		q.head = 0
	}
	return dst
}

// Trim lets go of a ring grown for a burst if the queue is empty; the
// next Push allocates a small one.
func (q *Queue) Trim() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 && len(q.buf) > queueMinCap {
		q.buf, q.head = nil, 0
	}
}

// Len returns the number of events waiting.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// Cap returns the bound given to NewQueue.
func (q *Queue) Cap() int { return q.max }
