package guard

import (
	"net/netip"
	"testing"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/ratelimit"
)

// A refused socket held for its 429 counts against the address's cap,
// at most ratelimit.RefusedAllowance at once; allow-listed addresses are
// never held (they are never refused).
func TestHoldRefused(t *testing.T) {
	g, _, _ := newGuard(t, false)
	a := netip.MustParseAddr("203.0.113.5")
	if r, _, _ := g.Admit(a, true, t0); r != reason.None {
		t.Fatalf("first attempt: %v", r)
	}
	for i := range ratelimit.RefusedAllowance {
		if !g.HoldRefused(a) {
			t.Fatalf("hold %d refused", i)
		}
	}
	if g.HoldRefused(a) {
		t.Fatal("held beyond the allowance")
	}
	// cap 2: one admitted plus held sockets fill it.
	if r, _, _ := g.Admit(a, true, t0); r != reason.PerIPConnections {
		t.Fatalf("attempt with held sockets: %v, want per_ip_connections", r)
	}
	for range ratelimit.RefusedAllowance {
		g.ReleaseRefused(a)
	}
	g.Release(a)
	if st := g.o.Limits.Stats(); st.Conns != 0 {
		t.Fatalf("%d sockets still counted after every release", st.Conns)
	}
	allowed := netip.MustParseAddr("192.0.2.1")
	if g.HoldRefused(allowed) {
		t.Fatal("allow-listed address held")
	}
	g.ReleaseRefused(allowed) // nothing to give back: ignored
}
