package tokens

import (
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkRedeemDuringSweep fills a store with 1,000,000 tokens, half of
// them expired, and sweeps it while another goroutine redeems a live token
// in a tight loop, as the loops do. It reports how long the sweep took, the
// worst latency of a Redeem during it and how many Redeems took over 1 ms:
// a sweep that holds a lock over the whole table shows up as a Redeem
// stalled for about the sweep's duration. On a busy machine the worst
// latency also includes the redeeming goroutine being descheduled;
// sweep-cpu-µs is the CPU time the sweeping thread spent in Sweep (the
// lock hold of a store-wide lock, without the scheduler's delays), and
// BenchmarkSweepShardHold measures the lock holds themselves.
//
//	go test -run='^$' -bench=RedeemDuringSweep -benchtime=3x ./policy/tokens/
//
// One iteration takes seconds (the refill of 500,000 tokens is not timed).
func BenchmarkRedeemDuringSweep(b *testing.B) {
	const n = 1_000_000
	s := NewStore(Options{MaxEntries: n, MaxTTL: time.Hour})
	live, _, err := s.Mint("reader", nil, time.Hour, t0)
	if err != nil {
		b.Fatal(err)
	}
	for i := 1; i < n/2; i++ {
		if _, _, err := s.Mint("u", nil, time.Hour, t0); err != nil {
			b.Fatal(err)
		}
	}
	p := Presenter{Conn: 1, UserID: "reader"}
	sweepAt := t0.Add(time.Minute)
	if r := s.Redeem(live, p, sweepAt); r.Grant == nil {
		b.Fatalf("live token refused: %v", r.Reason)
	}
	runtime.LockOSThread() // for the thread CPU clock
	defer runtime.UnlockOSThread()
	var worst, sweepTime, sweepCPU time.Duration
	var redeems, slow int
	lat := make([]time.Duration, 0, 4<<20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for s.Len() < n { // the half that expires before the sweep
			if _, _, err := s.Mint("u", nil, time.Second, t0); err != nil {
				b.Fatal(err)
			}
		}
		stop := make(chan struct{})
		started := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			close(started)
			for {
				select {
				case <-stop:
					return
				default:
				}
				t := time.Now()
				s.Redeem(live, p, sweepAt)
				d := time.Since(t)
				redeems++
				lat = append(lat, d)
				worst = max(worst, d)
				if d > time.Millisecond {
					slow++
				}
			}
		}()
		<-started
		b.StartTimer()
		t, c := time.Now(), threadCPU()
		if got := s.Sweep(sweepAt); got != n/2 {
			b.Fatalf("swept %d, want %d", got, n/2)
		}
		sweepTime = max(sweepTime, time.Since(t))
		sweepCPU = max(sweepCPU, threadCPU()-c)
		b.StopTimer()
		close(stop)
		wg.Wait()
		b.StartTimer()
	}
	b.ReportMetric(float64(sweepTime.Microseconds()), "sweep-µs")
	b.ReportMetric(float64(sweepCPU.Microseconds()), "sweep-cpu-µs")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-redeem-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-redeem-µs")
	b.ReportMetric(float64(lat[len(lat)*9999/10000].Nanoseconds())/1e3, "p99.99-redeem-µs")
	b.ReportMetric(float64(worst.Microseconds()), "max-redeem-µs")
	b.ReportMetric(float64(slow)/float64(b.N), "redeems-over-1ms/sweep")
	b.ReportMetric(float64(redeems)/float64(b.N), "redeems/sweep")
}

// threadCPU is the CPU time the calling thread has used.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return time.Duration(ts.Nano())
}
