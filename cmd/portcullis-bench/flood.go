package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// floodPrefix is where the flood comes from: banned through the admin API
// before the flood starts, so every connection from it is reset at accept.
const floodPrefix = "127.200.0.0/16"

// floodAddrsPerProc is how many source addresses one flooder spreads its
// connections over (its own slice of floodPrefix).
const floodAddrsPerProc = 4096

// floodJob is a flooder's part of a job.
type floodJob struct {
	Target   string  `json:"target"`     // host:port of the WebSocket listener
	Prefix   string  `json:"prefix"`     // source addresses come from here
	First    int     `json:"first"`      // index of the first source address
	Addrs    int     `json:"addrs"`      // source addresses used
	Rate     float64 `json:"rate"`       // connection attempts per second
	MaxRunMS int64   `json:"max_run_ms"` // stop on its own after this long
}

// floodCounts are a flooder's cumulative counters.
type floodCounts struct {
	Attempts  int64 `json:"attempts"`  // dials started
	Connected int64 `json:"connected"` // TCP handshake completed
	Reset     int64 `json:"reset"`     // then reset (or closed) by the server before any byte: refused
	Open      int64 `json:"open"`      // neither reset nor closed within the read deadline, or got bytes
	Dropped   int64 `json:"dropped"`   // no answer to the SYN within the dial timeout: dropped in the kernel
	DialErr   int64 `json:"dial_err"`  // connect failed otherwise
	Skipped   int64 `json:"skipped"`   // attempts the pacer dropped because the dialers lagged
	Sockets   int64 `json:"sockets"`   // most sockets open at once
	ElapsedMS int64 `json:"elapsed_ms"`
}

