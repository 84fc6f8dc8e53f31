// Package reactor is the event-loop core of the gateway: epoll loops over raw
// non-blocking sockets, each with an eventfd-woken task queue and a timer
// wheel. It knows nothing of WebSocket or of policy; the gateway plugs its
// connection logic in through Handler.
//
// Everything a Loop owns (its fds, its handler state, its timers) is touched
// only by the Loop's own goroutine; other goroutines reach it through Post.
// A turn of the loop is bounded (MaxEvents, TurnBudget): a burst is spread
// over short turns. Each loop counts its syscalls (Syscalls) and its turns'
// durations (Turns).
// reactor imports nothing from the project.
package reactor

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Events are the readiness bits passed to Handler.OnEvent.
type Events uint32

// Readiness bits.
const (
	Readable Events = unix.EPOLLIN
	Writable Events = unix.EPOLLOUT
	HangUp   Events = unix.EPOLLHUP | unix.EPOLLRDHUP | unix.EPOLLERR
)

// Handler receives the events of the fds registered with a Loop. Its methods
// run on the Loop's goroutine.
type Handler interface {
	// OnEvent is called for a ready fd registered with Add. gen is the
	// generation Add returned, so a stale event for a reused fd number is
	// never delivered.
	OnEvent(fd int, ev Events)
	// OnTimer is called when a timer set with SetTimer for (fd, gen) fires;
	// at is the time (unix nanoseconds) it was set for, so the handler can
	// tell its current timer from a superseded one.
	OnTimer(fd int, at int64)
}

// Loop is one epoll event loop. Create with New, run with Run.
type Loop struct {
	ID int

	epfd    int
	efd     int // eventfd waking the loop for posted tasks
	handler Handler

	gens []uint32 // current generation per fd; owned by the loop goroutine
	next uint32

	ender TurnEnder // handler's end-of-turn work, nil if it has none

	mu    sync.Mutex
	tasks []func() // guarded by mu
	// closed is set, under mu, by the final drain that takes the last
	// tasks: from then on Post refuses, so a task is either queued before
	// that drain (and runs) or refused (and Post returns false).
	closed bool // guarded by mu
	// pending says tasks were queued since the loop last took them;
	// sleeping says the loop is in (or about to enter) an epoll_wait that
	// may block. Post writes the eventfd only when it sets pending while
	// the loop sleeps: a loop that is awake finds the tasks at the end of
	// its turn without a wake-up (see Post and Run for the ordering).
	pending  atomic.Bool
	sleeping atomic.Bool
	// efdMu guards the eventfd against closing while a waker writes to it:
	// wakers hold it for reading around the write, finish takes it for
	// writing to set efdClosed and close the descriptor. It is never held
	// with mu, so a woken loop never blocks on a poster's lock.
	efdMu     sync.RWMutex
	efdClosed bool // guarded by efdMu
	wakes     atomic.Uint64

	// batch holds the tasks taken from the queue and not yet run (from
	// next on): a turn stops running tasks at its budget and the next
	// turn resumes them before it takes new ones, so their order is kept.
	batch    []func()
	nextTask int

	wheel wheel

	stop   atomic.Bool
	done   chan struct{}
	events []unix.EpollEvent
	// backlogged says the turn's epoll_wait filled events, or the turn
	// left some of them unhandled: more events are ready behind them.
	backlogged bool
	// Now is the loop's cached clock, refreshed after every wait.
	Now time.Time
	// Stall is the longest turn (events, tasks, timers and the
	// handler's end-of-turn work), in nanoseconds; read it with atomic
	// loads from other goroutines.
	Stall atomic.Int64

	// Sys counts the syscalls made on the loop's goroutine: the reactor's
	// own and those the handler makes on its sockets (it increments the
	// fields directly). Loop goroutine only; published at the end of
	// every turn for Syscalls.
	Sys Syscalls
	// pub is Sys as of the end of the latest turn, for other goroutines.
	pub   [numSyscalls]atomic.Uint64
	turns turnHistogram

	// ring batches the handler's sends (UseRing); nil: it writes with
	// Write and Writev.
	ring *Ring
}

