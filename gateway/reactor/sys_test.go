package reactor

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

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

// Accept hands over a non-blocking close-on-exec socket with the peer's
// address and port, IPv4 and IPv6 alike; Read, ShutdownWrite,
// SetResetOnClose and Close do what their libc namesakes do, and errors
// come back as the errno unix's wrappers return.
func TestRawSocketCalls(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		lfd, bound, err := Listen(addr, 16)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		t.Cleanup(func() { unix.Close(lfd) })
		if _, _, err := Accept(lfd); !errors.Is(err, unix.EAGAIN) {
			t.Fatalf("%s: accept with none waiting: %v, want EAGAIN", addr, err)
		}
		client, err := net.Dial("tcp", bound.String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		var fd int
		var peer netip.AddrPort
		for i := 0; i < 1000; i++ {
			if fd, peer, err = Accept(lfd); err == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err != nil {
			t.Fatalf("%s: accept: %v", addr, err)
		}
		if want := client.LocalAddr().(*net.TCPAddr).AddrPort(); peer != want {
			t.Fatalf("%s: peer %v, want %v", addr, peer, want)
		}
		if fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
			t.Fatalf("%s: accepted socket blocks", addr)
		}
		if fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); fl&unix.FD_CLOEXEC == 0 {
			t.Fatalf("%s: accepted socket is inherited by children", addr)
		}
		if err := SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			t.Fatal(err)
		}
		if v, _ := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); v != 1 {
			t.Fatalf("TCP_NODELAY %d after SetsockoptInt", v)
		}
		buf := make([]byte, 16)
		if _, err := Read(fd, buf); !errors.Is(err, unix.EAGAIN) {
			t.Fatalf("%s: read with nothing sent: %v, want EAGAIN", addr, err)
		}
		client.Write([]byte("ping"))
		var n int
		for i := 0; i < 1000; i++ {
			if n, err = Read(fd, buf); err == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if string(buf[:n]) != "ping" {
			t.Fatalf("%s: read %q %v", addr, buf[:n], err)
		}
		if err := ShutdownWrite(fd); err != nil {
			t.Fatal(err)
		}
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if k, err := client.Read(buf); k != 0 || err != io.EOF {
			t.Fatalf("%s: client after ShutdownWrite: %d %v, want EOF", addr, k, err)
		}
		if err := SetResetOnClose(fd); err != nil {
			t.Fatal(err)
		}
		if got, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER); err != nil || got.Onoff != 1 || got.Linger != 0 {
			t.Fatalf("SO_LINGER %+v %v after SetResetOnClose", got, err)
		}
		if err := Close(fd); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Write([]byte("x")); err == nil {
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := client.Read(buf); !errors.Is(err, unix.ECONNRESET) {
				t.Fatalf("%s: client after a reset close: %v, want ECONNRESET", addr, err)
			}
		}
		if err := Close(fd); !errors.Is(err, unix.EBADF) {
			t.Fatalf("second Close: %v, want EBADF", err)
		}
	}
}
