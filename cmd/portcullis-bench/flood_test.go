package main

import (
	"net/netip"
	"testing"
	"time"
)

func TestSpreadAddr(t *testing.T) {
	p := netip.MustParsePrefix(floodPrefix)
	seen := map[netip.Addr]bool{}
	for i := 0; i < 2*floodAddrsPerProc; i++ {
		a := spreadAddr(p, i)
		if !p.Contains(a) {
			t.Fatalf("%d: %s outside %s", i, a, p)
		}
		if b := a.As4(); b[3] == 0 || b[3] == 255 {
			t.Fatalf("%d: %s ends in .0 or .255", i, a)
		}
		if seen[a] {
			t.Fatalf("%d: %s repeated", i, a)
		}
		seen[a] = true
	}
	if a := spreadAddr(p, 0); a != netip.MustParseAddr("127.200.0.1") {
		t.Fatalf("first %s", a)
	}
	if a := spreadAddr(p, 254); a != netip.MustParseAddr("127.200.1.1") {
		t.Fatalf("255th %s", a)
	}
	// Wraps around inside the prefix: 256 blocks of 254 hosts.
	if a := spreadAddr(p, 256*254); a != netip.MustParseAddr("127.200.0.1") {
		t.Fatalf("wrapped %s", a)
	}
	small := netip.MustParsePrefix("10.0.0.8/30")
	if a, b, c := spreadAddr(small, 0), spreadAddr(small, 1), spreadAddr(small, 2); a.String() != "10.0.0.9" || b.String() != "10.0.0.10" || c != a {
		t.Fatalf("/30: %s %s %s", a, b, c)
	}
}

func TestPacer(t *testing.T) {
	p := pacer{rate: 5000, maxBacklog: 250}
	// On time: 5 per millisecond.
	for ms := 1; ms <= 1000; ms++ {
		n := p.due(time.Duration(ms) * time.Millisecond)
		p.issued += n
	}
	if p.issued != 5000 || p.skipped != 0 {
		t.Fatalf("issued %d skipped %d, want 5000 and 0", p.issued, p.skipped)
	}
	// The dialers stall for a second: only 50 ms worth is fired late.
	if n := p.due(2 * time.Second); n != 250 || p.skipped != 4750 {
		t.Fatalf("after a stall: due %d skipped %d", n, p.skipped)
	}
	p.issued += 250
	if n := p.due(2*time.Second + time.Millisecond); n != 5 {
		t.Fatalf("back on pace: due %d", n)
	}
}

func TestReservoir(t *testing.T) {
	r := newReservoir(100, 1)
	for i := 0; i < 50; i++ {
		r.add(float64(i))
	}
	if len(r.xs) != 50 || r.xs[49] != 49 {
		t.Fatal("below capacity every value is kept")
	}
	for i := 50; i < 100000; i++ {
		r.add(float64(i))
	}
	if len(r.xs) != 100 || r.seen != 100000 {
		t.Fatalf("len %d seen %d", len(r.xs), r.seen)
	}
	// A uniform sample of 0…99999 has about half its values above 50000;
	// keeping the first 100 would have none.
	above := 0
	for _, x := range r.xs {
		if x >= 50000 {
			above++
		}
	}
	if above < 25 || above > 75 {
		t.Fatalf("%d of 100 samples in the upper half", above)
	}
	r.reset()
	if len(r.xs) != 0 || r.seen != 0 {
		t.Fatal("reset")
	}
}
