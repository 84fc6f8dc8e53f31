package reactor

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newTestRing returns a ring, skipping the test where the kernel offers
// none (failing under CI, whose machines have io_uring).
func newTestRing(t *testing.T) *Ring {
	t.Helper()
	r, err := NewRing()
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("no io_uring here: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// tcpPair returns a connected loopback TCP pair: the server side's
// descriptor (non-blocking, as the gateway's), and the client side.
func tcpPair(t *testing.T) (int, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.(*net.TCPConn).File() // a blocking-mode duplicate
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd, c
}

// Sends of one and of several buffers reach their sockets whole and in
// order, and each completes with its tag and byte count by the time Submit
// returns.
func TestRingSends(t *testing.T) {
	r := newTestRing(t)
	fd1, c1 := tcpPair(t)
	fd2, c2 := tcpPair(t)
	if err := r.Queue(fd1, [][]byte{[]byte("hello")}, 7); err != nil {
		t.Fatal(err)
	}
	if err := r.Queue(fd2, [][]byte{[]byte("a"), []byte("bc"), []byte("def")}, 9); err != nil {
		t.Fatal(err)
	}
	if r.Queued() != 2 {
		t.Fatalf("Queued %d, want 2", r.Queued())
	}
	got := map[uint64]Completion{}
	if err := r.Submit(func(c Completion) { got[c.Tag] = c }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[7].N != 5 || got[7].Err != nil || got[9].N != 6 || got[9].Err != nil {
		t.Fatalf("completions %+v", got)
	}
	for c, want := range map[net.Conn]string{c1: "hello", c2: "abcdef"} {
		b := make([]byte, len(want))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, b); err != nil || string(b) != want {
			t.Fatalf("read %q, %v; want %q", b, err, want)
		}
	}
	if r.Queued() != 0 {
		t.Fatalf("Queued %d after Submit", r.Queued())
	}
}

// A send to a full socket completes at once with EAGAIN, one to a socket
// with some room with a short count: the kernel keeps nothing for later,
// so the caller's buffers are free when Submit returns.
func TestRingFullSocket(t *testing.T) {
	r := newTestRing(t)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	big := bytes.Repeat([]byte("x"), 1<<20)
	var results []Completion
	collect := func(c Completion) { results = append(results, c) }
	// The first send fills the buffer and is short; the next finds it full.
	for range 2 {
		if err := r.Queue(fds[0], [][]byte{big}, 1); err != nil {
			t.Fatal(err)
		}
		if err := r.Submit(collect); err != nil {
			t.Fatal(err)
		}
	}
	if len(results) != 2 || results[0].Err != nil || results[0].N <= 0 || results[0].N >= len(big) ||
		results[1].Err != unix.EAGAIN || results[1].N != 0 {
		t.Fatalf("completions %+v, want a short send then EAGAIN", results)
	}
}

// A send that fails (a descriptor that is no socket) fails alone: the
// others of its batch go out.
func TestRingFailureIsPerSend(t *testing.T) {
	r := newTestRing(t)
	fd, c := tcpPair(t)
	f, err := os.CreateTemp(t.TempDir(), "notasocket")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_ = r.Queue(int(f.Fd()), [][]byte{[]byte("x")}, 1)
	_ = r.Queue(fd, [][]byte{[]byte("ok")}, 2)
	got := map[uint64]Completion{}
	if err := r.Submit(func(c Completion) { got[c.Tag] = c }); err != nil {
		t.Fatal(err)
	}
	if got[1].Err != unix.ENOTSOCK || got[2].N != 2 || got[2].Err != nil {
		t.Fatalf("completions %+v, want ENOTSOCK for 1 and 2 bytes for 2", got)
	}
	b := make([]byte, 2)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ok" {
		t.Fatalf("read %q, %v", b, err)
	}
}

// The ring takes RingEntries sends between submissions, and refuses more.
func TestRingFull(t *testing.T) {
	r := newTestRing(t)
	fd, c := tcpPair(t)
	go func() { _, _ = io.Copy(io.Discard, c) }()
	for i := range RingEntries {
		if err := r.Queue(fd, [][]byte{[]byte("y")}, uint64(i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := r.Queue(fd, [][]byte{[]byte("y")}, 0); !errors.Is(err, ErrRingFull) {
		t.Fatalf("send %d: %v, want ErrRingFull", RingEntries+1, err)
	}
	n := 0
	if err := r.Submit(func(c Completion) {
		if c.Err == nil && c.N == 1 {
			n++
		}
	}); err != nil {
		t.Fatal(err)
	}
	if n != RingEntries {
		t.Fatalf("%d sends completed, want %d", n, RingEntries)
	}
}

// When io_uring_enter itself fails, every send it did not take completes
// with ErrNotSubmitted (nothing of it sent) and Submit returns the error.
func TestRingEnterFails(t *testing.T) {
	r := newTestRing(t)
	fd, c := tcpPair(t)
	_ = r.Queue(fd, [][]byte{[]byte("a")}, 1)
	_ = r.Queue(fd, [][]byte{[]byte("b"), []byte("c")}, 2)
	ringFd := r.fd
	r.fd = -1 // as if the descriptor had gone: io_uring_enter fails with EBADF
	defer func() { r.fd = ringFd }()
	got := map[uint64]error{}
	err := r.Submit(func(c Completion) { got[c.Tag] = c.Err })
	if !errors.Is(err, unix.EBADF) || len(got) != 2 || got[1] != ErrNotSubmitted || got[2] != ErrNotSubmitted {
		t.Fatalf("Submit: %v, completions %v; want EBADF and both not submitted", err, got)
	}
	if r.Queued() != 0 {
		t.Fatalf("%d sends still queued", r.Queued())
	}
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _ := c.Read(make([]byte, 8)); n != 0 {
		t.Fatalf("%d bytes arrived from sends reported not submitted", n)
	}
	// The ring is usable again: what was withdrawn is gone from its queue.
	r.fd = ringFd
	if err := r.Queue(fd, [][]byte{[]byte("d")}, 3); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := r.Submit(func(c Completion) { n += c.N }); err != nil || n != 1 {
		t.Fatalf("after the failure: %v, %d bytes", err, n)
	}
	b := make([]byte, 1)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "d" {
		t.Fatalf("read %q, %v; want d alone", b, err)
	}
}
