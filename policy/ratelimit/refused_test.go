package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

// Refused sockets held for their answer count against the key's cap, at
// most RefusedAllowance at once; releasing either kind frees its own count.
func TestHoldRefused(t *testing.T) {
	tb := newTable(t, Config{ConnRate: Rate{PerSecond: 1, Burst: 3}, PerIPConnections: 3})
	p := v4(1)
	if v := tb.Admit(p, t0); v != Allow {
		t.Fatalf("admit: %v", v)
	}
	for i := range RefusedAllowance {
		if !tb.HoldRefused(p) {
			t.Fatalf("hold %d refused, want held", i)
		}
	}
	if tb.HoldRefused(p) {
		t.Fatalf("hold %d held, want the allowance of %d to be the limit", RefusedAllowance+1, RefusedAllowance)
	}
	if st := tb.Stats(); st.Conns != 1+RefusedAllowance {
		t.Fatalf("conns %d, want %d: held refused sockets are open sockets", st.Conns, 1+RefusedAllowance)
	}
	// 1 admitted + 4 held >= cap 3: an attempt within the rate is refused.
	if v := tb.Admit(p, t0); v != PerIPConns {
		t.Fatalf("admit with held sockets: %v, want per_ip_connections", v)
	}
	for range RefusedAllowance {
		tb.ReleaseRefused(p)
	}
	tb.ReleaseRefused(p) // unmatched: ignored, the admitted slot stays
	if st := tb.Stats(); st.Conns != 1 {
		t.Fatalf("conns %d after releasing the held sockets, want 1", st.Conns)
	}
	if v := tb.Admit(p, t0); v != Allow {
		t.Fatalf("admit after release: %v", v)
	}
	tb.Release(p)
	tb.Release(p)
	tb.Release(p) // unmatched: ignored
	if st := tb.Stats(); st.Conns != 0 {
		t.Fatalf("conns %d, want 0", st.Conns)
	}
	// A Release never takes a held refused socket's count, nor the reverse.
	if !tb.HoldRefused(p) {
		t.Fatal("hold after release refused")
	}
	tb.Release(p)
	if st := tb.Stats(); st.Conns != 1 {
		t.Fatalf("Release freed a held refused socket: conns %d", st.Conns)
	}
	tb.ReleaseRefused(p)
	if tb.HoldRefused(netip.Prefix{}) {
		t.Fatal("invalid key held")
	}
}

// An entry with held refused sockets is never evicted or swept; once
// released it is idle again.
func TestHoldRefusedKeepsEntry(t *testing.T) {
	tb := newTable(t, Config{ConnRate: Rate{PerSecond: 1, Burst: 1}, MaxEntries: 1})
	p, q := v4(1), v4(2)
	for i := 0; ; i++ {
		v := tb.Admit(p, t0)
		if v == ConnRate {
			break
		}
		if v != Allow || i > 10 {
			t.Fatalf("attempt %d: %v", i, v)
		}
		tb.Release(p)
	}
	if !tb.HoldRefused(p) {
		t.Fatal("hold refused")
	}
	if v := tb.Admit(q, t0); v != TableFull {
		t.Fatalf("new key with the only entry holding a socket: %v, want table_full", v)
	}
	if tb.HoldRefused(q) {
		t.Fatal("held a socket of a key the full table cannot take")
	}
	if n := tb.Sweep(t0.Add(time.Hour)); n != 0 {
		t.Fatalf("swept %d entries holding sockets", n)
	}
	tb.ReleaseRefused(p)
	if v := tb.Admit(q, t0); v != Allow {
		t.Fatalf("new key once the entry is idle: %v", v)
	}
}

func TestHoldRefusedNoAllocs(t *testing.T) {
	tb := newTable(t, Config{})
	p := v4(1)
	tb.HoldRefused(p)
	tb.ReleaseRefused(p)
	allocs := testing.AllocsPerRun(1000, func() {
		if !tb.HoldRefused(p) {
			t.Fatal("not held")
		}
		tb.ReleaseRefused(p)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per hold of a known key, want 0", allocs)
	}
}
