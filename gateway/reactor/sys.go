package reactor

import (
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
