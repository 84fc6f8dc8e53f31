package tokens

import (
	"runtime"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"
)

func TestShardCount(t *testing.T) {
	for _, c := range []struct{ max, want int }{
		{1, minShards},
		{minShards * shardTarget, minShards},
		{minShards*shardTarget + 1, 2 * minShards},
		{1_000_000, 2048},
		{1 << 40, maxShards},
	} {
		if got := shardCount(c.max); got != c.want {
			t.Errorf("shardCount(%d) = %d, want %d", c.max, got, c.want)
		}
	}
}

// shardLens returns the number of entries in each shard.
func shardLens(s *Store) []int {
	lens := make([]int, len(s.shards))
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		lens[i] = len(sh.entries)
		sh.mu.Unlock()
	}
	return lens
}

// A full store spreads its tokens so that no shard — the most a sweep
// walks under one lock — holds more than twice shardTarget entries.
func TestFullStoreShardsStayBounded(t *testing.T) {
	const n = 256 * shardTarget
	s := NewStore(Options{MaxEntries: n})
	if len(s.shards) != 256 {
		t.Fatalf("%d shards for %d entries, want 256", len(s.shards), n)
	}
	for s.Len() < n {
		if _, _, err := s.Mint("u", nil, time.Second, t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Mint("u", nil, time.Second, t0); err != ErrFull {
		t.Fatalf("mint into a full store of live tokens: %v, want ErrFull", err)
	}
	total, most := 0, 0
	for _, l := range shardLens(s) {
		total += l
		most = max(most, l)
	}
	if total != n {
		t.Fatalf("shards hold %d tokens, Len says %d", total, n)
	}
	if most > 2*shardTarget {
		t.Fatalf("a shard holds %d tokens, want ≤ %d", most, 2*shardTarget)
	}
	// A full store of expired tokens: Mint sweeps them all and succeeds.
	if _, _, err := s.Mint("u", nil, time.Second, t0.Add(2*time.Second)); err != nil {
		t.Fatalf("mint into a full store of expired tokens: %v", err)
	}
	if s.Len() != 1 {
		t.Fatalf("len %d after the sweep, want 1", s.Len())
	}
}

// Minting, redeeming (which drops expired tokens) and sweeping at the same
// time keep Len equal to what the shards hold, and every token minted live
// is redeemed exactly once.
func TestSweepConcurrentWithMintAndRedeem(t *testing.T) {
	const workers, perWorker = 4, 2000
	s := NewStore(Options{MaxEntries: workers * perWorker * 2})
	later := t0.Add(10 * time.Second)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var sweeper sync.WaitGroup
	sweeper.Add(1)
	go func() {
		defer sweeper.Done()
		for {
			select {
			case <-stop:
				return
			default:
				s.Sweep(later)
			}
		}
	}()
	errs := make(chan string, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				if _, _, err := s.Mint("gone", nil, time.Second, t0); err != nil { // expired at later
					errs <- err.Error()
					return
				}
				tok, _, err := s.Mint("kept", nil, time.Minute, t0)
				if err != nil {
					errs <- err.Error()
					return
				}
				conn := uint64(w*perWorker + i + 1)
				if g, r := redeemOn(s, tok, conn, later); r != 0 || g == nil {
					errs <- "a live token was refused: " + r.String()
					return
				}
				if _, r := redeemOn(s, tok, conn+1_000_000, later); r == 0 {
					errs <- "a token was redeemed twice"
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	sweeper.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	s.Sweep(later)
	total := 0
	for _, l := range shardLens(s) {
		total += l
	}
	if total != s.Len() || total != workers*perWorker {
		t.Fatalf("shards hold %d, Len %d, want %d live tokens", total, s.Len(), workers*perWorker)
	}
}

// BenchmarkSweepShardHold measures the lock holds of a sweep at 1,000,000
// tokens, half of them expired: each shard.sweep call takes the shard's
// lock once per sweepChunk entries, and every hold is timed, from the
// Lock to the Unlock. It reports the longest hold, the 99th percentile,
// how many holds took over 1 ms, and the whole sweep's duration (what one
// store-wide lock held before the store was sharded). On a machine busier
// than its cores, a thread descheduled in the middle of a hold makes the
// longest one longer; the percentile shows the walk, and the holds are
// also measured in the sweeping thread's CPU time (max-lock-hold-cpu-µs),
// which the guest's scheduler does not inflate.
//
//	go test -run='^$' -bench=SweepShardHold -benchtime=3x ./policy/tokens/
func BenchmarkSweepShardHold(b *testing.B) {
	const n = 1_000_000
	s := NewStore(Options{MaxEntries: n, MaxTTL: time.Hour})
	for s.Len() < n/2 {
		if _, _, err := s.Mint("u", nil, time.Hour, t0); err != nil {
			b.Fatal(err)
		}
	}
	now := t0.Add(time.Minute).UnixNano()
	runtime.LockOSThread() // for the thread CPU clock
	defer runtime.UnlockOSThread()
	var whole time.Duration
	holds := make([]time.Duration, 0, b.N*n/sweepChunk)
	cpus := make([]time.Duration, 0, b.N*n/sweepChunk)
	var t time.Time
	var c time.Duration
	hold := func(locked bool) {
		if locked {
			t, c = time.Now(), threadCPU()
			return
		}
		holds = append(holds, time.Since(t))
		cpus = append(cpus, threadCPU()-c)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for s.Len() < n {
			if _, _, err := s.Mint("u", nil, time.Second, t0); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC() // not during the sweep
		b.StartTimer()
		start := time.Now()
		swept := 0
		for j := range s.shards {
			swept += s.shards[j].sweep(now, hold)
		}
		s.n.Add(int64(-swept))
		whole = max(whole, time.Since(start))
		if swept != n/2 {
			b.Fatalf("swept %d, want %d", swept, n/2)
		}
	}
	slices.Sort(holds)
	slices.Sort(cpus)
	over := len(holds) - sort.Search(len(holds), func(i int) bool { return holds[i] > time.Millisecond })
	b.ReportMetric(float64(holds[len(holds)-1].Microseconds()), "max-lock-hold-µs")
	b.ReportMetric(float64(cpus[len(cpus)-1].Microseconds()), "max-lock-hold-cpu-µs")
	b.ReportMetric(float64(cpus[len(cpus)*999/1000].Microseconds()), "p99.9-lock-hold-cpu-µs")
	b.ReportMetric(float64(holds[len(holds)*99/100].Microseconds()), "p99-lock-hold-µs")
	b.ReportMetric(float64(over)/float64(b.N), "holds-over-1ms/sweep")
	b.ReportMetric(float64(whole.Microseconds()), "sweep-µs")
}
