package gateway

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/gateway/reactor"
)

// shedOn gives up the reserve descriptor, resets every waiting connection
// without a byte, and takes the reserve back.
func TestFDShortageShed(t *testing.T) {
	var f fdShortage
	if err := f.openReserve(); err != nil {
		t.Fatal(err)
	}
	defer f.closeReserve()
	lfd, bound, err := reactor.Listen("127.0.0.1:0", 16)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(lfd)
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", bound.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	time.Sleep(50 * time.Millisecond) // let the handshakes complete into the backlog
	if n := f.shedOn(lfd, 2); n != 2 {
		t.Fatalf("shed %d, want 2 (the bound)", n)
	}
	if n := f.shedOn(lfd, 100); n != 1 {
		t.Fatalf("shed %d, want the 1 left", n)
	}
	if n := f.shedOn(lfd, 100); n != 0 {
		t.Fatalf("shed %d from an empty backlog", n)
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(make([]byte, 1))
		if n != 0 || !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
			t.Fatalf("conn %d: read %d, %v; want a reset", i, n, err)
		}
	}
	f.mu.Lock()
	held := f.held
	f.mu.Unlock()
	if !held {
		t.Fatal("reserve not taken back")
	}
	if !f.headroom() {
		t.Fatal("no headroom in a test process")
	}
	f.closeReserve()
	f.closeReserve() // idempotent
}
