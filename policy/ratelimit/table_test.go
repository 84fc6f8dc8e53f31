package ratelimit

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

var t0 = time.Unix(1_700_000_000, 0)

func newTable(t testing.TB, cfg Config) *Table {
	t.Helper()
	tb, err := NewTable(cfg)
	if err != nil {
		t.Fatalf("NewTable(%+v): %v", cfg, err)
	}
	return tb
}

func v4(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
}

// keysInShard returns n distinct keys of tb that hash to shard idx.
func keysInShard(tb *Table, idx, n int) []netip.Prefix {
	var ps []netip.Prefix
	for i := 0; len(ps) < n; i++ {
		if p := v4(i); tb.shardIndex(p) == idx {
			ps = append(ps, p)
		}
	}
	return ps
}

func TestNginxBurstSemantics(t *testing.T) {
	// rate=10r/s burst=20 nodelay: 21 at once, then one per 100 ms.
	tb := newTable(t, Config{ConnRate: Rate{PerSecond: 10, Burst: 20}})
	p := v4(1)
	for i := range 21 {
		if v := attempt(tb, p, t0); v != Allow {
			t.Fatalf("attempt %d: %v, want allow", i+1, v)
		}
	}
	if v := attempt(tb, p, t0); v != ConnRate {
		t.Fatalf("attempt 22: %v, want conn_rate", v)
	}
	if d := tb.RetryAfter(p, t0); d != 100*time.Millisecond {
		t.Errorf("RetryAfter = %v, want 100ms", d)
	}
	if v := attempt(tb, p, t0.Add(99*time.Millisecond)); v != ConnRate {
		t.Fatalf("after 99ms: %v, want conn_rate", v)
	}
	if v := attempt(tb, p, t0.Add(100*time.Millisecond)); v != Allow {
		t.Fatalf("after 100ms: %v, want allow", v)
	}
	if v := attempt(tb, v4(2), t0); v != Allow {
		t.Fatalf("other key: %v, want allow", v)
	}
	if got := tb.Stats().Refused[ConnRate]; got != 2 {
		t.Errorf("Refused[ConnRate] = %d, want 2", got)
	}
}

func TestDisabledRateAllowsAll(t *testing.T) {
	tb := newTable(t, Config{})
	for i := range 1000 {
		if v := attempt(tb, v4(1), t0); v != Allow {
			t.Fatalf("attempt %d: %v", i, v)
		}
		if v := tb.HandshakeFailed(v4(1), t0); v != Allow {
			t.Fatalf("failure %d: %v", i, v)
		}
	}
}

