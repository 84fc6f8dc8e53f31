package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// target is a server under test: Portcullis or a peer.
type target interface {
	name() string
	pid() int
	url() string
	protocol() string // wire protocol the workers speak
	mint(n int, topic string) ([]string, error)
	publish(topic string, data json.RawMessage) error
	stats() serverStats // zero where the server does not report it
	stop()
}

func (g *gateway) name() string     { return "portcullis" }
func (g *gateway) pid() int         { return g.cmd.Process.Pid }
func (g *gateway) url() string      { return g.wsURL }
func (g *gateway) protocol() string { return gatewayProto }

// gatewayProto is the protocol workers speak to Portcullis: portcullis
// (native), wamp1 or wamp2 (bench fanout --proto).
var gatewayProto = "portcullis"

func (g *gateway) publish(topic string, data json.RawMessage) error {
	return g.post("/v1/publish", map[string]any{"topic": topic, "data": data}, nil)
}

// result is one scenario's measurements, in print order.
type result struct {
	keys []string
	vals map[string]float64
	unit map[string]string
}

func (r *result) set(key, unit string, v float64) {
	r.na(key, unit)
	r.vals[key] = v
}

// na declares a row that r has no value for: it prints n/a (a server
// that does not report it). A later set gives it its value.
func (r *result) na(key, unit string) {
	if r.vals == nil {
		r.vals, r.unit = map[string]float64{}, map[string]string{}
	}
	if _, ok := r.unit[key]; !ok {
		r.keys = append(r.keys, key)
	}
	r.unit[key] = unit
}

// printResults prints one column per target and the ratio of the first
// to each other: a "ratio" column for two, a "÷name" column for each of
// more. Rows are the first result's, then any the others add; a row a
// result has no value for prints n/a, and has no ratio.
func printResults(title string, names []string, rs []result) {
	fmt.Printf("\n%s\n", title)
	var keys []string
	unit := map[string]string{}
	for _, r := range rs {
		for _, k := range r.keys {
			if _, ok := unit[k]; !ok {
				keys = append(keys, k)
				unit[k] = r.unit[k]
			}
		}
	}
	w := 34
	for _, k := range keys {
		w = max(w, utf8.RuneCountInString(k+" ("+unit[k]+")"))
	}
	fmt.Printf("  %-*s", w, "metric")
	for _, n := range names {
		fmt.Printf(" %14s", n)
	}
	for _, n := range names[min(1, len(names)):] {
		if len(names) == 2 {
			n = "ratio"
		} else {
			n = "÷" + n
		}
		fmt.Printf(" %*s", 10+len(n)-utf8.RuneCountInString(n), n)
	}
	fmt.Println()
	for _, k := range keys {
		label := k + " (" + unit[k] + ")"
		fmt.Printf("  %s%s", label, strings.Repeat(" ", w-utf8.RuneCountInString(label)))
		for _, r := range rs {
			if v, ok := r.vals[k]; ok {
				fmt.Printf(" %14.2f", v)
			} else {
				fmt.Printf(" %14s", "n/a")
			}
		}
		a, okA := rs[0].vals[k]
		for _, r := range rs[min(1, len(rs)):] {
			if b, okB := r.vals[k]; okA && okB && b != 0 {
				fmt.Printf(" %10.3f", a/b)
			} else {
				fmt.Printf(" %10s", "")
			}
		}
		fmt.Println()
	}
}

// starter starts the server (or servers) of one column of a comparison.
type starter func() (target, error)

// columns returns the servers a bench compares: Portcullis, then the peer
// when one is named. With nodes > 1 each column is that many nodes on
// redis (a nodeSet).
func columns(peer, peerBin string, nodes int, redis *redisServer) ([]starter, error) {
	if peer != "" && peer != "centrifugo" {
		return nil, fmt.Errorf("--peer %q: only centrifugo is supported", peer)
	}
	var s []starter
	if nodes > 1 {
		s = append(s, func() (target, error) { return startGatewayNodes(nodes, redis) })
	} else {
		s = append(s, func() (target, error) { return startGateway() })
	}
	switch {
	case peer == "":
	case nodes > 1:
		s = append(s, func() (target, error) { return startCentrifugoNodes(peerBin, nodes, redis) })
	default:
		s = append(s, func() (target, error) { return startCentrifugo(peerBin) })
	}
	return s, nil
}

