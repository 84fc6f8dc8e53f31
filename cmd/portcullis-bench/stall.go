package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The stall bench: while N subscribed connections close all at once and
// then reconnect, how long do the other connections of the server wait?
// Bystander connections (on a topic of their own) ping the server and
// time each pong; the gateway's loop-turn histogram (/v1/stats
// "loop_turns", and the floor server's of the same form) says how long its
// event loops were busy in one go, and the kernel's per-thread schedstat
// how long the server's threads waited for a core meanwhile.

// pingInterval is how often a bystander pings: the next ping leaves
// pingInterval after the previous one, or as soon as its pong is back when
// that took longer (one ping in flight per bystander).
const pingInterval = 10 * time.Millisecond

// pongTimeout bounds the wait for one pong: past it the ping is counted
// missing and the next one leaves.
const pongTimeout = 10 * time.Second

// childAnswerTimeout bounds the wait for a child that answers a command
// at once (the bystanders' report, the floor server's turns): past it the
// run fails with an error that names the child instead of hanging.
const childAnswerTimeout = 30 * time.Second

// rttSamples is how many round trips a bystander worker keeps per phase (a
// uniform sample once there are more; the maximum is kept exactly).
const rttSamples = 1 << 18

// stallSettings are the stall bench's flags.
type stallSettings struct {
	conns      int // connections closed and reopened at once
	bystanders int
	rounds     int // close + reconnect episodes
}

// rttReport is what a bystander worker reports of a phase's pings.
type rttReport struct {
	// Samples are round trips in µs, a uniform sample.
	Samples []float64 `json:"samples_us"`
	// Corrected adds, for each round trip longer than the ping interval,
	// the round trips the pings that would have left meanwhile saw
	// (rtt − interval, rtt − 2·interval, … down to the interval): the
	// correction for coordinated omission, since a bystander does not
	// ping while it waits for a pong.
	Corrected []float64 `json:"corrected_us"`
	MaxUS     float64   `json:"max_us"`
	Pongs     int64     `json:"pongs"`
	Missing   int64     `json:"missing"` // pings without a pong within pongTimeout
}

// rttRecorder collects round trips; safe for concurrent use.
type rttRecorder struct {
	mu        sync.Mutex
	interval  time.Duration
	raw, corr *reservoir
	max       time.Duration
	pongs     int64
	missing   int64
}

func newRTTRecorder(interval time.Duration, samples int, seed int64) *rttRecorder {
	return &rttRecorder{interval: interval, raw: newReservoir(samples, seed), corr: newReservoir(samples, seed+1)}
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// add records one round trip.
func (r *rttRecorder) add(rtt time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pongs++
	r.max = max(r.max, rtt)
	r.raw.add(micros(rtt))
	r.corr.add(micros(rtt))
	for missed := rtt - r.interval; missed >= r.interval; missed -= r.interval {
		r.corr.add(micros(missed))
	}
}

// lost counts a ping whose pong did not come.
func (r *rttRecorder) lost() {
	r.mu.Lock()
	r.missing++
	r.mu.Unlock()
}

// take returns the phase's report and starts a new phase.
func (r *rttRecorder) take() rttReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := rttReport{Samples: append([]float64(nil), r.raw.xs...), Corrected: append([]float64(nil), r.corr.xs...),
		MaxUS: micros(r.max), Pongs: r.pongs, Missing: r.missing}
	r.raw.reset()
	r.corr.reset()
	r.max, r.pongs, r.missing = 0, 0, 0
	return rep
}

// merge adds o's round trips to r's (the samples of both, each already
// uniform within its phase).
func (r *rttReport) merge(o rttReport) {
	r.Samples = append(r.Samples, o.Samples...)
	r.Corrected = append(r.Corrected, o.Corrected...)
	r.MaxUS = max(r.MaxUS, o.MaxUS)
	r.Pongs += o.Pongs
	r.Missing += o.Missing
}

// rttSummary is a phase's round trips in ms.
type rttSummary struct {
	p50, p99, max, p99Corrected float64
	pongs, missing              int64
}

// summarize sorts rep's samples and returns their percentiles in ms.
func summarize(rep rttReport) rttSummary {
	sortFloats(rep.Samples)
	sortFloats(rep.Corrected)
	return rttSummary{
		p50: percentile(rep.Samples, 50) / 1000, p99: percentile(rep.Samples, 99) / 1000,
		max: rep.MaxUS / 1000, p99Corrected: percentile(rep.Corrected, 99) / 1000,
		pongs: rep.Pongs, missing: rep.Missing,
	}
}