// spreadAddr returns the i-th usable host address of prefix p (IPv4),
// counting only host addresses whose last octet is 1–254, so no address
// looks like a network or broadcast address. It wraps around inside p.
func spreadAddr(p netip.Prefix, i int) netip.Addr {
	base := p.Masked().Addr().As4()
	hostBits := 32 - p.Bits()
	blocks := 1 << max(hostBits-8, 0) // /24 blocks inside p
	per := 254
	if hostBits < 8 {
		per = (1 << hostBits) - 2 // a small prefix: skip its first and last address
	}
	if per <= 0 {
		return p.Addr()
	}
	i %= blocks * per
	blk, host := i/per, i%per+1
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	if hostBits >= 8 {
		v += uint32(blk)<<8 + uint32(host)
	} else {
		v += uint32(host)
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// pacer releases attempts at a steady rate. When the dialers fall behind
// by more than maxBacklog attempts, the excess is dropped (and counted)
// instead of being fired later as a burst.
type pacer struct {
	rate       float64
	maxBacklog int64
	issued     int64
	skipped    int64
}

// due returns how many more attempts to release elapsed after the start.
func (p *pacer) due(elapsed time.Duration) int64 {
	want := int64(p.rate * elapsed.Seconds())
	if behind := want - p.issued; behind > p.maxBacklog {
		p.skipped += behind - p.maxBacklog
		p.issued = want - p.maxBacklog
	}
	return want - p.issued
}

// runFlood opens connections from j.Flood.Prefix at j.Flood.Rate until the
// parent says "stop" (or closes stdin). Every connection is expected to be
// reset by the server before it sends anything. "report" prints the
// counters so far.
func runFlood(j *job, rd *bufio.Reader, enc *json.Encoder) error {
	f := j.Flood
	if f == nil {
		return errors.New("flood job without flood settings")
	}
	prefix, err := netip.ParsePrefix(f.Prefix)
	if err != nil || !prefix.Addr().Is4() {
		return fmt.Errorf("flood prefix %q: IPv4 CIDR required", f.Prefix)
	}
	var c struct {
		attempts, connected, reset, open, dropped, dialErr, sockets, maxSockets atomic.Int64
	}
	var firstErr atomic.Value
	start := time.Now()
	jobs := make(chan int64, j.Parallel)
	stop := make(chan struct{})
	var skipped atomic.Int64
	go func() {
		defer close(jobs)
		p := pacer{rate: f.Rate, maxBacklog: int64(f.Rate / 20)} // 50 ms of attempts
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		limit := time.Duration(f.MaxRunMS) * time.Millisecond
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			el := time.Since(start)
			if limit > 0 && el > limit {
				return
			}
			for n := p.due(el); n > 0; n-- {
				select {
				case jobs <- p.issued:
					p.issued++
				case <-stop:
					return
				}
			}
			skipped.Store(p.skipped)
		}
	}()
	var wg sync.WaitGroup
	for g := 0; g < j.Parallel; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1)
			for i := range jobs {
				src := spreadAddr(prefix, f.First+int(i%int64(f.Addrs)))
				// A short timeout: a SYN the gateway drops in the kernel gets
				// no answer at all, and the flooder must not pile up sockets.
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: dropTimeout, KeepAlive: -1}
				c.attempts.Add(1)
				n := c.sockets.Add(1)
				for {
					m := c.maxSockets.Load()
					if n <= m || c.maxSockets.CompareAndSwap(m, n) {
						break
					}
				}
				conn, err := d.Dial("tcp", f.Target)
				if err != nil {
					c.sockets.Add(-1)
					if isReset(err) {
						// Reset while the dial was still completing.
						c.connected.Add(1)
						c.reset.Add(1)
						continue
					}
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						c.dropped.Add(1)
						continue
					}
					c.dialErr.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				c.connected.Add(1)
				_ = conn.SetReadDeadline(time.Now().Add(time.Second))
				k, err := conn.Read(buf)
				switch {
				case k == 0 && (isReset(err) || errors.Is(err, io.EOF)):
					c.reset.Add(1)
				default:
					c.open.Add(1)
					if err != nil {
						firstErr.CompareAndSwap(nil, "not refused: "+err.Error())
					} else {
						firstErr.CompareAndSwap(nil, "not refused: the server sent data")
					}
				}
				conn.Close()
				c.sockets.Add(-1)
			}
		}()
	}
	snapshot := func() report {
		r := report{Flood: &floodCounts{
			Attempts: c.attempts.Load(), Connected: c.connected.Load(), Reset: c.reset.Load(), Open: c.open.Load(),
			Dropped: c.dropped.Load(), DialErr: c.dialErr.Load(), Skipped: skipped.Load(), Sockets: c.maxSockets.Load(),
			ElapsedMS: time.Since(start).Milliseconds(),
		}}
		if e, ok := firstErr.Load().(string); ok {
			r.FirstErr = e
		}
		return r
	}
	for {
		cmd, err := rd.ReadString('\n')
		if err != nil || strings.TrimSpace(cmd) == "stop" {
			break
		}
		if strings.TrimSpace(cmd) == "report" {
			_ = enc.Encode(snapshot())
		}
	}
	close(stop)
	wg.Wait()
	return enc.Encode(snapshot())
}

// dropTimeout is how long a flooder waits for a SYN to be answered before
// it counts the attempt as dropped in the kernel; floodDialers dials at
// once per flooder process keep ≥ 5,000 attempts/s going even then.
const (
	dropTimeout  = 200 * time.Millisecond
	floodDialers = 1024
)

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// flooders are the flooding child processes.
type flooders []*workerProc

// startFlooders starts n flooders sharing rate, each spreading its
// connections over its own addrs addresses of floodPrefix.
func startFlooders(wsURL string, n int, rate float64, addrs int, maxRun time.Duration) (flooders, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var fs flooders
	for w := 0; w < n; w++ {
		cmd := exec.Command(exe, "worker")
		cmd.Stderr = os.Stderr
		in, _ := cmd.StdinPipe()
		outp, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			fs.stop()
			return nil, fmt.Errorf("start flooder: %w", err)
		}
		sc := bufio.NewScanner(outp)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		fs = append(fs, &workerProc{cmd: cmd, in: in, out: sc})
		j := job{Mode: "flood", Parallel: floodDialers, Flood: &floodJob{Target: u.Host, Prefix: floodPrefix,
			First: w * addrs, Addrs: addrs, Rate: rate / float64(n), MaxRunMS: maxRun.Milliseconds()}}
		b, _ := json.Marshal(j)
		if _, err := in.Write(append(b, '\n')); err != nil {
			fs.stop()
			return nil, fmt.Errorf("send flood job: %w", err)
		}
	}
	return fs, nil
}

