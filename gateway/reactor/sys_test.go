package reactor

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func socketPair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

// Write and Writev deliver what they say, skip empty buffers, and report
// EAGAIN from a full socket as unix.Write does.
func TestRawWrites(t *testing.T) {
	a, b := socketPair(t)
	if n, err := Write(a, []byte("hello ")); n != 6 || err != nil {
		t.Fatalf("Write: %d %v", n, err)
	}
	n, iov, err := Writev(a, [][]byte{[]byte("wide"), nil, []byte(" world")}, nil)
	if n != 10 || err != nil || len(iov) != 2 {
		t.Fatalf("Writev: %d %v, %d vectors", n, err, len(iov))
	}
	buf := make([]byte, 64)
	k, _ := unix.Read(b, buf)
	if got := string(buf[:k]); got != "hello wide world" {
		t.Fatalf("read %q", got)
	}
	if n, err := Write(a, nil); n != 0 || err != nil {
		t.Fatalf("empty Write: %d %v", n, err)
	}
	big := bytes.Repeat([]byte("x"), 1<<16)
	var werr error
	for i := 0; i < 1000 && werr == nil; i++ {
		_, werr = Write(a, big)
	}
	if !errors.Is(werr, unix.EAGAIN) {
		t.Fatalf("a full socket: %v, want EAGAIN", werr)
	}
	if _, _, err := Writev(a, [][]byte{big}, iov); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("Writev to a full socket: %v, want EAGAIN", err)
	}
	unix.Close(b)
	for i := 0; i < 100; i++ {
		if _, err := Write(a, big); err != nil {
			if !errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.EAGAIN) {
				t.Fatalf("write to a closed peer: %v", err)
			}
			break
		}
	}
}