func TestConfigErrorsAndDefaults(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"NaN rate", Config{ConnRate: Rate{PerSecond: nanf(), Burst: 1}}, []string{"conn rate", "finite"}},
		{"negative burst", Config{HandshakeFailRate: Rate{PerSecond: 1, Burst: -1}}, []string{"handshake fail rate", "burst -1"}},
		{"negative per-IP", Config{PerIPConnections: -1}, []string{"per-IP connections -1"}},
		{"negative entries", Config{MaxEntries: -5}, []string{"max entries -5"}},
		{"all at once", Config{PerIPConnections: -1, MaxEntries: -5}, []string{"per-IP", "max entries"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewTable(tc.cfg)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	tb := newTable(t, Config{})
	if tb.MaxEntries() != DefaultMaxEntries || tb.perIP != DefaultPerIPConnections {
		t.Errorf("defaults: max entries %d, per IP %d", tb.MaxEntries(), tb.perIP)
	}
}

// attempt is a connection attempt that does not stay: Admit, then Release
// when admitted.
func attempt(tb *Table, p netip.Prefix, now time.Time) Verdict {
	v := tb.Admit(p, now)
	if v == Allow {
		tb.Release(p)
	}
	return v
}

// A refunded attempt does not count against the attempt rate, and a
// refund never fills the bucket beyond full.
func TestRefundAttempt(t *testing.T) {
	tb := newTable(t, Config{ConnRate: Rate{PerSecond: 1, Burst: 2}})
	p := v4(1)
	tb.RefundAttempt(p, t0) // unknown key: nothing
	for i := range 10 {
		if v := attempt(tb, p, t0); v != Allow {
			t.Fatalf("refunded attempt %d: %v", i, v)
		}
		tb.RefundAttempt(p, t0)
	}
	tb.RefundAttempt(p, t0) // full already: stays full
	for i := range 3 {
		if v := attempt(tb, p, t0); v != Allow {
			t.Fatalf("attempt %d of a full bucket: %v", i, v)
		}
	}
	if v := attempt(tb, p, t0); v != ConnRate {
		t.Fatalf("fourth attempt: %v, want conn_rate (a refund overfilled the bucket)", v)
	}
	tb.RefundAttempt(netip.Prefix{}, t0)
}

func nanf() float64 { z := 0.0; return z / z }

func TestAcquireRelease(t *testing.T) {
	tb := newTable(t, Config{PerIPConnections: 2})
	p := v4(1)
	for i := range 2 {
		if v := tb.Admit(p, t0); v != Allow {
			t.Fatalf("acquire %d: %v", i, v)
		}
	}
	if v := tb.Admit(p, t0); v != PerIPConns {
		t.Fatalf("third acquire: %v, want per_ip_connections", v)
	}
	tb.Release(p)
	if v := tb.Admit(p, t0); v != Allow {
		t.Fatalf("acquire after release: %v", v)
	}
	tb.Release(p)
	tb.Release(p)
	tb.Release(p)      // unmatched: ignored
	tb.Release(v4(99)) // unknown: ignored
	tb.Release(netip.Prefix{})
	if st := tb.Stats(); st.Conns != 0 || st.Refused[PerIPConns] != 1 {
		t.Errorf("stats %+v", st)
	}
	for i := range 2 {
		if v := tb.Admit(p, t0); v != Allow {
			t.Fatalf("acquire %d after unmatched releases: %v", i, v)
		}
	}
	if v := tb.Admit(p, t0); v != PerIPConns {
		t.Fatalf("cap after unmatched releases: %v", v)
	}
}

func TestAdmit(t *testing.T) {
	tb := newTable(t, Config{ConnRate: Rate{PerSecond: 1, Burst: 2}, PerIPConnections: 2})
	p := v4(1)
	want := []Verdict{Allow, Allow, PerIPConns, ConnRate}
	for i, w := range want {
		if v := tb.Admit(p, t0); v != w {
			t.Fatalf("admit %d: %v, want %v", i, v, w)
		}
	}
	if st := tb.Stats(); st.Conns != 2 {
		t.Fatalf("conns %d, want 2 (refused attempts hold nothing)", st.Conns)
	}
	tb.Release(p)
	if v := tb.Admit(p, t0.Add(time.Second)); v != Allow {
		t.Fatalf("admit after release and refill: %v", v)
	}
}

func TestHandshakeFailRate(t *testing.T) {
	tb := newTable(t, Config{ConnRate: Rate{PerSecond: 100, Burst: 100}, HandshakeFailRate: Rate{PerSecond: 1, Burst: 2}})
	p := v4(7)
	for i := range 3 {
		if v := tb.HandshakeFailed(p, t0); v != Allow {
			t.Fatalf("failure %d: %v, want allow", i+1, v)
		}
	}
	if v := attempt(tb, p, t0); v != HandshakeFails {
		t.Fatalf("attempt with empty failure bucket: %v, want handshake_fail_rate", v)
	}
	if v := tb.HandshakeFailed(p, t0); v != HandshakeFails {
		t.Fatalf("failure 4: %v, want handshake_fail_rate", v)
	}
	if d := tb.RetryAfter(p, t0); d != time.Second {
		t.Errorf("RetryAfter = %v, want 1s", d)
	}
	if v := attempt(tb, p, t0.Add(time.Second)); v != Allow {
		t.Fatalf("attempt after 1s: %v, want allow", v)
	}
	if v := attempt(tb, v4(8), t0); v != Allow {
		t.Fatalf("other key: %v", v)
	}
}

func TestLRUEvictionWithinShard(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 3})
	k := keysInShard(tb, 5, 4)
	for i, p := range k[:3] {
		attempt(tb, p, t0.Add(time.Duration(i)))
	}
	attempt(tb, k[0], t0.Add(10)) // k[1] is now least recently used
	attempt(tb, k[3], t0.Add(11))
	if tb.Len() != 3 {
		t.Fatalf("Len = %d, want 3", tb.Len())
	}
	s := tb.shard(k[0])
	for i, wantIn := range []bool{true, false, true, true} {
		if _, in := s.m[k[i]]; in != wantIn {
			t.Errorf("key %d held = %v, want %v", i, in, wantIn)
		}
	}
	if ev := tb.Stats().Evictions; ev != 1 {
		t.Errorf("evictions = %d, want 1", ev)
	}
}