// compare runs scenario against the server of each column in turn (each
// stopped before the next starts), then prints them side by side.
func compare(title string, starts []starter, scenario func(target) (result, error)) error {
	var names []string
	var rs []result
	for _, start := range starts {
		t, err := start()
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "— %s —\n", t.name())
		r, err := scenario(t)
		t.stop()
		if err != nil {
			return fmt.Errorf("%s: %w", t.name(), err)
		}
		names = append(names, t.name())
		rs = append(rs, r)
	}
	printResults(title, names, rs)
	return nil
}

// workerProc is one load-generator child.
type workerProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	pipe io.ReadCloser // what out reads: the child's stdout
	node int           // index in members(t) of the server its connections go to
}

// startWorkers starts load-generator children for toks. Subscribers are
// spread round robin over the members of t (token i to member i mod n);
// each child connects to one member, so what it reports is that member's.
func startWorkers(t target, mode string, toks []string, topic string, parallel int) ([]*workerProc, error) {
	return startWorkersNice(t, mode, toks, topic, parallel, 0)
}

// clientNice is --client-nice, the nice value of the load-generator
// processes whose connections stand in for clients on other machines: the
// fan-out's subscribers and the write floor's readers, the stall's
// connections that close and reconnect. A server does not share its cores
// with its clients; at the lowest priority they get only the CPU the
// servers (and the stall's pinger) leave, so that what is measured is the
// server's work rather than how often a reader woken by the server takes
// the server's core from it. Every server of a run, and the floors, are
// measured so.
var clientNice = defaultClientNice

// defaultClientNice is --client-nice's default. Each run of the command
// line sets clientNice from it afresh (the tests run several in one
// process).
const defaultClientNice = 19

// workerCommand is a load-generator child of exe at nice value nice (0:
// the bench's own).
func workerCommand(exe string, nice int) *exec.Cmd {
	if nice == 0 {
		return exec.Command(exe, "worker")
	}
	// Set before the exec, so every thread of the worker has it.
	return exec.Command("nice", "-n", strconv.Itoa(nice), exe, "worker")
}

// startWorkersNice is startWorkers with the workers at the given nice
// value (0: the bench's own).
func startWorkersNice(t target, mode string, toks []string, topic string, parallel, nice int) ([]*workerProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	nodes := members(t)
	var ws []*workerProc
	w := 0
	for k, node := range nodes {
		ntoks, users := roundRobin(toks, k, len(nodes))
		for first := 0; first < len(ntoks); first += perWorker {
			last := min(first+perWorker, len(ntoks))
			cmd := workerCommand(exe, nice)
			cmd.Stderr = os.Stderr
			in, _ := cmd.StdinPipe()
			outp, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				return ws, fmt.Errorf("start worker: %w", err)
			}
			sc := bufio.NewScanner(outp)
			sc.Buffer(make([]byte, 1<<20), 64<<20)
			wp := &workerProc{cmd: cmd, in: in, out: sc, pipe: outp, node: k}
			ws = append(ws, wp)
			j := job{Mode: mode, Proto: node.protocol(), URL: node.url(), Src: "127." + strconv.Itoa(10+w) + ".0.", Topic: topic,
				Tokens: ntoks[first:last], FirstUser: first, Parallel: parallel}
			if len(nodes) > 1 {
				j.Users = users[first:last]
			}
			if benchTLS != nil {
				j.CAFile = benchTLS.certFile
			}
			b, _ := json.Marshal(j)
			if _, err := in.Write(append(b, '\n')); err != nil {
				return ws, fmt.Errorf("send job: %w", err)
			}
			w++
		}
	}
	return ws, nil
}

// roundRobin returns the tokens of member k of n, token i going to member
// i mod n, and their indexes in toks (the user numbers they were minted
// for).
func roundRobin(toks []string, k, n int) ([]string, []int) {
	var mine []string
	var users []int
	for i := k; i < len(toks); i += n {
		mine = append(mine, toks[i])
		users = append(users, i)
	}
	return mine, users
}

func (w *workerProc) read() (report, error) {
	var r report
	if !w.out.Scan() {
		return r, fmt.Errorf("worker ended: %v", w.out.Err())
	}
	return r, json.Unmarshal(w.out.Bytes(), &r)
}

