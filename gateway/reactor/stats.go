package reactor

import (
	"sync/atomic"
	"time"
)

// MaxEvents is the most events one epoll_wait returns, and so the most one
// turn handles: with TurnBudget it bounds a turn under a burst of
// readiness (thousands of peers hanging up at once).
const MaxEvents = 256

// TurnBudget is the time after which a turn stops handling events and
// running tasks and leaves the rest to the next turn (Run), and the
// deadline it hands to TurnEnder.EndTurn.
const TurnBudget = 2 * time.Millisecond

// TurnEnder is implemented by a Handler with work to finish at the end of
// a turn (the gateway writes the frames the turn queued, once per
// connection, there). The Loop calls EndTurn after a turn's events, tasks
// and timers, and in its final drain.
type TurnEnder interface {
	// EndTurn does the turn's closing work, stopping once deadline has
	// passed (after some progress: every call must move the work
	// forward), and reports whether work is left, in which case the loop
	// polls its fds without blocking and calls EndTurn again next turn.
	EndTurn(deadline time.Time) (more bool)
}

// Syscalls counts the system calls of one loop, or of all (summed), and
// the sends its io_uring_enter calls carried (RingSend, RingSendmsg: not
// system calls of their own, each does a write's work inside one).
type Syscalls struct {
	EpollWait    uint64 `json:"epoll_wait"`
	EpollCtl     uint64 `json:"epoll_ctl"`
	Read         uint64 `json:"read"`
	Write        uint64 `json:"write"`
	Writev       uint64 `json:"writev"`
	EventfdWrite uint64 `json:"eventfd_write"` // wake-ups: written by Post and Stop, from any goroutine
	EventfdRead  uint64 `json:"eventfd_read"`
	Close        uint64 `json:"close"`
	Accept       uint64 `json:"accept"`
	IOURingEnter uint64 `json:"io_uring_enter"`
	RingSend     uint64 `json:"ring_send"`    // one buffer, in an io_uring_enter
	RingSendmsg  uint64 `json:"ring_sendmsg"` // several, in an io_uring_enter
}

// Sends is the sends made, one per write, writev or send in a ring: a
// connection's queued frames go out in one.
func (s Syscalls) Sends() uint64 { return s.Write + s.Writev + s.RingSend + s.RingSendmsg }

// numSyscalls is the number of fields of Syscalls.
const numSyscalls = 12

// array is s's fields in declaration order.
func (s *Syscalls) array() [numSyscalls]uint64 {
	return [numSyscalls]uint64{s.EpollWait, s.EpollCtl, s.Read, s.Write, s.Writev, s.EventfdWrite,
		s.EventfdRead, s.Close, s.Accept, s.IOURingEnter, s.RingSend, s.RingSendmsg}
}

// Add adds o's counts to s.
func (s *Syscalls) Add(o Syscalls) {
	s.EpollWait += o.EpollWait
	s.EpollCtl += o.EpollCtl
	s.Read += o.Read
	s.Write += o.Write
	s.Writev += o.Writev
	s.EventfdWrite += o.EventfdWrite
	s.EventfdRead += o.EventfdRead
	s.Close += o.Close
	s.Accept += o.Accept
	s.IOURingEnter += o.IOURingEnter
	s.RingSend += o.RingSend
	s.RingSendmsg += o.RingSendmsg
}

// Names are the syscall names of Syscalls' fields, in the order Each
// visits them (the JSON keys and the metric's call label).
var syscallNames = [numSyscalls]string{"epoll_wait", "epoll_ctl", "read", "write", "writev", "eventfd_write",
	"eventfd_read", "close", "accept", "io_uring_enter", "ring_send", "ring_sendmsg"}

// Each calls f with every syscall's name and count, in a fixed order.
func (s Syscalls) Each(f func(name string, n uint64)) {
	a := s.array()
	for i, n := range a {
		f(syscallNames[i], n)
	}
}

// publish copies Sys to the atomics other goroutines read. Loop goroutine
// only, once per turn: the counting itself stays plain increments.
func (l *Loop) publish() {
	a := l.Sys.array()
	for i, v := range a {
		if l.pub[i].Load() != v {
			l.pub[i].Store(v)
		}
	}
}

// Syscalls returns the loop's syscall counts as of the end of its latest
// turn, its wake-ups (eventfd writes, made by other goroutines) as of now.
// Safe for use by multiple goroutines.
func (l *Loop) Syscalls() Syscalls {
	var a [numSyscalls]uint64
	for i := range a {
		a[i] = l.pub[i].Load()
	}
	return Syscalls{EpollWait: a[0], EpollCtl: a[1], Read: a[2], Write: a[3], Writev: a[4],
		EventfdWrite: l.wakes.Load(), EventfdRead: a[6], Close: a[7], Accept: a[8],
		IOURingEnter: a[9], RingSend: a[10], RingSendmsg: a[11]}
}

// TurnBounds are the upper bounds of the loop-turn histogram's buckets; a
// last bucket, without bound, takes the longer turns.
var TurnBounds = [...]time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
}

// turnHistogram counts a loop's turns by duration: n[i] the turns of at
// most TurnBounds[i] (and above the bound before), n[len(TurnBounds)] the
// longer ones. Written by the loop goroutine, read by any.
type turnHistogram struct {
	n   [len(TurnBounds) + 1]atomic.Uint64
	sum atomic.Int64 // nanoseconds
}

func (h *turnHistogram) observe(d time.Duration) {
	i := 0
	for i < len(TurnBounds) && d > TurnBounds[i] {
		i++
	}
	h.n[i].Add(1)
	h.sum.Add(int64(d))
}

// Turns is a distribution of loop-turn durations: Counts[i] turns took at
// most TurnBounds[i] and more than the bound before it; the last count,
// Counts[len(TurnBounds)], took longer than every bound. Only turns that
// did work count (events, tasks, timers or end-of-turn work).
type Turns struct {
	Counts [len(TurnBounds) + 1]uint64
	Sum    time.Duration // the turns' total time
	Max    time.Duration // the longest turn since start (Loop.Stall)
}

// Add adds o's turns to t; the max is the larger.
func (t *Turns) Add(o Turns) {
	for i := range t.Counts {
		t.Counts[i] += o.Counts[i]
	}
	t.Sum += o.Sum
	t.Max = max(t.Max, o.Max)
}

// Count is the number of turns counted.
func (t *Turns) Count() uint64 {
	var n uint64
	for _, c := range t.Counts {
		n += c
	}
	return n
}

// Quantile returns the upper bound of the bucket holding quantile q (0 <
// q ≤ 1) of the turns: an upper estimate. For the last bucket, which has
// no bound, it returns Max; with no turns, 0.
func (t *Turns) Quantile(q float64) time.Duration {
	total := t.Count()
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total) + 0.999999)
	rank = max(rank, 1)
	var seen uint64
	for i, c := range t.Counts {
		seen += c
		if seen >= rank {
			if i < len(TurnBounds) {
				return TurnBounds[i]
			}
			break
		}
	}
	return t.Max
}

// Turns returns the loop's turn distribution since start. Safe for use by
// multiple goroutines.
func (l *Loop) Turns() Turns {
	var t Turns
	for i := range t.Counts {
		t.Counts[i] = l.turns.n[i].Load()
	}
	t.Sum = time.Duration(l.turns.sum.Load())
	t.Max = time.Duration(l.Stall.Load())
	return t
}