func TestLiveEntriesAreNeverEvicted(t *testing.T) {
	tb := newTable(t, Config{MaxEntries: 2})
	a := keysInShard(tb, 3, 2)
	b := keysInShard(tb, 40, 1)[0]
	if v := tb.Admit(a[0], t0); v != Allow {
		t.Fatal(v)
	}
	attempt(tb, b, t0) // idle, in another shard
	// a[1] shares a[0]'s shard, which has no idle entry: b's slot is taken.
	if v := tb.Admit(a[1], t0); v != Allow {
		t.Fatalf("new key with an idle entry elsewhere: %v, want allow", v)
	}
	if _, in := tb.shard(b).m[b]; in {
		t.Error("idle entry b not evicted")
	}
	// Now both entries are live: a new key is refused, nothing is evicted.
	if v := attempt(tb, b, t0); v != TableFull {
		t.Fatalf("new key in a table of live entries: %v, want table_full", v)
	}
	if v := tb.HandshakeFailed(b, t0); v != Allow && v != TableFull {
		t.Fatalf("HandshakeFailed: %v", v)
	}
	if tb.Len() != 2 || tb.Stats().Refused[TableFull] == 0 {
		t.Fatalf("Len %d, stats %+v", tb.Len(), tb.Stats())
	}
	tb.Release(a[0])
	if v := attempt(tb, b, t0); v != Allow {
		t.Fatalf("after a release: %v, want allow", v)
	}
	if tb.Len() != 2 {
		t.Fatalf("Len %d, want 2", tb.Len())
	}
	if v := tb.Admit(a[1], t0); v != Allow {
		t.Fatalf("live entry lost: %v", v)
	}
	if st := tb.Stats(); st.Conns != 2 || st.Evictions != 2 {
		t.Fatalf("stats %+v, want 2 conns, 2 evictions", st)
	}
}

func TestSweep(t *testing.T) {
	// Conn bucket refills in 3 s, failure bucket in 10 s: the TTL is 10 s.
	tb := newTable(t, Config{ConnRate: Rate{PerSecond: 1, Burst: 2}, HandshakeFailRate: Rate{PerSecond: 0.2, Burst: 1}})
	idle, live, failed, recent := v4(1), v4(2), v4(3), v4(4)
	attempt(tb, idle, t0)
	tb.Admit(live, t0)
	tb.HandshakeFailed(failed, t0)
	tb.HandshakeFailed(failed, t0)
	attempt(tb, recent, t0.Add(5*time.Second))
	if n := tb.Sweep(t0.Add(9 * time.Second)); n != 0 {
		t.Fatalf("swept %d before the TTL", n)
	}
	if n := tb.Sweep(t0.Add(10 * time.Second)); n != 2 {
		t.Fatalf("swept %d at the TTL, want 2 (idle, failed)", n)
	}
	if tb.Len() != 2 {
		t.Fatalf("Len %d, want 2 (live, recent)", tb.Len())
	}
	if n := tb.Sweep(t0.Add(time.Hour)); n != 1 {
		t.Fatalf("swept %d an hour later, want 1 (recent)", n)
	}
	tb.Release(live)
	if n := tb.Sweep(t0.Add(2 * time.Hour)); n != 1 {
		t.Fatalf("swept %d after release, want 1", n)
	}
	if st := tb.Stats(); st.Entries != 0 || st.Swept != 4 || st.Evictions != 0 {
		t.Fatalf("stats %+v", st)
	}
	if tb.n.Load() != 0 {
		t.Fatalf("slot count %d, want 0", tb.n.Load())
	}
}

func TestSweepManyBatches(t *testing.T) {
	tb := newTable(t, Config{ConnRate: DefaultConnRate})
	const n = 64 * sweepBatch * 3
	for i := range n {
		attempt(tb, v4(i), t0)
	}
	if got := tb.Sweep(t0.Add(time.Minute)); got != n || tb.Len() != 0 {
		t.Fatalf("swept %d, Len %d; want %d, 0", got, tb.Len(), n)
	}
}

func TestInvalidKeyDenied(t *testing.T) {
	tb := newTable(t, Config{})
	var zero netip.Prefix
	for name, v := range map[string]Verdict{
		"Admit":           tb.Admit(zero, t0),
		"HandshakeFailed": tb.HandshakeFailed(zero, t0),
	} {
		if v != InvalidKey || v.OK() {
			t.Errorf("%s(zero) = %v, want invalid_key", name, v)
		}
	}
	if got := tb.Stats().Refused[InvalidKey]; got != 2 {
		t.Errorf("Refused[InvalidKey] = %d", got)
	}
}

