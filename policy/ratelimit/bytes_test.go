package ratelimit

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestInboundHold(t *testing.T) {
	in, err := NewInbound(InboundConfig{HeldPerKey: 100, HeldTotal: 150})
	if err != nil {
		t.Fatal(err)
	}
	a, b := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8::/64")
	if v := in.Hold(a, 60); v != HoldOK {
		t.Fatalf("first hold %v", v)
	}
	if v := in.Hold(a, 41); v != HoldOverKey {
		t.Fatalf("over the per-address cap: %v", v)
	}
	if in.Held(a) != 60 || in.HeldTotal() != 60 {
		t.Fatalf("refused hold was taken: %d / %d", in.Held(a), in.HeldTotal())
	}
	if v := in.Hold(b, 91); v != HoldOverTotal {
		t.Fatalf("over the total: %v", v)
	}
	if v := in.Hold(b, 90); v != HoldOK {
		t.Fatalf("within the total: %v", v)
	}
	in.Release(a, 60)
	in.Hold(b, -90)
	in.Release(b, 5) // more than held: ignored
	if in.HeldTotal() != 0 || in.Held(a) != 0 || in.Held(b) != 0 {
		t.Fatalf("after release: %d", in.HeldTotal())
	}
	if _, err := NewInbound(InboundConfig{HeldPerKey: 10, HeldTotal: 5}); err == nil {
		t.Fatal("total below per-address accepted")
	}
	if _, err := NewInbound(InboundConfig{}); err == nil {
		t.Fatal("zero budget accepted")
	}
}

func TestInboundTake(t *testing.T) {
	in, err := NewInbound(InboundConfig{HeldPerKey: 1, HeldTotal: 1, Rate: Rate{PerSecond: 1000, Burst: 4000}})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParsePrefix("192.0.2.1/32")
	now := time.Unix(1000, 0)
	if !in.Take(a, 4000, now) {
		t.Fatal("burst refused")
	}
	if in.Take(a, 1, now) {
		t.Fatal("over the burst allowed")
	}
	if in.Take(a, 600, now.Add(500*time.Millisecond)) {
		t.Fatal("600 bytes allowed after 500 ms at 1000/s")
	}
	if !in.Take(a, 500, now.Add(500*time.Millisecond)) {
		t.Fatal("500 bytes refused after 500 ms at 1000/s")
	}
	// Another address has its own bucket.
	if !in.Take(netip.MustParsePrefix("192.0.2.2/32"), 4000, now) {
		t.Fatal("second address refused")
	}
	if n := in.Sweep(now.Add(time.Hour)); n != 2 || in.Len() != 0 {
		t.Fatalf("swept %d, %d left", n, in.Len())
	}
	// Steady state allocates nothing.
	in.Take(a, 1, now)
	if n := testing.AllocsPerRun(100, func() { in.Take(a, 1, now) }); n != 0 {
		t.Fatalf("%v allocations per Take", n)
	}
}

// Idle entries are dropped as new addresses arrive, so the table does not
// grow with every address ever seen.
func TestInboundSweepsAsItGrows(t *testing.T) {
	in, _ := NewInbound(InboundConfig{HeldPerKey: 1 << 20, HeldTotal: 1 << 30, Rate: Rate{PerSecond: 1 << 20, Burst: 1 << 20}})
	now := time.Unix(1000, 0)
	for i := 0; i < 200_000; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		in.Take(netip.PrefixFrom(a, 32), 100, now.Add(time.Duration(i)*time.Millisecond))
	}
	if n := in.Len(); n > 64*minSweep*4 {
		t.Fatalf("%d entries for 200,000 addresses each idle after 0.1 ms", n)
	}
}

func TestInboundConcurrent(t *testing.T) {
	in, _ := NewInbound(InboundConfig{HeldPerKey: 1000, HeldTotal: 4000, Rate: Rate{PerSecond: 1e6, Burst: 1e6}})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(g % 3)}), 32)
			for i := 0; i < 2000; i++ {
				if in.Hold(p, 7) == HoldOK {
					in.Release(p, 7)
				}
				in.Take(p, 10, time.Unix(0, int64(i)))
			}
		}()
	}
	wg.Wait()
	if in.HeldTotal() != 0 {
		t.Fatalf("held %d after balanced holds", in.HeldTotal())
	}
}