// runBystanders connects and subscribes j's bystanders, reports how many
// are ready, then obeys the parent: "start" starts pinging (answered with
// an empty report), "report" reports the round trips since the last
// report (or start) and starts a new phase. Stdin closed ends it.
func runBystanders(j *job, rd *bufio.Reader, enc *json.Encoder) error {
	rec := newRTTRecorder(pingInterval, rttSamples, time.Now().UnixNano())
	var conns []net.Conn
	var failed int
	var firstErr string
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, j.Parallel)
	for i := range j.Tokens {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			c, err := dial(j, i)
			if err == nil {
				if err = subscribe(c, j, i); err != nil {
					c.Close()
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				if firstErr == "" {
					firstErr = err.Error()
				}
				return
			}
			conns = append(conns, c)
		}(i)
	}
	wg.Wait()
	p, err := newPinger(conns, rec, pingInterval, j.Proto == "centrifugo")
	if err != nil {
		for _, c := range conns {
			c.Close()
		}
		_ = enc.Encode(report{Failed: len(j.Tokens), FirstErr: err.Error()})
		return err
	}
	defer p.close()
	go p.run()
	defer p.halt()
	if err := enc.Encode(report{Ready: len(conns), Failed: failed, FirstErr: firstErr}); err != nil {
		return err
	}
	for {
		cmd, err := rd.ReadString('\n')
		if err != nil {
			return nil
		}
		switch strings.TrimSpace(cmd) {
		case "start":
			p.start()
			rec.take()
			_ = enc.Encode(report{})
		case "report":
			rep := rec.take()
			_ = enc.Encode(report{RTT: &rep})
		}
	}
}

// bystanders is the worker process of the bench's bystanders.
type bystanders struct{ w *workerProc }

// startBystanders starts one worker with a bystander connection per token
// and waits until they are subscribed.
func startBystanders(t target, toks []string, topic string) (bystanders, int, error) {
	ws, err := startWorkers(t, "bystand", toks, topic, 32)
	if err != nil {
		stopWorkers(ws)
		return bystanders{}, 0, err
	}
	if len(ws) != 1 {
		stopWorkers(ws)
		return bystanders{}, 0, fmt.Errorf("%d bystanders need %d worker processes: at most %d", len(toks), len(ws), perWorker)
	}
	b := bystanders{ws[0]}
	r, err := b.w.read()
	if err != nil {
		b.stop()
		return b, 0, fmt.Errorf("bystanders: %w", err)
	}
	if r.Failed > 0 {
		fmt.Fprintf(os.Stderr, "\nbystanders: %d failed (first: %s)\n", r.Failed, r.FirstErr)
	}
	return b, r.Ready, nil
}

// command sends cmd and returns the answer's round trips (nil for start).
func (b bystanders) command(cmd string) (*rttReport, error) {
	if _, err := fmt.Fprintln(b.w.in, cmd); err != nil {
		return nil, fmt.Errorf("bystanders %s: %w", cmd, err)
	}
	r, err := b.w.readWithin(childAnswerTimeout)
	if err != nil {
		return nil, fmt.Errorf("bystanders %s: %w", cmd, err)
	}
	if cmd == "report" && r.RTT == nil {
		return nil, errors.New("bystanders sent no round trips")
	}
	return r.RTT, nil
}

func (b bystanders) stop() { stopWorkers([]*workerProc{b.w}) }

// killWorkers ends load-generator processes at once with SIGKILL: the
// kernel closes every socket they hold, as when the clients' network drops
// behind a proxy or a load balancer that closes its side. It reaps them
// once each can be reaped at once (exitedChild): a blocking wait for a
// killed worker, at the bench's priority, was seen to run on the core the
// worker's exiting threads (nice 19, closing 5,000 sockets) needed, for
// minutes, when both were confined to one core.
func killWorkers(ws []*workerProc) {
	for _, w := range ws {
		_ = w.cmd.Process.Kill()
	}
	for _, w := range ws {
		for !exitedChild(w.cmd.Process.Pid) {
			time.Sleep(5 * time.Millisecond)
		}
		_ = w.cmd.Wait()
		w.in.Close()
	}
}

// exitedChild reports whether child pid has ended, without reaping it
// (waitid with WNOHANG and WNOWAIT). An error (no such child) is reported
// as ended: the Wait that follows says what became of it.
func exitedChild(pid int) bool {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return true
		}
		return info.Signo == int32(unix.SIGCHLD)
	}
}

// clientCounter is a server that says how many clients it holds, up to
// a constant: the stall bench compares counts.
type clientCounter interface {
	clients() (int64, error)
}

// clients is the gateway's open connections (/v1/stats "connections").
func (g *gateway) clients() (int64, error) {
	st, err := g.fetchStats()
	return st.Connections, err
}