func TestVerdictReasons(t *testing.T) {
	want := map[Verdict]reason.Reason{
		Allow:          reason.None,
		ConnRate:       reason.ConnRate,
		PerIPConns:     reason.PerIPConnections,
		HandshakeFails: reason.HandshakeFailRate,
		TableFull:      reason.GlobalConnections,
		InvalidKey:     reason.Internal,
	}
	for v := Allow; v < numVerdicts; v++ {
		if v.Reason() != want[v] {
			t.Errorf("%v.Reason() = %v, want %v", v, v.Reason(), want[v])
		}
		if strings.HasPrefix(v.String(), "verdict(") {
			t.Errorf("verdict %d has no name", v)
		}
	}
	if s := Verdict(200).String(); s != "verdict(200)" {
		t.Errorf("unknown verdict String = %q", s)
	}
}

func TestConcurrentUse(t *testing.T) {
	tb := newTable(t, Config{ConnRate: Rate{PerSecond: 5, Burst: 5}, HandshakeFailRate: Rate{PerSecond: 1, Burst: 3},
		PerIPConnections: 3, MaxEntries: 200})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			now := t0
			var held []netip.Prefix
			for i := range 5000 {
				now = now.Add(time.Millisecond)
				p := v4((g*7919 + i*31) % 1000)
				switch i % 5 {
				case 0, 1:
					if tb.Admit(p, now) == Allow {
						held = append(held, p)
					}
				case 2:
					tb.HandshakeFailed(p, now)
				case 3:
					if len(held) > 0 {
						tb.Release(held[0])
						held = held[1:]
					}
				case 4:
					if i%500 == 4 {
						tb.Sweep(now)
						tb.Stats()
					}
				}
			}
			for _, p := range held {
				tb.Release(p)
			}
		})
	}
	wg.Wait()
	st := tb.Stats()
	if st.Conns != 0 {
		t.Errorf("open connections %d after every release", st.Conns)
	}
	if st.Entries > 200 || int64(st.Entries) != tb.n.Load() {
		t.Errorf("entries %d, slot count %d, max 200", st.Entries, tb.n.Load())
	}
	for i := range tb.shards {
		s := &tb.shards[i]
		idle := 0
		for e := s.head; e != nil; e = e.next {
			idle++
			if e.conns != 0 {
				t.Fatalf("entry with %d conns on the idle list", e.conns)
			}
		}
		if idle != len(s.m) {
			t.Fatalf("shard %d: %d on the idle list, %d held", i, idle, len(s.m))
		}
	}
}

func TestAdmitReleaseNoAllocs(t *testing.T) {
	tb := newTable(t, Config{ConnRate: Rate{PerSecond: 1e9, Burst: 1000}})
	p := v4(1)
	tb.Admit(p, t0)
	tb.Release(p)
	now := t0
	allocs := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Microsecond)
		if v := attempt(tb, p, now); v != Allow {
			t.Fatal(v)
		}
		if v := tb.Admit(p, t0); v != Allow {
			t.Fatal(v)
		}
		tb.Release(p)
		tb.Admit(p, now)
		tb.Release(p)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per admission of a known key, want 0", allocs)
	}
}

func Example() {
	tb, err := NewTable(Config{ConnRate: Rate{PerSecond: 1, Burst: 1}, PerIPConnections: 1})
	if err != nil {
		panic(err)
	}
	now := time.Unix(0, 0)
	p := netip.MustParsePrefix("2001:db8:1:2::/64") // clientip.Key(addr, 64)
	for range 3 {
		v := tb.Admit(p, now)
		fmt.Println(v, v.Reason())
		if v.OK() {
			defer tb.Release(p) // when the connection closes
		}
	}
	// Output:
	// allow none
	// per_ip_connections per_ip_connections
	// conn_rate conn_rate
}

func TestShardSpread(t *testing.T) {
	tb := newTable(t, Config{})
	for name, key := range map[string]func(int) netip.Prefix{"v4": v4, "v6/64": v6} {
		var n [numShards]int
		const keys = numShards * 1024
		for i := range keys {
			n[tb.shardIndex(key(i))]++
		}
		for i, c := range n {
			if c < 800 || c > 1250 {
				t.Errorf("%s: shard %d got %d of %d keys, want about 1024", name, i, c, keys)
			}
		}
	}
}