// UseRing gives the loop an io_uring for its handler's sends (Ring): an
// error says this kernel has none, or forbids it, and the handler writes
// with Write and Writev. Before Run only.
func (l *Loop) UseRing() error {
	r, err := NewRing()
	if err != nil {
		return err
	}
	l.ring = r
	return nil
}

// Ring is the loop's io_uring, nil without one. Loop goroutine only.
func (l *Loop) Ring() *Ring { return l.ring }

// DropRing closes the loop's io_uring after a failure: the handler writes
// with Write and Writev from then on. Loop goroutine only.
func (l *Loop) DropRing() {
	if l.ring != nil {
		l.ring.Close()
		l.ring = nil
	}
}

// New creates a loop whose fds report to h.
func New(id int, h Handler) (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	l := &Loop{
		ID: id, epfd: epfd, efd: efd, handler: h,
		done:   make(chan struct{}),
		events: make([]unix.EpollEvent, MaxEvents),
		Now:    time.Now(),
	}
	l.ender, _ = h.(TurnEnder)
	l.wheel.init(l.Now)
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd), Pad: 0}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(efd)
		return nil, fmt.Errorf("epoll add eventfd: %w", err)
	}
	return l, nil
}

// Add registers fd for ev and returns its generation. Loop goroutine only
// (or before Run).
func (l *Loop) Add(fd int, ev Events) (uint32, error) {
	for fd >= len(l.gens) {
		l.gens = append(l.gens, make([]uint32, len(l.gens)+1024)...)
	}
	l.next++
	if l.next == 0 {
		l.next = 1
	}
	gen := l.next
	l.gens[fd] = gen
	e := unix.EpollEvent{Events: uint32(ev), Fd: int32(fd), Pad: int32(gen)}
	l.Sys.EpollCtl++
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &e); err != nil {
		l.gens[fd] = 0
		return 0, fmt.Errorf("epoll add fd %d: %w", fd, err)
	}
	return gen, nil
}

// Modify changes the events fd is registered for. Loop goroutine only.
func (l *Loop) Modify(fd int, gen uint32, ev Events) error {
	e := unix.EpollEvent{Events: uint32(ev), Fd: int32(fd), Pad: int32(gen)}
	l.Sys.EpollCtl++
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &e); err != nil {
		return fmt.Errorf("epoll mod fd %d: %w", fd, err)
	}
	return nil
}

// Remove unregisters and closes fd. Loop goroutine only.
func (l *Loop) Remove(fd int) {
	if fd < len(l.gens) {
		l.gens[fd] = 0
	}
	l.Sys.EpollCtl++
	l.Sys.Close++
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	_ = Close(fd)
}

// Detach stops watching fd without closing it: no more events, but its
// generation stays, so a timer set for it still fires and Attach resumes
// it. A listener is detached to stop a level-triggered readiness it cannot
// act on (no descriptor to accept into) from spinning the loop. Loop
// goroutine only.
func (l *Loop) Detach(fd int) error {
	l.Sys.EpollCtl++
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		return fmt.Errorf("epoll del fd %d: %w", fd, err)
	}
	return nil
}

// Attach watches a detached fd again for ev, under the generation it had.
// Loop goroutine only.
func (l *Loop) Attach(fd int, ev Events) error {
	gen := l.Gen(fd)
	if gen == 0 {
		return fmt.Errorf("epoll attach fd %d: not registered", fd)
	}
	e := unix.EpollEvent{Events: uint32(ev), Fd: int32(fd), Pad: int32(gen)}
	l.Sys.EpollCtl++
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &e); err != nil {
		return fmt.Errorf("epoll attach fd %d: %w", fd, err)
	}
	return nil
}

