package gateway

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portcullis-gw/portcullis/gateway/reactor"
)

// Every socket a Bind socket accepts has the connections' send buffer and
// TCP_NODELAY without a system call of its own: they are inherited from
// the listening socket. A bare listening socket's accepted sockets have
// neither, so the test sees the inheritance, not a kernel default.
func TestAcceptedSocketsInheritOptions(t *testing.T) {
	lns, err := Bind("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer lns.Close()
	bare, bareAddr, err := reactor.Listen("127.0.0.1:0", 16)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(bare)

	sndbuf, nodelay := acceptedOptions(t, lns.fds[0], lns.Addr().String())
	// The kernel doubles the value it is given (socket(7)), and the
	// accepted socket inherits the doubled one.
	if sndbuf != 2*SendBufferBytes || nodelay != 1 {
		t.Fatalf("accepted socket: SO_SNDBUF %d, TCP_NODELAY %d; want %d and 1", sndbuf, nodelay, 2*SendBufferBytes)
	}
	sndbuf, nodelay = acceptedOptions(t, bare, bareAddr.String())
	if sndbuf == 2*SendBufferBytes || nodelay != 0 {
		t.Fatalf("a bare listener's accepted socket: SO_SNDBUF %d, TCP_NODELAY %d: the test cannot tell inherited options from defaults", sndbuf, nodelay)
	}
}

// acceptedOptions connects to addr, accepts the connection on listening
// socket lfd and returns the accepted socket's SO_SNDBUF and TCP_NODELAY.
func acceptedOptions(t *testing.T, lfd int, addr string) (sndbuf, nodelay int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var fd int
	for end := time.Now().Add(5 * time.Second); ; {
		if fd, _, err = reactor.Accept(lfd); err == nil {
			break
		}
		if err != unix.EAGAIN || time.Now().After(end) {
			t.Fatalf("accept on %s: %v", addr, err)
		}
		time.Sleep(time.Millisecond)
	}
	defer unix.Close(fd)
	if sndbuf, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF); err != nil {
		t.Fatal(err)
	}
	if nodelay, err = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil {
		t.Fatal(err)
	}
	return sndbuf, nodelay
}
