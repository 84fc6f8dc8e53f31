package clientip

import (
	"net/netip"
	"testing"
	"time"
)

func TestForwardingHeader(t *testing.T) {
	for name, want := range map[string]string{
		"X-Forwarded-For":  XForwardedFor,
		"x-forwarded-for":  XForwardedFor,
		"FORWARDED":        Forwarded,
		"X-Real-Ip":        XRealIP,
		"cf-connecting-ip": CFConnectingIP,
		"X-Forwarded-Host": "",
		"Forwarded-For":    "",
		"Host":             "",
		"":                 "",
	} {
		if got := ForwardingHeader([]byte(name)); got != want {
			t.Errorf("ForwardingHeader(%q) = %q, want %q", name, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { ForwardingHeader([]byte("x-real-ip")) }); n != 0 {
		t.Errorf("ForwardingHeader allocates %v times", n)
	}
}

func TestLooksLikeProxyHeader(t *testing.T) {
	for in, want := range map[string]bool{
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n": true,
		"\r\n\r\n\x00\r\nQUIT\n!":            true,
		"GET / HTTP/1.1\r\n":                 false,
		"PROX":                               false,
		"\r\n\r\n\x00\r":                     true,
		"\r\n\r\nGET":                        false,
	} {
		if got := LooksLikeProxyHeader([]byte(in)); got != want {
			t.Errorf("LooksLikeProxyHeader(%q) = %v, want %v", in, got, want)
		}
	}
}

// An address is reported once per period, again after it.
func TestNoticesOncePerPeriod(t *testing.T) {
	n := NewNotices(time.Hour, 0)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	t0 := time.Unix(1_700_000_000, 0)
	if !n.First(a, t0) || !n.First(b, t0) {
		t.Fatal("first report refused")
	}
	for i := 1; i < 10; i++ {
		if n.First(a, t0.Add(time.Duration(i)*time.Minute)) {
			t.Fatalf("reported again after %d minutes", i)
		}
	}
	if !n.First(a, t0.Add(time.Hour)) {
		t.Fatal("not reported again after the period")
	}
	if n.First(a, t0.Add(time.Hour+time.Second)) {
		t.Fatal("reported twice in the new period")
	}
}

// A spray of addresses costs at most max entries; the oldest report goes
// first.
func TestNoticesBounded(t *testing.T) {
	n := NewNotices(time.Hour, 100)
	t0 := time.Unix(1_700_000_000, 0)
	first := netip.AddrFrom4([4]byte{10, 0, 0, 0})
	n.First(first, t0)
	for i := 1; i < 10_000; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !n.First(a, t0.Add(time.Duration(i))) {
			t.Fatalf("new address %v not reported", a)
		}
	}
	if l := n.Len(); l != 100 {
		t.Fatalf("Len = %d, want 100", l)
	}
	if len(n.order) > 200 {
		t.Fatalf("order holds %d entries", len(n.order))
	}
	if !n.First(first, t0.Add(time.Minute)) {
		t.Fatal("evicted address not reported again")
	}
}