// counts sums the flooders' counters; with final set it stops them first.
func (fs flooders) counts(final bool) (floodCounts, string, error) {
	var sum floodCounts
	var firstErr string
	cmd := "report"
	if final {
		cmd = "stop"
	}
	for _, w := range fs {
		fmt.Fprintln(w.in, cmd)
	}
	for _, w := range fs {
		r, err := w.read()
		if err != nil {
			return sum, firstErr, err
		}
		if r.Flood == nil {
			return sum, firstErr, errors.New("flooder sent no counters")
		}
		f := r.Flood
		sum.Attempts += f.Attempts
		sum.Connected += f.Connected
		sum.Reset += f.Reset
		sum.Open += f.Open
		sum.Dropped += f.Dropped
		sum.DialErr += f.DialErr
		sum.Skipped += f.Skipped
		sum.Sockets += f.Sockets
		sum.ElapsedMS = max(sum.ElapsedMS, f.ElapsedMS)
		if firstErr == "" {
			firstErr = r.FirstErr
		}
	}
	return sum, firstErr, nil
}

func (fs flooders) stop() {
	stopWorkers(fs)
}

func (c floodCounts) sub(d floodCounts) floodCounts {
	return floodCounts{Attempts: c.Attempts - d.Attempts, Connected: c.Connected - d.Connected, Reset: c.Reset - d.Reset,
		Open: c.Open - d.Open, Dropped: c.Dropped - d.Dropped, DialErr: c.DialErr - d.DialErr, Skipped: c.Skipped - d.Skipped, Sockets: c.Sockets,
		ElapsedMS: c.ElapsedMS - d.ElapsedMS}
}

// ban bans prefix through the admin API.
func (g *gateway) ban(prefix string, d time.Duration, why string) error {
	return g.post("/v1/bans", map[string]any{"prefix": prefix, "for": d.String(), "reason": why}, nil)
}

// phase is one publishing phase's outcome.
type phase struct {
	sent      int
	expected  int64
	delivered int64
	lat       []float64   // sorted, µs
	nodeLat   [][]float64 // lat by the node the subscribers are on (workerProc.node), each sorted, µs
	calls     []float64   // the publish calls' round trips (POST /v1/publish answered), sorted, µs
	elapsed   time.Duration
}

func (p phase) deliveredPct() float64 {
	return 100 * float64(p.delivered) / float64(max(p.expected, 1))
}

// resetWorkers starts a new measuring phase in every hold worker.
func resetWorkers(ws []*workerProc) error {
	for _, w := range ws {
		fmt.Fprintln(w.in, "reset")
	}
	for _, w := range ws {
		if _, err := w.read(); err != nil {
			return err
		}
	}
	return nil
}

