package app

import (
	"context"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"

	"github.com/portcullis-gw/portcullis/gateway/config"
)

// The Go garbage collector's target (GOGC) follows the allocation rate.
//
// Idle connections are most of the heap and barely change, so a tight
// target (gcIdlePercent) keeps the resident memory near the live heap:
// 0.83 KiB per idle connection against 1.04 KiB at Go's default of 100
// (`portcullis-bench idle`, 15,000 connections). But a burst of set-ups or
// closes allocates fast, and at 20 % the collector runs each time the heap
// grows by a fifth: a close-and-reconnect of 15,000 connections ran 11
// collections, and the gateway spent a fifth less CPU on it at 100 %
// (`portcullis-bench stall`, one server core). So the pacer samples the
// heap every gcSampleEvery: a sample that allocated at a rate that would
// run gcBurstCollections collections a second at the idle target (each
// after gcIdlePercent of the live heap) is a burst, and the target goes to
// gcBurstPercent; once no sample has been a burst for gcCalmFor, it comes
// back to gcIdlePercent and the memory the burst left is given back to the
// kernel at once (debug.FreeOSMemory), so an idle gateway holds what it
// held before the burst. An operator who sets GOGC keeps it: serve paces
// only when GOGC is unset.
const (
	gcIdlePercent  = 20
	gcBurstPercent = 100
	gcSampleEvery  = 250 * time.Millisecond
	gcCalmFor      = 2 * time.Second
	// gcBurstCollections is the rate of collections at the idle target,
	// per second, from which an allocation rate is a burst.
	gcBurstCollections = 2
	// gcMinLive stands for the live heap before the first collection
	// has measured it (the runtime's own minimum heap is 4 MB).
	gcMinLive = 4 << 20
)

// gcSample is one reading of runtime/metrics.
type gcSample struct {
	at     time.Time
	allocs uint64 // bytes allocated since start (/gc/heap/allocs:bytes)
	live   uint64 // live heap as of the last collection (/gc/heap/live:bytes)
}

// gcChange is what a sample asks of the runtime.
type gcChange int

const (
	gcKeep  gcChange = iota // nothing
	gcBurst                 // set gcBurstPercent
	gcCalm                  // set gcIdlePercent and give the burst's memory back
)

// gcPace decides the target from successive samples.
type gcPace struct {
	started  bool
	burst    bool
	prev     gcSample  // the previous sample
	lastBusy time.Time // the latest sample that was a burst
}

// next takes sample s and returns the change it calls for.
func (p *gcPace) next(s gcSample) gcChange {
	if !p.started {
		p.started, p.prev = true, s
		return gcKeep
	}
	// A late tick (the ticker drops ticks its reader missed) covers a
	// longer stretch: the rate is what counts, so the bytes are scaled to
	// one gcSampleEvery.
	allocated := float64(s.allocs - p.prev.allocs)
	if elapsed := s.at.Sub(p.prev.at); elapsed > gcSampleEvery {
		allocated = allocated * float64(gcSampleEvery) / float64(elapsed)
	}
	p.prev = s
	if allocated >= float64(burstBytes(s.live)) {
		p.lastBusy = s.at
		if !p.burst {
			p.burst = true
			return gcBurst
		}
		return gcKeep
	}
	if p.burst && s.at.Sub(p.lastBusy) >= gcCalmFor {
		p.burst = false
		return gcCalm
	}
	return gcKeep
}

// burstBytes is what one sample must allocate to be a burst, given the
// live heap: gcBurstCollections collections' worth a second at the idle
// target, over gcSampleEvery.
func burstBytes(live uint64) uint64 {
	perCollection := max(live, gcMinLive) * gcIdlePercent / 100
	return perCollection * gcBurstCollections * uint64(gcSampleEvery) / uint64(time.Second)
}

// gcPacer is the component that sets the target: gcIdlePercent at start,
// then what gcPace decides every gcSampleEvery.
type gcPacer struct {
	bg background
}

func (g *gcPacer) name() string { return "gc pacer" }

func (g *gcPacer) start() error {
	debug.SetGCPercent(gcIdlePercent)
	g.bg.spawn(g.run)
	return nil
}

func (g *gcPacer) prepare(*config.Config, keySet) (func() error, error) { return nil, nil }

func (g *gcPacer) close() error {
	g.bg.stop()
	return nil
}

func (g *gcPacer) run(ctx context.Context) {
	t := time.NewTicker(gcSampleEvery)
	defer t.Stop()
	samples := []rtmetrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/live:bytes"}}
	var p gcPace
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			rtmetrics.Read(samples)
			s := gcSample{at: now, allocs: uint64Of(samples[0]), live: uint64Of(samples[1])}
			switch p.next(s) {
			case gcBurst:
				debug.SetGCPercent(gcBurstPercent)
			case gcCalm:
				debug.SetGCPercent(gcIdlePercent)
				debug.FreeOSMemory()
			}
		}
	}
}

// uint64Of is s's value, 0 if the runtime does not know the metric.
func uint64Of(s rtmetrics.Sample) uint64 {
	if s.Value.Kind() != rtmetrics.KindUint64 {
		return 0
	}
	return s.Value.Uint64()
}
