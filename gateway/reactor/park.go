package reactor

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A loop with nothing to do sleeps by parking its goroutine in the
// runtime's network poller until its epoll descriptor is readable (an
// epoll descriptor is readable while events are ready in it), not by
// blocking its thread in epoll_wait. A goroutine blocked in a system call
// holds its processor, and the runtime's monitor thread takes a
// processor back from a call that lasts over 20 µs whenever no other
// processor is idle: with every loop sleeping briefly between bursts, the
// monitor woke every few tens of microseconds to do so, 3,000 times a
// second on a 2-core machine (12 % of the gateway's CPU during a mass
// reconnect), each wake-up preempting a loop. A parked goroutine leaves
// its processor the ordinary way and the monitor has nothing to take.
//
// Every epoll_wait the loop makes is then non-blocking, so it is made
// without the runtime's system-call bookkeeping (rawEpollWait), as the
// socket writes are.

// parker is a loop's epoll descriptor registered with the runtime's
// network poller.
type parker struct {
	f        *os.File
	rc       syscall.RawConn
	deadline time.Time // the read deadline last set on f
}

// open registers epfd with the network poller, which owns it from then on;
// close closes it. On failure epfd is closed too.
func (p *parker) open(epfd int) error {
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return fmt.Errorf("epoll fd non-blocking: %w", err)
	}
	p.f = os.NewFile(uintptr(epfd), "epoll")
	rc, err := p.f.SyscallConn()
	if err != nil {
		p.f.Close()
		return fmt.Errorf("epoll fd in the network poller: %w", err)
	}
	p.rc = rc
	return nil
}

func (p *parker) close() { _ = p.f.Close() }

// wait returns the ready events (at most len(l.events)): at once when
// timeout is 0; else, when none is ready, it parks the goroutine until one
// is, a task is posted (the eventfd), or timeout milliseconds have passed
// (-1: no limit), and returns 0 events on the timeout.
func (l *Loop) wait(timeout int) (int, error) {
	l.Sys.EpollWait++
	n, err := rawEpollWait(l.epfd, l.events)
	if n != 0 || err != nil || timeout == 0 {
		return n, err
	}
	p := &l.parker
	var at time.Time
	if timeout > 0 {
		at = time.Now().Add(time.Duration(timeout) * time.Millisecond)
	}
	if !at.Equal(p.deadline) {
		if err := p.f.SetReadDeadline(at); err != nil {
			return 0, fmt.Errorf("epoll fd deadline: %w", err)
		}
		p.deadline = at
	}
	perr := p.rc.Read(func(fd uintptr) bool {
		l.Sys.EpollWait++
		n, err = rawEpollWait(int(fd), l.events)
		return n != 0 || err != nil
	})
	if errors.Is(perr, os.ErrDeadlineExceeded) {
		return 0, nil
	}
	if perr != nil {
		return 0, fmt.Errorf("park on epoll fd: %w", perr)
	}
	return n, err
}

// rawEpollWait is epoll_wait(2) with a zero timeout, so it never blocks,
// made without the runtime's system-call bookkeeping.
func rawEpollWait(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd),
		uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