// publishPhase publishes count messages at rate to topic and collects what
// the ready subscribers report, waiting up to 30 s for every delivery.
func publishPhase(t target, ws []*workerProc, ready int, topic string, rate float64, count int) (phase, error) {
	var p phase
	start := time.Now()
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	for i := 0; i < count; i++ {
		<-tick.C
		data := fmt.Sprintf(`{"seq":%d,"t":%d}`, i, time.Now().UnixNano())
		t0 := time.Now()
		if err := t.publish(topic, json.RawMessage(data)); err != nil {
			tick.Stop()
			return p, err
		}
		p.calls = append(p.calls, float64(time.Since(t0).Microseconds()))
		p.sent++
		progress("published %d/%d", p.sent, count)
	}
	tick.Stop()
	p.expected = int64(p.sent) * int64(ready)
	deadline := time.Now().Add(30 * time.Second)
	for {
		p.delivered, p.lat, p.nodeLat = 0, p.lat[:0], p.nodeLat[:0]
		for _, w := range ws {
			fmt.Fprintln(w.in, "report")
			rep, err := w.read()
			if err != nil {
				return p, err
			}
			p.delivered += rep.Delivered
			p.lat = append(p.lat, rep.Latencies...)
			for len(p.nodeLat) <= w.node {
				p.nodeLat = append(p.nodeLat, nil)
			}
			p.nodeLat[w.node] = append(p.nodeLat[w.node], rep.Latencies...)
		}
		if p.delivered >= p.expected || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	p.elapsed = time.Since(start)
	fmt.Fprintln(os.Stderr)
	sortFloats(p.lat)
	sortFloats(p.calls)
	for _, l := range p.nodeLat {
		sortFloats(l)
	}
	return p, nil
}

// floodSettings are the flood bench's flags.
type floodSettings struct {
	subs     int
	rate     float64 // publications per second
	count    int
	flood    float64 // connection attempts per second
	window   time.Duration
	flooders int
	addrs    int // source addresses per flooder
}

// floodScenario measures what a flood of banned connections costs: server
// CPU per refused connection, and the publish→receive p99 of subscribers
// under the flood against a baseline in the same run.
func floodScenario(s floodSettings) func(target) (result, error) {
	return func(t target) (result, error) {
		var r result
		g, ok := t.(*gateway)
		if !ok {
			return r, errors.New("flood: only Portcullis has a ban API")
		}
		ws, ready, err := connectAll(t, s.subs, "flood", 0)
		if err != nil {
			return r, err
		}
		defer stopWorkers(ws)
		time.Sleep(2 * time.Second)

		// (b) Baseline.
		fmt.Fprintln(os.Stderr, "baseline: publishing without a flood")
		if err := resetWorkers(ws); err != nil {
			return r, err
		}
		base, err := publishPhase(t, ws, ready, "flood", s.rate, s.count)
		if err != nil {
			return r, err
		}

		// Idle server CPU over a short window, to show what the flood adds.
		idleWin := 2 * time.Second
		_, ci0, _ := procStat(t.pid())
		time.Sleep(idleWin)
		_, ci1, _ := procStat(t.pid())
		idle := ci1.sub(ci0)

		// (c) Ban the flood prefix.
		if err := g.ban(floodPrefix, time.Hour, "bench"); err != nil {
			return r, fmt.Errorf("ban %s: %w", floodPrefix, err)
		}
		rss0, _, _ := procStat(t.pid())
		heap0 := g.stats().HeapLiveBytes

		// (d) Flood-only window. The flooders run through (e) too, and
		// stop on their own if this process dies.
		publishFor := time.Duration(float64(s.count) / s.rate * float64(time.Second))
		stPre := g.stats()
		fs, err := startFlooders(g.wsURL, s.flooders, s.flood, s.addrs, s.window+publishFor+40*time.Second)
		if err != nil {
			return r, err
		}
		defer fs.stop()
		progress("flood: %.0f attempts/s from %d addresses of %s in %d process(es), warming up…", s.flood, s.flooders*s.addrs, floodPrefix, s.flooders)
		time.Sleep(500 * time.Millisecond)
		f0, _, err := fs.counts(false)
		if err != nil {
			return r, err
		}
		st0 := g.stats()
		_, c0, _ := procStat(t.pid())
		w0 := time.Now()
		progress("flood-only window: %s…", s.window)
		time.Sleep(s.window)
		f1, _, err := fs.counts(false)
		if err != nil {
			return r, err
		}
		st1 := g.stats()
		_, c1, _ := procStat(t.pid())
		win := time.Since(w0)
		fmt.Fprintln(os.Stderr)

		// (e) Publish again while the flood goes on.
		fmt.Fprintln(os.Stderr, "under flood: publishing")
		if err := resetWorkers(ws); err != nil {
			return r, err
		}
		f2, _, err := fs.counts(false)
		if err != nil {
			return r, err
		}
		under, err := publishPhase(t, ws, ready, "flood", s.rate, s.count)
		if err != nil {
			return r, err
		}
		f3, firstErr, err := fs.counts(true)
		if err != nil {
			return r, err
		}
		st3 := g.stats()
		time.Sleep(time.Second)
		rss1, _, _ := procStat(t.pid())
		heap1 := g.stats().HeapLiveBytes
		if firstErr != "" {
			fmt.Fprintf(os.Stderr, "flooder: first unexpected outcome: %s\n", firstErr)
		}

		fw := f1.sub(f0)
		// Refused attempts as the flooder saw them: reset at accept, or
		// dropped in the kernel once bans.kernel_drop_rate engaged.
		refused := fw.Reset + fw.Dropped
		atAccept := int64(st1.Rejected - st0.Rejected)
		d := c1.sub(c0)
		per := func(ticks int64) float64 { return ticksToMicros(ticks) / float64(max(refused, 1)) }
		idleTicks := float64(idle.total()) * win.Seconds() / idleWin.Seconds()

		r.set("subscribers", "n", float64(ready))
		r.set("baseline delivered", "%", base.deliveredPct())
		r.set("baseline publish→receive p50", "ms", percentile(base.lat, 50)/1000)
		r.set("baseline publish→receive p99", "ms", percentile(base.lat, 99)/1000)
		r.set("baseline publish→receive max", "ms", percentile(base.lat, 100)/1000)
		r.set("flood-only window", "s", win.Seconds())
		r.set("flood attempts per second", "1/s", float64(fw.Attempts)/win.Seconds())
		r.set("  reset by the server (client view)", "%", 100*float64(fw.Reset)/float64(max(fw.Attempts, 1)))
		r.set("  dropped in the kernel, no answer (client view)", "%", 100*float64(fw.Dropped)/float64(max(fw.Attempts, 1)))
		r.set("  not refused / dial errors", "n", float64(fw.Open+fw.DialErr))
		r.set("  dropped by the pacer (dialers lagged)", "n", float64(fw.Skipped))
		r.set("  most flooder sockets open at once", "n", float64(f1.Sockets))
		r.set("refused at accept per second (server view)", "1/s", float64(atAccept)/win.Seconds())
		r.set("server CPU per refused connection", "µs", per(d.total()))
		r.set("  of which user space", "µs", per(d.user))
		r.set("  of which in the kernel", "µs", per(d.sys))
		r.set("  less idle server CPU", "µs", (ticksToMicros(d.total())-idleTicks*10000)/float64(max(refused, 1)))
		r.set("server CPU during the flood", "% core", 100*ticksToMicros(d.total())/1e6/win.Seconds())
		r.set("server CPU idle, before the flood", "% core", 100*ticksToMicros(idle.total())/1e6/idleWin.Seconds())
		fp := f3.sub(f2)
		r.set("under flood: attempts per second", "1/s", float64(fp.Attempts)/(float64(max(fp.ElapsedMS, 1))/1000))
		r.set("under flood: delivered", "%", under.deliveredPct())
		r.set("under flood: publish→receive p50", "ms", percentile(under.lat, 50)/1000)
		r.set("under flood: publish→receive p99", "ms", percentile(under.lat, 99)/1000)
		r.set("under flood: publish→receive max", "ms", percentile(under.lat, 100)/1000)
		r.set("p99 ratio flood/baseline", "x", percentile(under.lat, 99)/max(percentile(base.lat, 99), 1e-9))
		r.set("flood source addresses", "n", float64(s.flooders*s.addrs))
		r.set("flood attempts in all", "n", float64(f3.Attempts))
		r.set("refused at accept in all", "n", float64(st3.Rejected-stPre.Rejected))
		r.set("server RSS before the flood", "KiB", float64(rss0))
		r.set("server RSS after the flood", "KiB", float64(rss1))
		r.set("server Go heap live before the flood", "KiB", float64(heap0)/1024)
		r.set("server Go heap live after the flood", "KiB", float64(heap1)/1024)
		return r, nil
	}
}

// floodBars prints the team's bars against a flood result.
func floodBars(r result) {
	cpu := r.vals["server CPU per refused connection"]
	rate := r.vals["flood attempts per second"]
	ratio := r.vals["p99 ratio flood/baseline"]
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "FAIL"
	}
	fmt.Printf("\n  bar: server CPU per refused connection ≤ 10 µs: %.2f µs — %s\n", cpu, verdict(cpu <= 10))
	// The pacer aims at exactly --flood; 1% below counts as on target
	// (timer and sampling jitter of the window).
	fmt.Printf("  bar: p99 under ≥ 5,000 attempts/s within 2× baseline: %.0f attempts/s (≥ 4,950 counts), %.2f× — %s\n",
		rate, ratio, verdict(rate >= 0.99*5000 && ratio <= 2))
}