// clients is the descriptors Centrifugo's process holds open
// (/proc/PID/fd): its /api/info counts clients only as often as it
// refreshes its node information (every few seconds), too seldom to time
// a mass close, while a closed socket leaves the table at once. The stall
// bench only compares this count with an earlier one, so the descriptors
// that are not clients cancel out.
func (c *centrifugo) clients() (int64, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", c.pid()))
	if err != nil {
		return 0, fmt.Errorf("centrifugo descriptors: %w", err)
	}
	return int64(len(fds)), nil
}

// waitClients polls until the server holds at most want clients and
// returns how long that took from since.
func waitClients(cc clientCounter, want int64, since time.Time, limit time.Duration) (time.Duration, error) {
	for {
		n, err := cc.clients()
		if err != nil {
			return 0, err
		}
		if n <= want {
			return time.Since(since), nil
		}
		if time.Since(since) > limit {
			return 0, fmt.Errorf("still %d clients %s after the mass close, want at most %d", n, limit, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stallScenario connects s.bystanders pinging connections and s.conns
// subscribed ones, then s.rounds times closes the s.conns at once (their
// worker processes killed) and reconnects them with fresh tokens minted
// beforehand, and reports the bystanders' round trips over the episode,
// the times of the close and the reconnect, and the gateway's loop turns.
func stallScenario(s stallSettings) func(target) (result, error) {
	return func(t target) (result, error) {
		var r result
		cc, ok := t.(clientCounter)
		if !ok {
			return r, fmt.Errorf("%s does not report its clients", t.name())
		}
		progress("minting %d bystander and %d×%d tokens…", s.bystanders, s.rounds+1, s.conns)
		byToks, err := t.mint(s.bystanders, "bystand")
		if err != nil {
			return r, fmt.Errorf("mint bystander tokens: %w", err)
		}
		batches := make([][]string, s.rounds+1)
		for i := range batches {
			if batches[i], err = t.mint(s.conns, "mass"); err != nil {
				return r, fmt.Errorf("mint tokens: %w", err)
			}
		}
		fmt.Fprintln(os.Stderr)
		by, byReady, err := startBystanders(t, byToks, "bystand")
		if err != nil {
			return r, err
		}
		defer by.stop()
		ws, ready, err := connectNice(t, batches[0], "mass", clientNice)
		defer func() { stopWorkers(ws) }()
		if err != nil {
			return r, err
		}
		time.Sleep(2 * time.Second)
		if _, err := by.command("start"); err != nil {
			return r, err
		}
		time.Sleep(2 * time.Second)
		quietRep, err := by.command("report")
		if err != nil {
			return r, err
		}
		quiet := summarize(*quietRep)
		tr, hasTurns := t.(turnReporter)
		var st0 serverStats
		if hasTurns {
			if st0, err = tr.turnStats(); err != nil {
				return r, err
			}
		}
		before, err := cc.clients()
		if err != nil {
			return r, err
		}
		cpu0, err := cpuOf(t)
		if err != nil {
			return r, err
		}
		waits0, err := waitsOf(t)
		if err != nil {
			return r, err
		}
		var closeTime, reconnectTime time.Duration
		// The episode's round trips, by phase: from the mass close to a
		// second after the server holds none, and from then to a second
		// after the last reconnect.
		var closing, reconnecting rttReport
		var perRound []float64 // each round's p99 over its close and reconnect
		reconnected := 0
		for round := 1; round <= s.rounds; round++ {
			progress("round %d: closing %d connections at once…", round, ready)
			start := time.Now()
			killWorkers(ws)
			ws = nil
			d, err := waitClients(cc, before-int64(ready), start, time.Minute)
			if err != nil {
				return r, err
			}
			closeTime = max(closeTime, d)
			time.Sleep(time.Second)
			rep, err := by.command("report")
			if err != nil {
				return r, err
			}
			closing.merge(*rep)
			var this rttReport
			this.merge(*rep)
			start = time.Now()
			ws, reconnected, err = connectNice(t, batches[round], "mass", clientNice)
			if err != nil {
				return r, err
			}
			reconnectTime = max(reconnectTime, time.Since(start))
			time.Sleep(time.Second)
			if rep, err = by.command("report"); err != nil {
				return r, err
			}
			reconnecting.merge(*rep)
			this.merge(*rep)
			perRound = append(perRound, summarize(this).p99)
		}
		cpu1, err := cpuOf(t)
		if err != nil {
			return r, err
		}
		waits1, err := waitsOf(t)
		if err != nil {
			return r, err
		}
		var epRep rttReport
		epRep.merge(closing)
		epRep.merge(reconnecting)
		ep := summarize(epRep)
		cl, rc := summarize(closing), summarize(reconnecting)
		r.set("connections closed and reopened", "n", float64(ready))
		r.set("bystanders", "n", float64(byReady))
		r.set("mass close: until the server holds none", "ms", float64(closeTime.Microseconds())/1000)
		r.set("reconnect: until all are subscribed", "s", reconnectTime.Seconds())
		r.set("  reconnected", "n", float64(reconnected))
		r.set("  set-ups per second", "1/s", float64(reconnected)/max(reconnectTime.Seconds(), 1e-9))
		r.set("server CPU over the episode", "s", ticksToMicros(cpu1.sub(cpu0).total())/1e6)
		r.set("  its threads runnable, waiting for a core", "s", waits1.since(waits0).Seconds())
		r.set("bystander ping→pong before, p99", "ms", quiet.p99)
		r.set("bystander pongs over the episode", "n", float64(ep.pongs))
		r.set("  missing (none within 10 s)", "n", float64(ep.missing))
		r.set("bystander ping→pong p50", "ms", ep.p50)
		r.set("bystander ping→pong p99", "ms", ep.p99)
		r.set("bystander ping→pong max", "ms", ep.max)
		r.set("  p99 corrected for pings not sent while waiting", "ms", ep.p99Corrected)
		r.set("  p99 while the connections close", "ms", cl.p99)
		r.set("  p99 while they reconnect", "ms", rc.p99)
		if len(perRound) > 1 {
			for i, p99 := range perRound {
				r.set(fmt.Sprintf("  p99 of round %d", i+1), "ms", p99)
			}
		}
		if hasTurns {
			st1, err := tr.turnStats()
			if err != nil {
				return r, err
			}
			if err := setTurnRows(&r, st0, st1); err != nil {
				return r, err
			}
		} else {
			naTurnRows(&r)
		}
		return r, nil
	}
}

// turnReporter is a server that says how long its event loops' turns
// took: the gateway (/v1/stats) and the floor server. Only LoopTurns and
// MaxLoopStall of the stats are read.
type turnReporter interface {
	turnStats() (serverStats, error)
}

// turnStats is the gateway's /v1/stats.
func (g *gateway) turnStats() (serverStats, error) { return g.fetchStats() }

// turnRows are the loop-turn rows of the stall bench, in print order.
var turnRows = []struct{ key, unit string }{
	{"loop turns over the episode", "n"},
	{"  loop turn p50 (bucket bound)", "ms"},
	{"  loop turn p99 (bucket bound)", "ms"},
	{"  longest loop turn (bucket bound)", "ms"},
	{"  loop turns over 20 ms", "n"},
	{"longest loop turn since start", "ms"},
}

func naTurnRows(r *result) {
	for _, row := range turnRows {
		r.na(row.key, row.unit)
	}
}

// setTurnRows sets the loop-turn rows from the gateway's stats before and
// after the episode; a gateway without "loop_turns" gets n/a and, for the
// longest turn since start, its max_loop_stall.
func setTurnRows(r *result, st0, st1 serverStats) error {
	naTurnRows(r)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	h0, ok0, err := parseLoopTurns(st0.LoopTurns)
	if err != nil {
		return err
	}
	h1, ok1, err := parseLoopTurns(st1.LoopTurns)
	if err != nil {
		return err
	}
	if !ok0 || !ok1 {
		if st1.MaxLoopStall != "" {
			d, err := time.ParseDuration(st1.MaxLoopStall)
			if err != nil {
				return fmt.Errorf("max_loop_stall %q: %w", st1.MaxLoopStall, err)
			}
			r.set(turnRows[5].key, turnRows[5].unit, ms(d))
		}
		return nil
	}
	d, err := h1.since(h0)
	if err != nil {
		return err
	}
	bound := func(q float64) float64 {
		b := d.quantile(q)
		if b == infBound {
			b = h1.max // beyond the last bound: the longest turn is the best bound known
		}
		return ms(b)
	}
	r.set(turnRows[0].key, turnRows[0].unit, float64(d.total()))
	r.set(turnRows[1].key, turnRows[1].unit, bound(0.5))
	r.set(turnRows[2].key, turnRows[2].unit, bound(0.99))
	r.set(turnRows[3].key, turnRows[3].unit, bound(1))
	if n, ok := d.over(20 * time.Millisecond); ok {
		r.set(turnRows[4].key, turnRows[4].unit, float64(n))
	}
	r.set(turnRows[5].key, turnRows[5].unit, ms(h1.max))
	return nil
}
