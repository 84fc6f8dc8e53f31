package loadgen

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// workerProc is one load-generator child.
type workerProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startWorkers(g *gateway, mode string, toks []string, topic string, parallel int) ([]*workerProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var ws []*workerProc
	for w, first := 0, 0; first < len(toks); w, first = w+1, first+perWorker {
		last := min(first+perWorker, len(toks))
		cmd := exec.Command(exe, "bench", "worker")
		cmd.Stderr = os.Stderr
		in, _ := cmd.StdinPipe()
		outp, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			return ws, fmt.Errorf("start worker: %w", err)
		}
		sc := bufio.NewScanner(outp)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		wp := &workerProc{cmd: cmd, in: in, out: sc}
		ws = append(ws, wp)
		j := job{Mode: mode, URL: g.wsURL, Src: "127." + strconv.Itoa(10+w) + ".0.", Topic: topic,
			Tokens: toks[first:last], FirstUser: first, Parallel: parallel}
		b, _ := json.Marshal(j)
		if _, err := in.Write(append(b, '\n')); err != nil {
			return ws, fmt.Errorf("send job: %w", err)
		}
	}
	return ws, nil
}

func (w *workerProc) read() (report, error) {
	var r report
	if !w.out.Scan() {
		return r, fmt.Errorf("worker ended: %v", w.out.Err())
	}
	return r, json.Unmarshal(w.out.Bytes(), &r)
}

func stopWorkers(ws []*workerProc) {
	for _, w := range ws {
		w.in.Close()
	}
	for _, w := range ws {
		done := make(chan struct{})
		go func() { _ = w.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = w.cmd.Process.Kill()
		}
	}
}

// connectAll mints tokens and opens n subscribed connections.
func connectAll(g *gateway, n int, topic string) ([]*workerProc, int, error) {
	progress("minting %d tokens…", n)
	toks, err := g.mint(n, topic)
	if err != nil {
		return nil, 0, fmt.Errorf("mint tokens: %w", err)
	}
	progress("connecting %d clients in %d worker process(es)…", n, (n+perWorker-1)/perWorker)
	ws, err := startWorkers(g, "hold", toks, topic, 64)
	if err != nil {
		stopWorkers(ws)
		return nil, 0, err
	}
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

func runIdle(n int, hold time.Duration) error {
	g, err := startGateway()
	if err != nil {
		return err
	}
	defer g.stop()
	pid := g.cmd.Process.Pid
	time.Sleep(time.Second)
	rss0, _, err := procStat(pid)
	if err != nil {
		return err
	}
	st0 := g.stats()
	ws, ready, err := connectAll(g, n, "idle")
	if err != nil {
		return err
	}
	defer stopWorkers(ws)
	time.Sleep(hold)
	rss1, _, _ := procStat(pid)
	st1 := g.stats()
	fmt.Printf("idle: %d subscribed connections\n", ready)
	fmt.Printf("  server RSS      %8d KiB before, %8d KiB after → %.2f KiB per connection\n", rss0, rss1, float64(rss1-rss0)/float64(ready))
	fmt.Printf("  Go heap (live)  %8d KiB before, %8d KiB after → %.2f KiB per connection\n", st0.HeapLiveBytes>>10, st1.HeapLiveBytes>>10,
		float64(int64(st1.HeapLiveBytes)-int64(st0.HeapLiveBytes))/1024/float64(ready))
	fmt.Printf("  goroutines      %8d before, %8d after\n", st0.Goroutines, st1.Goroutines)
	return nil
}

func runFanout(n int, rate float64, count int) error {
	g, err := startGateway()
	if err != nil {
		return err
	}
	defer g.stop()
	pid := g.cmd.Process.Pid
	ws, ready, err := connectAll(g, n, "fan")
	if err != nil {
		return err
	}
	defer stopWorkers(ws)
	time.Sleep(2 * time.Second)
	_, t0, _ := procStat(pid)
	start := time.Now()
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	sent := 0
	for i := 0; i < count; i++ {
		<-tick.C
		data := fmt.Sprintf(`{"seq":%d,"t":%d}`, i, time.Now().UnixNano())
		if err := g.post("/v1/publish", map[string]any{"topic": "fan", "data": json.RawMessage(data)}, nil); err != nil {
			return err
		}
		sent++
		progress("published %d/%d", sent, count)
	}
	tick.Stop()
	expected := int64(sent) * int64(ready)
	var delivered int64
	var lat []float64
	deadline := time.Now().Add(30 * time.Second)
	for {
		delivered, lat = 0, lat[:0]
		for _, w := range ws {
			fmt.Fprintln(w.in, "report")
			r, err := w.read()
			if err != nil {
				return err
			}
			delivered += r.Delivered
			lat = append(lat, r.Latencies...)
		}
		if delivered >= expected || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	elapsed := time.Since(start)
	_, t1, _ := procStat(pid)
	fmt.Fprintln(os.Stderr)
	sortFloats(lat)
	cpu := ticksToMicros(t1 - t0)
	fmt.Printf("fanout: %d subscribers × %d messages at %.0f/s\n", ready, sent, rate)
	fmt.Printf("  delivered       %d/%d (%.2f %%)\n", delivered, expected, 100*float64(delivered)/float64(max(expected, 1)))
	fmt.Printf("  server CPU      %.2f µs per delivered message (%.0f ms CPU in all)\n", cpu/float64(max(delivered, 1)), cpu/1000)
	fmt.Printf("  deliveries/s    %.0f\n", float64(delivered)/elapsed.Seconds())
	fmt.Printf("  latency         p50 %.0f µs  p99 %.0f µs  max %.0f µs\n", percentile(lat, 50), percentile(lat, 99), percentile(lat, 100))
	return nil
}

func runHandshake(n int) error {
	g, err := startGateway()
	if err != nil {
		return err
	}
	defer g.stop()
	pid := g.cmd.Process.Pid
	progress("minting %d tokens…", n)
	toks, err := g.mint(n, "hs")
	if err != nil {
		return err
	}
	_, t0, _ := procStat(pid)
	start := time.Now()
	ws, err := startWorkers(g, "setup", toks, "hs", 32)
	if err != nil {
		stopWorkers(ws)
		return err
	}
	setups := 0
	for _, w := range ws {
		r, err := w.read()
		if err != nil {
			return err
		}
		setups += r.Setups
		if r.Failed > 0 {
			fmt.Fprintf(os.Stderr, "worker: %d failed (first: %s)\n", r.Failed, r.FirstErr)
		}
	}
	elapsed := time.Since(start)
	stopWorkers(ws)
	_, t1, _ := procStat(pid)
	fmt.Fprintln(os.Stderr)
	fmt.Printf("handshake: %d connect+token+subscribe set-ups\n", setups)
	fmt.Printf("  set-ups/s       %.0f\n", float64(setups)/elapsed.Seconds())
	fmt.Printf("  server CPU      %.1f µs per set-up\n", ticksToMicros(t1-t0)/float64(max(setups, 1)))
	return nil
}
