package reactor

import (
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Write and Writev are write(2) and writev(2) on a non-blocking socket
// without the runtime's system-call bookkeeping (entersyscall and
// exitsyscall, and the processor handed to another thread when the call
// lasts): a write to a non-blocking socket returns as soon as the kernel
// has queued what fits, so the loop's processor need not be freed for
// it, and a fan-out of thousands of writes in one turn spares the
// bookkeeping of each. They must not be used on a descriptor that can
// block.

// Write writes p to the non-blocking socket fd.
func Write(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Writev writes bufs to the non-blocking socket fd in one writev(2),
// using iov (grown as needed and returned for the next call) for the
// vector.
func Writev(fd int, bufs [][]byte, iov []unix.Iovec) (int, []unix.Iovec, error) {
	iov = iov[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: unsafe.SliceData(b)}
		v.SetLen(len(b))
		iov = append(iov, v)
	}
	if len(iov) == 0 {
		return 0, iov, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(iov))), uintptr(len(iov)))
	if e != 0 {
		return 0, iov, e
	}
	return int(n), iov, nil
}

// The other calls a loop makes on its sockets are raw for the same reason,
// and one more: the runtime's monitor thread (sysmon) takes back the
// processor of a goroutine that has been in a system call made the
// runtime's way for over 20 µs whenever no other processor is idle — a
// close(2) of a TCP socket that runs the FIN through loopback, a read
// preempted by the kernel — and after each take-back it polls every 20 µs
// for the next millisecond or more, its wake-ups preempting the loops.
// During a mass reconnect on two cores it woke ~3,000 times a second (12 %
// of the gateway's CPU), and 87 % of its take-backs were of the loops'
// reads, accepts, setsockopts and closes. None of these calls can block on
// a non-blocking socket.

// Read reads from the non-blocking socket fd into p.
func Read(fd int, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Close closes the socket fd. close(2) of a socket blocks only under
// SO_LINGER with a timeout, which the gateway never sets.
func Close(fd int) error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0); e != 0 {
		return e
	}
	return nil
}

// Accept accepts a connection on the non-blocking listener lfd, as a
// non-blocking close-on-exec socket, and returns it with its peer's
// address (IPv4-mapped IPv6 addresses unmapped; the zero AddrPort for a
// family other than IPv4 and IPv6).
func Accept(lfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	size := uint32(unix.SizeofSockaddrAny)
	fd, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)),
		uintptr(unsafe.Pointer(&size)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(fd), rawToAddrPort(&rsa), nil
}

// rawToAddrPort converts an IPv4 or IPv6 socket address as the kernel
// wrote it (the port in network byte order).
func rawToAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// SetsockoptInt sets the integer socket option opt at level on fd.
func SetsockoptInt(fd, level, opt, value int) error {
	v := int32(value)
	if _, _, e := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&v)), 4, 0); e != 0 {
		return e
	}
	return nil
}

// SetResetOnClose makes the next close of fd reset the connection
// (SO_LINGER with a zero timeout: an RST, no TIME_WAIT) instead of a FIN.
func SetResetOnClose(fd int) error {
	l := unix.Linger{Onoff: 1, Linger: 0}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER,
		uintptr(unsafe.Pointer(&l)), unsafe.Sizeof(l), 0); e != 0 {
		return e
	}
	return nil
}

// ShutdownWrite half-closes fd: a FIN after what is queued.
func ShutdownWrite(fd int) error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0); e != 0 {
		return e
	}
	return nil
}

// wait returns the ready events (at most len(l.events)): at once when
// timeout is 0, with a raw epoll_wait (it cannot block); else it blocks up
// to timeout milliseconds (-1: no limit) in an epoll_wait made the
// runtime's way, so that the loop's processor serves other goroutines
// meanwhile. (Parking the loop's goroutine in the network poller instead
// spared the runtime's monitor its take-backs and cut the stall episode's
// CPU by a fifth, but each wake-up then went through the scheduler: fan-out
// cost 6 % more CPU per delivery over 13 alternating pairs.)
func (l *Loop) wait(timeout int) (int, error) {
	l.Sys.EpollWait++
	if timeout == 0 {
		return rawEpollWait(l.epfd, l.events)
	}
	return unix.EpollWait(l.epfd, l.events, timeout)
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