// Backlogged reports whether the current turn's epoll_wait filled its
// array of MaxEvents, or the turn stopped before handling all it returned:
// more events are ready, and the handler's deferrable work should wait
// for them. Loop goroutine only.
func (l *Loop) Backlogged() bool { return l.backlogged }

// Gen returns fd's current generation, 0 if unregistered.
func (l *Loop) Gen(fd int) uint32 {
	if fd < len(l.gens) {
		return l.gens[fd]
	}
	return 0
}

// Post queues f to run on the loop goroutine and wakes the loop if it
// sleeps. Safe for use by multiple goroutines. It returns true when f will
// run, and false (f never runs) once Stop has been called or Run has taken
// its final batch; the check and the queueing happen under the lock the
// final drain takes, so no task can slip in after it.
//
// The wake-up is written after the lock is released, so a loop woken at
// once never waits for the poster to release it. It is skipped when
// another Post already set pending (its wake-up, or the loop's own check,
// covers this task) and when the loop is awake: the loop announces that it
// may block (sleeping) before it checks pending for the last time, and
// Post sets pending before it reads sleeping, so either the loop sees the
// task or Post sees the loop asleep and wakes it.
func (l *Loop) Post(f func()) bool {
	l.mu.Lock()
	if l.closed || l.stop.Load() {
		l.mu.Unlock()
		return false
	}
	l.tasks = append(l.tasks, f)
	l.mu.Unlock()
	if !l.pending.Swap(true) && l.sleeping.Load() {
		l.wake()
	}
	return true
}

// wake makes the loop's epoll_wait return. Safe for use by multiple
// goroutines: the eventfd is written under efdMu held for reading, and not
// at all once finish has closed it, so a wake-up never reaches a reused
// descriptor number.
func (l *Loop) wake() {
	l.efdMu.RLock()
	defer l.efdMu.RUnlock()
	if l.efdClosed {
		return
	}
	l.wakes.Add(1)
	var one = [8]byte{1}
	_, _ = Write(l.efd, one[:])
}

// SetTimer asks for OnTimer(fd) when the wheel reaches the 1/8 s tick that
// holds at: up to one tick before at, later if the loop is busy.
// A connection keeps at most one live timer: the handler compares the time it
// stored against the firing time and ignores stale ones. Loop goroutine only.
func (l *Loop) SetTimer(fd int, gen uint32, at time.Time) {
	l.wheel.add(timerRef{fd: int32(fd), gen: gen, at: at.UnixNano()})
}

// Stop asks the loop to return from Run after its current batch. The tasks
// posted before Stop still run (in Run's final drain); every Post after it
// returns false. Calling Stop again, or after Run has returned, does nothing.
func (l *Loop) Stop() {
	l.mu.Lock()
	l.stop.Store(true)
	l.mu.Unlock()
	l.wake()
}

// Done is closed when Run has returned.
func (l *Loop) Done() <-chan struct{} { return l.done }

