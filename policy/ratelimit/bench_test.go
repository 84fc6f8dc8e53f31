package ratelimit

import (
	"sync/atomic"
	"testing"
	"time"
)

func benchTable(b *testing.B) *Table {
	return newTable(b, Config{ConnRate: Rate{PerSecond: 1e9, Burst: 1 << 20}, HandshakeFailRate: DefaultHandshakeFailRate})
}

// BenchmarkAdmitRelease is the accept path of a known key in one call.
func BenchmarkAdmitRelease(b *testing.B) {
	tb := benchTable(b)
	p := v4(1)
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Microsecond)
		if tb.Admit(p, now) != Allow {
			b.Fatal("refused")
		}
		tb.Release(p)
	}
}

// BenchmarkAdmitReleaseParallel spreads known keys over all goroutines.
func BenchmarkAdmitReleaseParallel(b *testing.B) {
	tb := benchTable(b)
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		base := int(next.Add(1)) * 1000
		now := t0
		i := 0
		for pb.Next() {
			i++
			now = now.Add(time.Microsecond)
			p := v4(base + i%1000)
			if tb.Admit(p, now) == Allow {
				tb.Release(p)
			}
		}
	})
}

// BenchmarkAdmitNewKeyBelowCap inserts a new key each time into a
// table with room.
func BenchmarkAdmitNewKeyBelowCap(b *testing.B) {
	tb := newTable(b, Config{ConnRate: DefaultConnRate, MaxEntries: 1 << 30})
	now := t0
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		now = now.Add(time.Microsecond)
		attempt(tb, v6(i), now)
	}
}

// BenchmarkAdmitNewKeyFull is an address-spraying attacker: every key
// is new and evicts the least recently used one of a full table.
func BenchmarkAdmitNewKeyFull(b *testing.B) {
	tb := newTable(b, Config{ConnRate: DefaultConnRate, HandshakeFailRate: DefaultHandshakeFailRate})
	now := t0
	for i := range DefaultMaxEntries {
		attempt(tb, v6(-i-1), now)
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		now = now.Add(time.Microsecond)
		attempt(tb, v6(i), now)
	}
}

// BenchmarkConnBucketAllow is one message under the per-connection rate.
func BenchmarkConnBucketAllow(b *testing.B) {
	r := Rate{PerSecond: 1e9, Burst: 1 << 20}
	var c ConnBucket
	var since time.Duration
	b.ReportAllocs()
	for b.Loop() {
		since += time.Microsecond
		c.Allow(r, since)
	}
}
