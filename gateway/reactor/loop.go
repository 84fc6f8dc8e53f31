// Package reactor is the event-loop core of the gateway: epoll loops over raw
// non-blocking sockets, each with an eventfd-woken task queue and a timer
// wheel. It knows nothing of WebSocket or of policy; the gateway plugs its
// connection logic in through Handler.
//
// Everything a Loop owns (its fds, its handler state, its timers) is touched
// only by the Loop's own goroutine; other goroutines reach it through Post.
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

	mu    sync.Mutex
	tasks []func() // guarded by mu
	// closed is set, under mu, by the final drain that takes the last
	// tasks: from then on Post refuses, so a task is either queued before
	// that drain (and runs) or refused (and Post returns false).
	closed  bool // guarded by mu
	pending atomic.Bool

	wheel wheel

	stop   atomic.Bool
	done   chan struct{}
	events []unix.EpollEvent
	// Now is the loop's cached clock, refreshed after every wait.
	Now time.Time
	// Stall is the longest time a batch of events and tasks took, in
	// nanoseconds; read it with atomic loads from other goroutines.
	Stall atomic.Int64
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
		events: make([]unix.EpollEvent, 256),
		Now:    time.Now(),
	}
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
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &e); err != nil {
		l.gens[fd] = 0
		return 0, fmt.Errorf("epoll add fd %d: %w", fd, err)
	}
	return gen, nil
}

// Modify changes the events fd is registered for. Loop goroutine only.
func (l *Loop) Modify(fd int, gen uint32, ev Events) error {
	e := unix.EpollEvent{Events: uint32(ev), Fd: int32(fd), Pad: int32(gen)}
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
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	unix.Close(fd)
}

// Detach stops watching fd without closing it: no more events, but its
// generation stays, so a timer set for it still fires and Attach resumes
// it. A listener is detached to stop a level-triggered readiness it cannot
// act on (no descriptor to accept into) from spinning the loop. Loop
// goroutine only.
func (l *Loop) Detach(fd int) error {
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
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &e); err != nil {
		return fmt.Errorf("epoll attach fd %d: %w", fd, err)
	}
	return nil
}

// Gen returns fd's current generation, 0 if unregistered.
func (l *Loop) Gen(fd int) uint32 {
	if fd < len(l.gens) {
		return l.gens[fd]
	}
	return 0
}

// Post queues f to run on the loop goroutine and wakes the loop. Safe for
// use by multiple goroutines. It returns true when f will run, and false
// (f never runs) once Stop has been called or Run has taken its final
// batch; the check and the queueing happen under the lock the final drain
// takes, so no task can slip in after it.
func (l *Loop) Post(f func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.stop.Load() {
		return false
	}
	l.tasks = append(l.tasks, f)
	// The wake-up is written under mu too: Run closes the eventfd only after
	// its final drain has set closed under mu, so the descriptor written to
	// here is still the loop's own and never a reused number.
	if !l.pending.Swap(true) {
		l.wake()
	}
	return true
}

// wake makes the loop's epoll_wait return. l.mu must be held, so that the
// eventfd is not closed meanwhile (see Post).
func (l *Loop) wake() {
	var one = [8]byte{1}
	_, _ = unix.Write(l.efd, one[:])
}

// SetTimer asks for OnTimer(fd) at or shortly after at (1/8 s resolution).
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
	defer l.mu.Unlock()
	l.stop.Store(true)
	if !l.closed {
		l.wake()
	}
}

// Done is closed when Run has returned.
func (l *Loop) Done() <-chan struct{} { return l.done }

// Run waits for events until Stop. It must be called on its own goroutine,
// which it keeps for the loop's whole life.
func (l *Loop) Run() error {
	defer close(l.done)
	defer l.finish()
	var batch []func()
	for !l.stop.Load() {
		timeout := l.wheel.timeout(time.Now())
		n, err := unix.EpollWait(l.epfd, l.events, timeout)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("epoll_wait: %w", err)
		}
		l.Now = time.Now()
		start := l.Now
		for i := 0; i < n; i++ {
			e := &l.events[i]
			fd := int(e.Fd)
			if fd == l.efd {
				var buf [8]byte
				_, _ = unix.Read(l.efd, buf[:])
				continue
			}
			if fd >= len(l.gens) || l.gens[fd] != uint32(e.Pad) {
				continue // stale event for a closed or reused fd
			}
			l.handler.OnEvent(fd, Events(e.Events))
		}
		if l.pending.Load() {
			l.pending.Store(false)
			l.mu.Lock()
			batch, l.tasks = l.tasks, batch[:0]
			l.mu.Unlock()
			for i, f := range batch {
				f()
				batch[i] = nil
			}
		}
		l.Now = time.Now()
		l.wheel.advance(l.Now, func(r timerRef) {
			fd := int(r.fd)
			if fd < len(l.gens) && l.gens[fd] == r.gen {
				l.handler.OnTimer(fd, r.at)
			}
		})
		if d := time.Since(start).Nanoseconds(); d > l.Stall.Load() {
			l.Stall.Store(d)
		}
		if n == len(l.events) && len(l.events) < 4096 {
			l.events = make([]unix.EpollEvent, 2*len(l.events))
		}
	}
	return nil
}

// finish ends Run, also when epoll_wait failed: it runs the tasks posted
// before Stop, so nobody waits on them forever, then closes the loop's
// descriptors. Setting closed in the same critical section that takes the
// last tasks makes every later Post return false: a task is run here or
// refused, never queued and lost. Once closed is set nobody writes to the
// eventfd (Post and Stop write only under mu while it is unset), so closing
// it cannot make them write to a reused descriptor number.
func (l *Loop) finish() {
	l.mu.Lock()
	batch := l.tasks
	l.tasks = nil
	l.closed = true
	l.mu.Unlock()
	for i, f := range batch {
		f()
		batch[i] = nil
	}
	unix.Close(l.efd)
	unix.Close(l.epfd)
}