// Run waits for events until Stop. It must be called on its own goroutine,
// which it keeps for the loop's whole life.
//
// One turn handles what one epoll_wait returned (at most MaxEvents), the
// posted tasks, the timers due, then the handler's end-of-turn work
// (TurnEnder). A turn stops handling events and running tasks once it has
// taken TurnBudget: the events left are reported again by the next
// epoll_wait (every registration is level-triggered), the tasks left run
// first in the next turn, and the loop polls without blocking while any
// work is left, so a burst (thousands of clients hanging up at once, a
// publication to thousands of subscribers) is spread over short turns
// between which every other connection is served.
func (l *Loop) Run() error {
	defer close(l.done)
	defer l.finish()
	more := false // work left for the next turn: poll without blocking
	for !l.stop.Load() {
		timeout := 0
		if !more && l.nextTask == len(l.batch) {
			timeout = l.wheel.timeout(time.Now())
		}
		if timeout != 0 {
			// Announce the sleep, then look at pending once more: a Post
			// that set pending before this store is seen here; one after
			// it sees sleeping and writes the eventfd (see Post).
			l.sleeping.Store(true)
			if l.pending.Load() {
				timeout = 0
			}
		}
		n, err := l.wait(timeout)
		l.sleeping.Store(false)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("epoll_wait: %w", err)
		}
		l.Now = time.Now()
		start := l.Now
		deadline := start.Add(TurnBudget)
		worked := n > 0
		l.backlogged = n == len(l.events)
		for i := 0; i < n; i++ {
			if i&7 == 7 && time.Now().After(deadline) {
				l.backlogged = true
				break // the rest is reported again by the next epoll_wait
			}
			e := &l.events[i]
			fd := int(e.Fd)
			if fd == l.efd {
				var buf [8]byte
				l.Sys.EventfdRead++
				_, _ = Read(l.efd, buf[:])
				continue
			}
			if fd >= len(l.gens) || l.gens[fd] != uint32(e.Pad) {
				continue // stale event for a closed or reused fd
			}
			l.handler.OnEvent(fd, Events(e.Events))
		}
		if l.runTasks(deadline) {
			worked = true
		}
		l.Now = time.Now()
		fired := 0
		l.wheel.advance(l.Now, func(r timerRef) {
			fd := int(r.fd)
			if fd < len(l.gens) && l.gens[fd] == r.gen {
				fired++
				l.handler.OnTimer(fd, r.at)
			}
		})
		left := more
		more = false
		if l.ender != nil && (worked || fired > 0 || left) {
			more = l.ender.EndTurn(deadline)
		}
		l.publish()
		if worked || fired > 0 || left {
			d := time.Since(start)
			l.turns.observe(d)
			if ns := d.Nanoseconds(); ns > l.Stall.Load() {
				l.Stall.Store(ns)
			}
		}
	}
	return nil
}

// runTasks runs the tasks left from the last turn, then those posted
// since, until deadline (at least one per turn); it reports whether it ran
// any. Loop goroutine only.
func (l *Loop) runTasks(deadline time.Time) bool {
	ran := 0
	for {
		if l.nextTask == len(l.batch) {
			if !l.pending.Load() {
				break
			}
			l.pending.Store(false)
			clear(l.batch)
			l.mu.Lock()
			l.batch, l.tasks = l.tasks, l.batch[:0]
			l.mu.Unlock()
			l.nextTask = 0
			if len(l.batch) == 0 {
				break
			}
		}
		for l.nextTask < len(l.batch) {
			if ran > 0 && ran&3 == 0 && time.Now().After(deadline) {
				return true
			}
			f := l.batch[l.nextTask]
			l.batch[l.nextTask] = nil
			l.nextTask++
			ran++
			f()
		}
	}
	return ran > 0
}

// finish ends Run, also when epoll_wait failed: it runs the tasks posted
// before Stop (and those a budget left over), so nobody waits on them
// forever, then closes the loop's descriptors. Setting closed in the same
// critical section that takes the last tasks makes every later Post return
// false: a task is run here or refused, never queued and lost. The eventfd
// is closed under efdMu with efdClosed set, so no waker (Post, Stop) can
// write to a reused descriptor number.
func (l *Loop) finish() {
	for l.nextTask < len(l.batch) {
		f := l.batch[l.nextTask]
		l.batch[l.nextTask] = nil
		l.nextTask++
		f()
	}
	l.mu.Lock()
	batch := l.tasks
	l.tasks = nil
	l.closed = true
	l.mu.Unlock()
	for i, f := range batch {
		f()
		batch[i] = nil
	}
	if l.ender != nil {
		for l.ender.EndTurn(time.Now().Add(TurnBudget)) {
		}
	}
	l.DropRing()
	l.publish()
	l.efdMu.Lock()
	l.efdClosed = true
	unix.Close(l.efd)
	l.efdMu.Unlock()
	unix.Close(l.epfd)
}