// readWithin is read for an answer due at once: a worker that has not
// answered within d fails the run (naming the wait) instead of hanging it.
func (w *workerProc) readWithin(d time.Duration) (report, error) {
	if err := setReadDeadline(w.pipe, time.Now().Add(d)); err != nil {
		return report{}, err
	}
	defer setReadDeadline(w.pipe, time.Time{})
	r, err := w.read()
	if errors.Is(w.out.Err(), os.ErrDeadlineExceeded) {
		return r, fmt.Errorf("worker %d sent no answer within %s", w.cmd.Process.Pid, d)
	}
	return r, err
}

// setReadDeadline sets the read deadline of a child's stdout pipe.
func setReadDeadline(pipe io.Reader, t time.Time) error {
	f, ok := pipe.(interface{ SetReadDeadline(time.Time) error })
	if !ok {
		return fmt.Errorf("%T has no read deadline", pipe)
	}
	if err := f.SetReadDeadline(t); err != nil {
		return fmt.Errorf("pipe read deadline: %w", err)
	}
	return nil
}

func stopWorkers(ws []*workerProc) {
	for _, w := range ws {
		w.in.Close()
	}
	for _, w := range ws {
		waitOrKill(w.cmd, 10*time.Second)
	}
}

// interrupt sends SIGINT to cmd's process, if it started, and waits for it
// (waitOrKill).
func interrupt(cmd *exec.Cmd, grace time.Duration) {
	if cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	waitOrKill(cmd, grace)
}

