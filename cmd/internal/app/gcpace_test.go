package app

import (
	"runtime/debug"
	"testing"
	"time"
)

// The pacer's decisions over a quiet gateway, a burst, the samples while
// it lasts, and the calm after it.
func TestGCPace(t *testing.T) {
	const live = 100 << 20
	burst := burstBytes(live) // 10 MB: 2 collections a second at 20 MB each, over 250 ms
	if burst != 10<<20 {
		t.Fatalf("burstBytes(100 MB) = %d, want 10 MB", burst)
	}
	t0 := time.Unix(1_700_000_000, 0)
	var p gcPace
	allocs := uint64(1 << 30)
	at := t0
	step := func(allocated uint64, want gcChange, what string) {
		t.Helper()
		allocs += allocated
		at = at.Add(gcSampleEvery)
		if got := p.next(gcSample{at: at, allocs: allocs, live: live}); got != want {
			t.Fatalf("%s: change %d, want %d", what, got, want)
		}
	}
	if got := p.next(gcSample{at: at, allocs: allocs, live: live}); got != gcKeep {
		t.Fatalf("first sample: change %d: it only sets the baseline (the bytes allocated before it are no rate)", got)
	}
	step(1<<20, gcKeep, "quiet")
	step(burst-1, gcKeep, "just under a burst's rate")
	step(burst, gcBurst, "a burst's rate")
	step(5*burst, gcKeep, "the burst goes on: already at the burst target")
	for i := 1; i < int(gcCalmFor/gcSampleEvery); i++ {
		step(1<<20, gcKeep, "calm, not yet for gcCalmFor")
	}
	step(1<<20, gcCalm, "calm for gcCalmFor")
	step(1<<20, gcKeep, "calm, already at the idle target")
	step(3*burst, gcBurst, "a second burst")
	step(1<<20, gcKeep, "one calm sample")
	step(2*burst, gcKeep, "busy again before gcCalmFor: the calm starts over")
	for i := 1; i < int(gcCalmFor/gcSampleEvery); i++ {
		step(0, gcKeep, "calm again, not yet for gcCalmFor")
	}
	step(0, gcCalm, "calm again for gcCalmFor")
	// A tick that comes late covers a longer stretch: a burst's bytes over
	// twice the interval are half a burst's rate.
	allocs += 2*burst - 2
	at = at.Add(2 * gcSampleEvery)
	if got := p.next(gcSample{at: at, allocs: allocs, live: live}); got != gcKeep {
		t.Fatalf("just under a burst's bytes over two intervals: change %d, want none", got)
	}
	step(burst, gcBurst, "a burst's rate after the late tick")
}

// Before the first collection has measured the live heap (0), the pacer
// counts gcMinLive: a young gateway's first megabytes are no burst.
func TestGCPaceBeforeFirstCollection(t *testing.T) {
	var p gcPace
	at := time.Unix(1_700_000_000, 0)
	p.next(gcSample{at: at, allocs: 1 << 20})
	burst := burstBytes(gcMinLive)
	if burstBytes(0) != burst || burst == 0 {
		t.Fatalf("burstBytes(0) = %d, burstBytes(gcMinLive) = %d: want the same, not 0", burstBytes(0), burst)
	}
	allocs := uint64(1<<20) + burst - 1
	if got := p.next(gcSample{at: at.Add(gcSampleEvery), allocs: allocs}); got != gcKeep {
		t.Fatalf("change %d under gcMinLive's burst rate, want none", got)
	}
	if got := p.next(gcSample{at: at.Add(2 * gcSampleEvery), allocs: allocs + burst}); got != gcBurst {
		t.Fatalf("change %d at gcMinLive's burst rate, want the burst target", got)
	}
}

// The component sets the idle target when it starts and stops its
// goroutine on close; what it found is restored for the other tests.
func TestGCPacerStartsAtTheIdleTarget(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	g := &gcPacer{}
	if err := g.start(); err != nil {
		t.Fatal(err)
	}
	got := debug.SetGCPercent(100)
	if err := g.close(); err != nil {
		t.Fatal(err)
	}
	if got != gcIdlePercent {
		t.Fatalf("GC target %d after start, want %d", got, gcIdlePercent)
	}
}
