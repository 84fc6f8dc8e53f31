//go:build linux

package app

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// dirLock is the exclusive lock on a data directory: flock on
// <data_dir>/lock, which holds the owner's pid, for the life of the
// process. It is taken before any other file of the directory is opened,
// so a second serve on the same directory fails having touched nothing.
type dirLock struct {
	f *os.File
}

// lockDataDir takes the lock on dir, which must exist. A directory in use
// is refused with the pid of its owner.
func lockDataDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			owner := strings.TrimSpace(string(b[:n]))
			if _, perr := strconv.Atoi(owner); perr != nil {
				owner = "unknown (starting)"
			}
			return nil, fmt.Errorf("data dir %s is in use by pid %s", dir, owner)
		}
		return nil, fmt.Errorf("data dir lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("data dir lock %s: %w", path, err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("data dir lock %s: %w", path, err)
	}
	return &dirLock{f: f}, nil
}

// release gives the lock up; the file stays (an empty pid would tell a
// concurrent starter nothing more).
func (l *dirLock) release() {
	if l != nil && l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
}

// portLock holds the abstract unix socket @portcullis:port:<port> for the
// life of the process. SO_REUSEPORT, which the event loops need to share
// the public port, would also let a second process bind it and take part
// of the connections; the abstract socket makes that second process fail
// instead, naming the holder's pid. The kernel drops the name when the
// process exits, however it exits.
type portLock struct {
	fd int
}

// lockPort takes the name for port. A port held by another portcullis is
// refused with that process's pid.
func lockPort(port uint16) (*portLock, error) {
	name := "@portcullis:port:" + strconv.Itoa(int(port))
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listen address lock: %w", err)
	}
	sa := &unix.SockaddrUnix{Name: name}
	if err := unix.Bind(fd, sa); err != nil {
		_ = unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("port %d is in use by another portcullis (pid %s): one process per listen address", port, holder(name))
		}
		return nil, fmt.Errorf("listen address lock: %w", err)
	}
	// Listening lets a second starter connect and learn our pid.
	if err := unix.Listen(fd, 1); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("listen address lock: %w", err)
	}
	return &portLock{fd: fd}, nil
}

// holder is the pid of the process listening on the abstract socket name,
// read from the peer credentials of a connection to it.
func holder(name string) string {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "unknown"
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		return "unknown"
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return "unknown"
	}
	return strconv.Itoa(int(cred.Pid))
}

func (l *portLock) release() {
	if l != nil && l.fd >= 0 {
		_ = unix.Close(l.fd)
		l.fd = -1
	}
}
