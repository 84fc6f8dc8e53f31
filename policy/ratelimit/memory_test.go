package ratelimit

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

// v6 is the i-th distinct IPv6 /64 under 2001:db8::/32.
func v6(i int) netip.Prefix {
	var a [16]byte
	a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
	binary.BigEndian.PutUint32(a[4:8], uint32(i))
	return netip.PrefixFrom(netip.AddrFrom16(a), 64)
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestMemoryBounded holds the rule "an attacker with a million addresses
// cannot exhaust memory": two million /64s (one million under -race, which
// is ~6x slower per key) at one table of 100,000 keys.
func TestMemoryBounded(t *testing.T) {
	const maxBytes = 64 << 20
	keys := 2_000_000
	if raceEnabled {
		keys = 1_000_000
	}
	if testing.Short() {
		t.Skip("inserts millions of keys")
	}
	start := time.Now()
	before := heapAlloc()
	tb := newTable(t, Config{ConnRate: DefaultConnRate, HandshakeFailRate: DefaultHandshakeFailRate})
	// Spray from as many goroutines as there are cores, as the accept
	// loops would (and to keep the test short under -race).
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			now := t0
			for i := w; i < keys; i += workers {
				now = now.Add(time.Microsecond)
				p := v6(i)
				if v := attempt(tb, p, now); v != Allow {
					t.Errorf("key %d: %v", i, v)
					return
				}
				if i%16 == 0 {
					tb.HandshakeFailed(p, now) // some entries carry both buckets
				}
			}
		})
	}
	wg.Wait()
	after := heapAlloc()
	st := tb.Stats()
	runtime.KeepAlive(tb)
	live := int64(after) - int64(before)
	t.Logf("%d keys in %v: Len %d, evictions %d, live heap %.1f MiB (%.0f B per entry)",
		keys, time.Since(start).Round(time.Millisecond), st.Entries, st.Evictions,
		float64(live)/(1<<20), float64(live)/float64(st.Entries))
	if st.Entries != DefaultMaxEntries || tb.Len() != DefaultMaxEntries {
		t.Errorf("Len %d, want %d", st.Entries, DefaultMaxEntries)
	}
	if want := uint64(keys - DefaultMaxEntries); st.Evictions != want {
		t.Errorf("evictions %d, want %d", st.Evictions, want)
	}
	if live > maxBytes {
		t.Errorf("live heap %d B, want under %d B", live, maxBytes)
	}
}