// waitOrKill waits for cmd's process to end, killing it once grace has
// passed.
func waitOrKill(cmd *exec.Cmd, grace time.Duration) {
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// connectAll mints tokens and opens n subscribed connections from workers
// at the given nice value.
func connectAll(t target, n int, topic string, nice int) ([]*workerProc, int, error) {
	progress("minting %d tokens…", n)
	toks, err := t.mint(n, topic)
	if err != nil {
		return nil, 0, fmt.Errorf("mint tokens: %w", err)
	}
	return connectNice(t, toks, topic, nice)
}

// connectWith opens one subscribed connection per token.
func connectWith(t target, toks []string, topic string) ([]*workerProc, int, error) {
	return connectNice(t, toks, topic, 0)
}

// connectNice is connectWith with the workers at the given nice value.
func connectNice(t target, toks []string, topic string, nice int) ([]*workerProc, int, error) {
	n := len(toks)
	ws, err := startWorkersNice(t, "hold", toks, topic, 64, nice)
	if err != nil {
		stopWorkers(ws)
		return nil, 0, err
	}
	progress("connecting %d clients in %d worker process(es)…", n, len(ws))
	ready := 0
	for _, w := range ws {
		r, err := w.read()
		if err != nil {
			stopWorkers(ws)
			return nil, 0, err
		}
		ready += r.Ready
		if r.Failed > 0 {
			fmt.Fprintf(os.Stderr, "\nworker: %d failed (first: %s)\n", r.Failed, r.FirstErr)
		}
		progress("connected %d/%d", ready, n)
	}
	fmt.Fprintln(os.Stderr)
	return ws, ready, nil
}

func idleScenario(n int, hold time.Duration) func(target) (result, error) {
	return func(t target) (result, error) {
		var r result
		time.Sleep(time.Second)
		rss0, _, err := procStat(t.pid())
		if err != nil {
			return r, err
		}
		// A clustered gateway keeps its minted tokens in Redis: the
		// redis-server's growth is shown beside the node's.
		set, clustered := t.(*nodeSet)
		var redis0 int64
		if clustered {
			redis0, _, _ = procStat(set.redis.pid())
		}
		file0 := rssFileKB(t.pid())
		st0 := t.stats()
		// Tokens are minted first (a site mints them before the page
		// loads): RSS is also read after minting, so the table shows the
		// cost of the tokens and of the connections apart. Both happen in
		// two steps (a third, then the rest), so that the marginal cost —
		// what one more connection costs once the server is warm, without
		// its one-time buffers — is reported beside the average.
		nA := n / 3
		progress("minting %d tokens…", n)
		toks, err := t.mint(nA, "idle")
		if err != nil {
			return r, fmt.Errorf("mint tokens: %w", err)
		}
		time.Sleep(time.Second)
		rssMintedA, _, _ := procStat(t.pid())
		more, err := t.mint(n-nA, "idle")
		if err != nil {
			return r, fmt.Errorf("mint tokens: %w", err)
		}
		toks = append(toks, more...)
		time.Sleep(time.Second)
		rssMinted, _, _ := procStat(t.pid())
		wsA, readyA, err := connectWith(t, toks[:nA], "idle")
		defer stopWorkers(wsA)
		if err != nil {
			return r, err
		}
		time.Sleep(hold)
		rssA, _, _ := procStat(t.pid())
		ws, readyB, err := connectWith(t, toks[nA:], "idle")
		defer stopWorkers(ws)
		if err != nil {
			return r, err
		}
		ready := readyA + readyB
		time.Sleep(hold)
		rss1, _, _ := procStat(t.pid())
		file1 := rssFileKB(t.pid())
		if os.Getenv("PORTCULLIS_BENCH_MEMPROFILE") != "" && t.name() == "portcullis" {
			// The server writes a heap profile of the idle connections.
			_ = syscall.Kill(t.pid(), syscall.SIGUSR1)
			time.Sleep(time.Second)
		}
		marginalTok := float64(rssMinted-rssMintedA) / float64(max(n-nA, 1))
		marginalConn := float64(rss1-rssA) / float64(max(readyB, 1))
		st1 := t.stats()
		r.set("subscribed connections", "n", float64(ready))
		r.set("server RSS before", "KiB", float64(rss0))
		r.set("server RSS after", "KiB", float64(rss1))
		r.set("server RSS per connection", "KiB", float64(rss1-rss0)/float64(max(ready, 1)))
		r.set("  of which its minted token", "KiB", float64(rssMinted-rss0)/float64(max(ready, 1)))
		r.set("  of which the connection", "KiB", float64(rss1-rssMinted)/float64(max(ready, 1)))
		// Program text is paged in as code runs for the first time: a
		// one-time cost, shared with the page cache, that no connection
		// holds.
		r.set("  of which program text paged in", "KiB", float64(file1-file0)/float64(max(ready, 1)))
		r.set("server RSS per connection, marginal", "KiB", marginalTok+marginalConn)
		r.set("  marginal: its minted token", "KiB", marginalTok)
		r.set("  marginal: the connection", "KiB", marginalConn)
		if clustered {
			redis1, _, _ := procStat(set.redis.pid())
			r.set("redis-server RSS per connection", "KiB", float64(redis1-redis0)/float64(max(ready, 1)))
		}
		if st1.HeapLiveBytes > 0 {
			r.set("Go heap per connection", "KiB", (float64(st1.HeapLiveBytes)-float64(st0.HeapLiveBytes))/1024/float64(max(ready, 1)))
			per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / 1024 / float64(max(ready, 1)) }
			r.set("Go heap in use per connection", "KiB", per(st0.HeapInuse, st1.HeapInuse))
			r.set("Go heap resident per connection", "KiB", per(st0.HeapSys-st0.HeapReleased, st1.HeapSys-st1.HeapReleased))
			r.set("Go runtime total per connection", "KiB", per(st0.RuntimeSys, st1.RuntimeSys))
			r.set("goroutines before", "n", float64(st0.Goroutines))
			r.set("goroutines after", "n", float64(st1.Goroutines))
		}
		return r, nil
	}
}

// warnShort says on stderr when the floor's readers fell behind.
func warnShort(f *writeFloor) {
	if f.short > 0 {
		fmt.Fprintf(os.Stderr, "write floor: %d of %d writes short or failed: the readers fell behind\n", f.short, f.writes)
	}
}

// interleaveMaxRate is the highest publication rate at which the write
// floor is measured between the fan-out's publications: a round of the
// floor to 5,000 sockets takes ~30 ms of one core, under a third of the 100 ms
// between its writes and the next publication at this rate.
const interleaveMaxRate = 5

