package reactor

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dial connects to port from src; it reports whether the connection was
// established (the SYN was not dropped) within a short timeout.
func dial(t *testing.T, src, dst string) bool {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 400 * time.Millisecond}
	c, err := d.Dial("tcp", dst)
	if err == nil {
		c.Close()
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	t.Fatalf("dial %s from %s: %v", dst, src, err)
	return false
}

func TestDropFilterIPv4(t *testing.T) {
	fd, bound, err := Listen("127.0.0.1:0", 128)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	addr := "127.0.0.1:" + strconv.Itoa(int(bound.Port()))
	prog := DropFilter([]netip.Prefix{netip.MustParsePrefix("127.0.9.0/24"), netip.MustParsePrefix("::ffff:127.0.0.77/128"),
		netip.MustParsePrefix("2001:db8::/32")})
	if err := AttachDropFilter(fd, prog); err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]bool{"127.0.9.1": false, "127.0.9.254": false, "127.0.0.77": false,
		"127.0.10.1": true, "127.0.0.76": true} {
		if got := dial(t, src, addr); got != want {
			t.Errorf("from %s: connected %v, want %v", src, got, want)
		}
	}
	// Removing the filter lets everyone in again.
	if err := AttachDropFilter(fd, nil); err != nil {
		t.Fatal(err)
	}
	if !dial(t, "127.0.9.1", addr) {
		t.Error("still dropped after the filter was removed")
	}
}

func TestDropFilterIPv6(t *testing.T) {
	fd, bound, err := Listen("[::1]:0", 128)
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer unix.Close(fd)
	addr := "[::1]:" + strconv.Itoa(int(bound.Port()))
	if err := AttachDropFilter(fd, DropFilter([]netip.Prefix{netip.MustParsePrefix("2001:db8::/32")})); err != nil {
		t.Fatal(err)
	}
	if !dial(t, "::1", addr) {
		t.Fatal("::1 dropped by a 2001:db8::/32 filter")
	}
	if err := AttachDropFilter(fd, DropFilter([]netip.Prefix{netip.MustParsePrefix("::1/128")})); err != nil {
		t.Fatal(err)
	}
	if dial(t, "::1", addr) {
		t.Fatal("::1 not dropped by a ::1/128 filter")
	}
}

func TestDropFilterBounded(t *testing.T) {
	var ps []netip.Prefix
	for i := 0; i < 2*MaxDropPrefixes; i++ {
		ps = append(ps, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i)}), 48))
	}
	if n := len(DropFilter(ps)); n > 4096 {
		t.Fatalf("%d instructions, over the kernel's 4,096", n)
	}
}
