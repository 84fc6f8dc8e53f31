package bans

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// benchManager returns an in-memory Manager holding n automatic-style bans
// of 10.x.y.z/32 client keys (built the way Strike builds them).
func benchManager(b *testing.B, n int) *Manager {
	m := mustOpen(b, "", Config{MaxRetry: 1}, t0)
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if _, ok := m.Strike(a, reason.ConnRate, t0); !ok {
			b.Fatalf("%s not banned", a)
		}
	}
	return m
}

func BenchmarkBanned(b *testing.B) {
	miss := netip.MustParseAddr("203.0.113.7")
	miss6 := netip.MustParseAddr("2001:db8:5::7")
	hit := netip.MustParseAddr("10.0.19.136") // ban 5000
	now := t0.Add(time.Minute)
	b.Run("bans=0", func(b *testing.B) {
		m := benchManager(b, 0)
		b.ReportAllocs()
		for b.Loop() {
			m.Banned(miss, now)
		}
	})
	b.Run("bans=10000/miss", func(b *testing.B) {
		m := benchManager(b, 10_000)
		b.ReportAllocs()
		for b.Loop() {
			m.Banned(miss, now)
		}
	})
	b.Run("bans=10000/miss-ipv6", func(b *testing.B) {
		m := benchManager(b, 10_000)
		b.ReportAllocs()
		for b.Loop() {
			m.Banned(miss6, now)
		}
	})
	b.Run("bans=10000/hit", func(b *testing.B) {
		m := benchManager(b, 10_000)
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := m.Banned(hit, now); !ok {
				b.Fatal("not banned")
			}
		}
	})
	b.Run("bans=10000+3cidr/miss", func(b *testing.B) {
		m := benchManager(b, 10_000)
		for _, s := range []string{"198.51.100.0/24", "192.0.2.0/28", "2001:db8::/48"} {
			if _, err := m.Add(netip.MustParsePrefix(s), time.Hour, "", "bench", t0); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		for b.Loop() {
			m.Banned(miss, now)
		}
	})
	// Several accept loops at once, each looking up varying addresses
	// (spread over the shards, as real clients are), half of them banned.
	b.Run("bans=10000/parallel", func(b *testing.B) {
		m := benchManager(b, 10_000)
		var g atomic.Uint32
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			hi := byte(g.Add(1))
			i := 0
			for pb.Next() {
				i++
				a := netip.AddrFrom4([4]byte{10, hi & 1, byte(i >> 8), byte(i)})
				m.Banned(a, now)
			}
		})
	})
}

func BenchmarkStrike(b *testing.B) {
	// One key struck every 250 ms with a 1 s window: 4 strikes in the window
	// at most, never a ban — the steady counting path.
	b.Run("existing-key", func(b *testing.B) {
		m := mustOpen(b, "", Config{FindTime: time.Second}, t0)
		a := netip.MustParseAddr("192.0.2.1")
		now := t0
		b.ReportAllocs()
		for b.Loop() {
			now = now.Add(250 * time.Millisecond)
			if _, ok := m.Strike(a, reason.ConnRate, now); ok {
				b.Fatal("banned")
			}
		}
	})
	// A spray of new addresses through a full table: every strike evicts.
	b.Run("new-keys-evicting", func(b *testing.B) {
		m := mustOpen(b, "", Config{MaxStrikeEntries: 10_000}, t0)
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			i++
			a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			m.Strike(a, reason.ConnRate, t0)
		}
	})
	// Strikes creating bans, saved in batches by the background writer;
	// Close (the final flush) is timed too, so ns/op is the full cost of a
	// ban including its share of bbolt writes and fsyncs.
	b.Run("ban-storm-bbolt", func(b *testing.B) {
		m := mustOpen(b, b.TempDir()+"/state.db", Config{MaxRetry: 1}, t0)
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			i++
			a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			m.Strike(a, reason.ConnRate, t0)
		}
		if err := m.Close(); err != nil {
			b.Fatal(err)
		}
	})
}