// fanoutScenario publishes count messages at rate to n subscribers. The
// write floor (floor.go) is measured once per run, during the first
// column's fan-out, over as many sockets at the same rate, and shown in
// every column: its rounds go half a period after each publication, so
// that both see the same host (shared cores drift by ±10 % over a minute,
// and the floor measured after the fan-out moved the ratio by as much).
// Above interleaveMaxRate a period is too short for a round of the floor
// and a publication's deliveries to pass apart, and the floor is measured
// after the fan-out instead, on a machine left to it.
func fanoutScenario(n int, rate float64, count int) func(target) (result, error) {
	var floor *writeFloor
	return func(t target) (result, error) {
		var r result
		ws, ready, err := connectAll(t, n, "fan", clientNice)
		if err != nil {
			return r, err
		}
		defer func() { stopWorkers(ws) }()
		set, clustered := t.(*nodeSet)
		var rig *floorRig
		if !clustered && floor == nil && rate <= interleaveMaxRate {
			if rig, err = openFloor(ready); err != nil {
				return r, err
			}
			defer rig.close()
		}
		var rc redisCounts
		if clustered {
			// The settling pause also measures the commands the nodes
			// send Redis without any publication (presence, pings).
			if err := rc.idle(set.redis, 2*time.Second); err != nil {
				return r, err
			}
		} else {
			time.Sleep(2 * time.Second)
		}
		// A single gateway counts its event loops' syscalls: read around
		// the CPU window so that the reads cost nothing inside it.
		g, single := t.(*gateway)
		var st0 serverStats
		if single {
			if st0, err = g.fetchStats(); err != nil {
				return r, err
			}
		}
		t0, err := cpuOf(t)
		if err != nil {
			return r, err
		}
		type floorRun struct {
			f   writeFloor
			err error
		}
		floorDone := make(chan floorRun, 1)
		if rig != nil {
			// publishPhase's first publication is one period from now.
			half := time.Duration(float64(time.Second) / rate / 2)
			go func() {
				f, err := rig.run(rate, floorRounds(rate, count), time.Now().Add(half))
				floorDone <- floorRun{f, err}
			}()
		}
		p, err := publishPhase(t, ws, ready, "fan", rate, count)
		if rig != nil {
			fr := <-floorDone
			if err == nil && fr.err != nil {
				err = fr.err
			}
			floor = &fr.f
			warnShort(floor)
		}
		if err != nil {
			return r, err
		}
		t1, err := cpuOf(t)
		if err != nil {
			return r, err
		}
		var st1 serverStats
		if single {
			if st1, err = g.fetchStats(); err != nil {
				return r, err
			}
		}
		if clustered {
			if err := rc.end(set.redis); err != nil {
				return r, err
			}
		}
		delivered, expected, lat, elapsed := p.delivered, p.expected, p.lat, p.elapsed
		d := t1.sub(t0)
		cpu := ticksToMicros(d.total())
		r.set("subscribers", "n", float64(ready))
		r.set("delivered", "%", 100*float64(delivered)/float64(max(expected, 1)))
		if clustered {
			r.set("nodes", "n", float64(len(set.nodes)))
			r.set("server CPU per delivered message, all nodes", "µs", cpu/float64(max(delivered, 1)))
		} else {
			r.set("server CPU per delivered message", "µs", cpu/float64(max(delivered, 1)))
		}
		r.set("  of which user space", "µs", ticksToMicros(d.user)/float64(max(delivered, 1)))
		r.set("  of which in the kernel", "µs", ticksToMicros(d.sys)/float64(max(delivered, 1)))
		if !clustered {
			if floor == nil {
				// The subscribers go first: the floor's sockets and
				// writes should not share the machine with them.
				stopWorkers(ws)
				ws = nil
				f, err := measureWriteFloor(ready, rate, floorRounds(rate, count))
				if err != nil {
					return r, err
				}
				floor = &f
				warnShort(floor)
			}
			r.set("write floor: one write(2) per delivery, same run", "µs", floor.cpu)
			r.set("  the floor's kernel part", "µs", floor.kernel)
			r.set("CPU per delivery ÷ write floor", "×", cpu/float64(max(delivered, 1))/floor.cpu)
			if floor.ringErr == nil {
				r.set("io_uring floor: one send per delivery, 256 per io_uring_enter, same run", "µs", floor.ringCPU)
				r.set("  the io_uring floor's kernel part", "µs", floor.ringKernel)
				r.set("CPU per delivery ÷ io_uring floor", "×", cpu/float64(max(delivered, 1))/floor.ringCPU)
			} else {
				r.na("io_uring floor: one send per delivery, 256 per io_uring_enter, same run", "µs")
				r.na("CPU per delivery ÷ io_uring floor", "×")
			}
		}
		if single && st0.Syscalls != nil && st1.Syscalls != nil {
			setSyscallRows(&r, st1.Syscalls.since(st0.Syscalls), delivered)
		} else if !clustered {
			naSyscallRows(&r)
		}
		r.set("deliveries per second", "1/s", float64(delivered)/elapsed.Seconds())
		r.set("publish→receive p50", "ms", percentile(lat, 50)/1000)
		r.set("publish→receive p99", "ms", percentile(lat, 99)/1000)
		r.set("publish→receive max", "ms", percentile(lat, 100)/1000)
		if clustered {
			// Node 1 takes the publications: its subscribers are served
			// by it directly, the others' through Redis.
			var cross []float64
			for _, l := range p.nodeLat[min(1, len(p.nodeLat)):] {
				cross = append(cross, l...)
			}
			sortFloats(cross)
			var same []float64
			if len(p.nodeLat) > 0 {
				same = p.nodeLat[0]
			}
			r.set("same-node (node 1) p99", "ms", percentile(same, 99)/1000)
			r.set("cross-node p50", "ms", percentile(cross, 50)/1000)
			r.set("cross-node p99", "ms", percentile(cross, 99)/1000)
			rc.report(&r, p.sent)
		}
		r.set("publish call p50", "ms", percentile(p.calls, 50)/1000)
		r.set("publish call p99", "ms", percentile(p.calls, 99)/1000)
		if g, ok := members(t)[0].(*gateway); ok {
			// The client-side round trip above includes this process's
			// own scheduling next to 5,000 readers; the gateway's
			// histogram says how long the publish took inside it.
			if h, err := g.publishHistogram(); err == nil && h.count > 0 {
				r.set("server publish p99 (bucket bound)", "ms", 1000*h.quantile(0.99))
				r.set("server publishes within 2 ms", "%", 100*h.within(0.002))
			}
		}
		return r, nil
	}
}

func handshakeScenario(n int) func(target) (result, error) {
	return func(t target) (result, error) {
		var r result
		progress("minting %d tokens…", n)
		toks, err := t.mint(n, "hs")
		if err != nil {
			return r, err
		}
		// A single gateway counts its event loops' syscalls: read before
		// the CPU window, and after it once every set-up's close is done.
		g, single := t.(*gateway)
		var st0 serverStats
		if single {
			if st0, err = g.fetchStats(); err != nil {
				return r, err
			}
		}
		t0, err := cpuOf(t)
		if err != nil {
			return r, err
		}
		start := time.Now()
		ws, err := startWorkers(t, "setup", toks, "hs", 32)
		if err != nil {
			stopWorkers(ws)
			return r, err
		}
		setups, failed := 0, 0
		var firstErr string
		for _, w := range ws {
			rep, err := w.read()
			if err != nil {
				return r, err
			}
			setups += rep.Setups
			failed += rep.Failed
			if firstErr == "" {
				firstErr = rep.FirstErr
			}
		}
		elapsed := time.Since(start)
		stopWorkers(ws)
		t1, err := cpuOf(t)
		if err != nil {
			return r, err
		}
		if failed > 0 {
			fmt.Fprintf(os.Stderr, "%d set-ups failed (first: %s)\n", failed, strings.TrimSpace(firstErr))
		}
		r.set("set-ups", "n", float64(setups))
		r.set("set-ups per second", "1/s", float64(setups)/elapsed.Seconds())
		d := t1.sub(t0)
		r.set("server CPU per set-up", "µs", ticksToMicros(d.total())/float64(max(setups, 1)))
		r.set("  of which user space", "µs", ticksToMicros(d.user)/float64(max(setups, 1)))
		if !single || st0.Syscalls == nil {
			naPerUnitSyscallRows(&r, "set-up")
			return r, nil
		}
		st1, err := g.settled(st0.Connections, 10*time.Second)
		if err != nil {
			return r, err
		}
		setPerUnitSyscallRows(&r, st1.Syscalls.since(st0.Syscalls), int64(setups), "set-up")
		return r, nil
	}
}
