package main

import (
	"bufio"
	"encoding/json"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the benches' children: the smoke
// runs below start os.Executable() worker (and floor-server), as the real
// command does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "worker" || os.Args[1] == "floor-server") {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// statsJSON is a /v1/stats body with loop_turns and syscalls as the
// gateway reports them.
const statsJSON = `{"connections":105,"max_loop_stall":"12.5ms",
 "loop_turns":{"count":1000,"max":"12.5ms","p50":"50µs","p99":"5ms","buckets":[
  {"le":"50µs","count":600},{"le":"100µs","count":800},{"le":"250µs","count":900},{"le":"500µs","count":950},
  {"le":"1ms","count":970},{"le":"2ms","count":980},{"le":"5ms","count":990},{"le":"10ms","count":998},
  {"le":"20ms","count":1000},{"le":"50ms","count":1000},{"le":"100ms","count":1000},{"le":"250ms","count":1000},
  {"le":"+Inf","count":1000}]},
 "syscalls":{"epoll_wait":500,"epoll_ctl":20,"read":300,"write":900,"writev":100,"eventfd_write":40,"eventfd_read":40,"close":5,"accept":5,"io_uring_enter":10,"ring_send":700,"ring_sendmsg":50}}`

func decodeStats(t *testing.T, s string) serverStats {
	t.Helper()
	var st serverStats
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestParseLoopTurns(t *testing.T) {
	st := decodeStats(t, statsJSON)
	h, ok, err := parseLoopTurns(st.LoopTurns)
	if err != nil || !ok {
		t.Fatalf("present: ok %v, %v", ok, err)
	}
	if len(h.bounds) != 13 || h.bounds[0] != 50*time.Microsecond || h.bounds[12] != infBound || h.total() != 1000 || h.max != 12500*time.Microsecond {
		t.Fatalf("parsed %+v", h)
	}
	for q, want := range map[float64]time.Duration{0.5: 50 * time.Microsecond, 0.9: 250 * time.Microsecond, 0.99: 5 * time.Millisecond, 1: 20 * time.Millisecond} {
		if got := h.quantile(q); got != want {
			t.Errorf("quantile %v: %s, want %s", q, got, want)
		}
	}
	if n, ok := h.over(5 * time.Millisecond); !ok || n != 10 {
		t.Errorf("over 5ms: %d %v, want 10", n, ok)
	}
	if _, ok := h.over(3 * time.Millisecond); ok {
		t.Error("over a bound that is no bucket's")
	}

	// A gateway without the field: not an error, not present.
	old := decodeStats(t, `{"connections":3,"max_loop_stall":"41ms"}`)
	if old.LoopTurns != nil || old.Syscalls != nil {
		t.Fatalf("absent fields decoded as %+v %v", old.LoopTurns, old.Syscalls)
	}
	if _, ok, err := parseLoopTurns(old.LoopTurns); ok || err != nil {
		t.Fatalf("absent: ok %v, %v", ok, err)
	}

	for name, lt := range map[string]loopTurns{
		"bad bound":      {Buckets: []turnBucket{{Le: "5 parsecs", Count: 1}, {Le: "+Inf", Count: 1}}},
		"no +Inf":        {Buckets: []turnBucket{{Le: "1ms", Count: 1}}},
		"descending":     {Buckets: []turnBucket{{Le: "1ms", Count: 1}, {Le: "50µs", Count: 2}, {Le: "+Inf", Count: 2}}},
		"not cumulative": {Buckets: []turnBucket{{Le: "1ms", Count: 5}, {Le: "+Inf", Count: 2}}},
		"bad max":        {Max: "long", Buckets: []turnBucket{{Le: "+Inf", Count: 2}}},
		"empty":          {},
	} {
		if _, ok, err := parseLoopTurns(&lt); err == nil || ok {
			t.Errorf("%s: accepted", name)
		} else if !strings.Contains(err.Error(), "loop_turns") {
			t.Errorf("%s: error does not name the field: %v", name, err)
		}
	}
}

func TestTurnHistogramSince(t *testing.T) {
	st := decodeStats(t, statsJSON)
	h1, _, _ := parseLoopTurns(st.LoopTurns)
	// Earlier: 590 quick turns only.
	earlier := turnHistogram{bounds: h1.bounds, counts: make([]uint64, len(h1.counts))}
	for i := range earlier.counts {
		earlier.counts[i] = 590
	}
	d, err := h1.since(earlier)
	if err != nil {
		t.Fatal(err)
	}
	if d.total() != 410 || d.counts[0] != 10 || d.max != h1.max {
		t.Fatalf("since: %+v", d)
	}
	// 10 of 410 took ≤ 50µs; the median of the rest is in the 100µs bucket.
	if got := d.quantile(0.5); got != 100*time.Microsecond {
		t.Fatalf("median since: %s", got)
	}
	if (turnHistogram{}).quantile(0.5) != 0 {
		t.Fatal("empty histogram has a quantile")
	}
	if _, err := h1.since(turnHistogram{bounds: h1.bounds[:3], counts: h1.counts[:3]}); err == nil {
		t.Fatal("different bucket count accepted")
	}
	later := turnHistogram{bounds: h1.bounds, counts: append([]uint64(nil), h1.counts...)}
	later.counts[0] = 0
	if _, err := later.since(h1); err == nil {
		t.Fatal("a count going back accepted")
	}
}

func TestSyscallCounts(t *testing.T) {
	st := decodeStats(t, statsJSON)
	if st.Syscalls.writes() != 1010 || st.Syscalls.sends() != 1750 || st.Syscalls.total() != 1920 {
		t.Fatalf("writes %d sends %d total %d", st.Syscalls.writes(), st.Syscalls.sends(), st.Syscalls.total())
	}
	earlier := syscallCounts{"write": 400, "writev": 0, "epoll_ctl": 10, "epoll_wait": 500, "io_uring_enter": 10, "ring_send": 400, "ring_sendmsg": 50}
	d := st.Syscalls.since(earlier)
	if d["write"] != 500 || d["writev"] != 100 || d["epoll_ctl"] != 10 || d["epoll_wait"] != 0 || d["read"] != 300 {
		t.Fatalf("since: %v", d)
	}
	var r result
	setSyscallRows(&r, d, 1200)
	want := map[string]float64{
		"  write syscalls per delivery (write, writev, io_uring_enter)":     0.5,
		"  sends per delivery (write, writev, or one in an io_uring_enter)": 0.75,
		"  epoll_ctl per delivery":                                          10.0 / 1200,
		"syscalls per delivery (event loops)":                               float64(d.total()) / 1200,
		"deliveries per write syscall":                                      2,
		"deliveries per send":                                               1200.0 / 900,
		"  read per delivery":                                               0.25,
	}
	for k, v := range want {
		if got, ok := r.vals[k]; !ok || math.Abs(got-v) > 1e-9 {
			t.Errorf("%s: %v (set %v), want %v", k, got, ok, v)
		}
	}
	if _, ok := r.vals["  epoll_wait per delivery"]; ok {
		t.Error("a call not made in the window has a row")
	}
	var none result
	setSyscallRows(&none, syscallCounts{"epoll_wait": 3}, 10)
	if _, ok := none.vals["deliveries per write syscall"]; ok || none.unit["deliveries per write syscall"] == "" {
		t.Fatal("no write in the window: deliveries per write syscall must be n/a")
	}
}

func TestSetTurnRows(t *testing.T) {
	st1 := decodeStats(t, statsJSON)
	st0 := decodeStats(t, statsJSON)
	for i := range st0.LoopTurns.Buckets {
		st0.LoopTurns.Buckets[i].Count = 590
	}
	st0.LoopTurns.Count = 590
	var r result
	if err := setTurnRows(&r, st0, st1); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"loop turns over the episode":        410,
		"  loop turn p50 (bucket bound)":     0.1,
		"  longest loop turn (bucket bound)": 20,
		"  loop turns over 20 ms":            0,
		"longest loop turn since start":      12.5,
	}
	for k, v := range want {
		if got, ok := r.vals[k]; !ok || math.Abs(got-v) > 1e-9 {
			t.Errorf("%s: %v (set %v), want %v", k, got, ok, v)
		}
	}

	// A gateway without loop_turns: its max_loop_stall, the rest n/a.
	old := decodeStats(t, `{"connections":3,"max_loop_stall":"41ms"}`)
	var o result
	if err := setTurnRows(&o, old, old); err != nil {
		t.Fatal(err)
	}
	if len(o.keys) != len(turnRows) || len(o.vals) != 1 || o.vals["longest loop turn since start"] != 41 {
		t.Fatalf("fallback: keys %q vals %v", o.keys, o.vals)
	}
	bad := decodeStats(t, `{"max_loop_stall":"forever"}`)
	if err := setTurnRows(&o, bad, bad); err == nil || !strings.Contains(err.Error(), "max_loop_stall") {
		t.Fatalf("bad max_loop_stall: %v", err)
	}
}

func TestRTTRecorder(t *testing.T) {
	rec := newRTTRecorder(10*time.Millisecond, 1000, 1)
	for i := 0; i < 98; i++ {
		rec.add(time.Millisecond)
	}
	rec.add(2 * time.Millisecond)
	rec.add(45 * time.Millisecond) // 35, 25, 15 ms missed behind it
	rec.lost()
	rep := rec.take()
	if rep.Pongs != 100 || rep.Missing != 1 || rep.MaxUS != 45000 || len(rep.Samples) != 100 || len(rep.Corrected) != 103 {
		t.Fatalf("report: pongs %d missing %d max %v samples %d corrected %d", rep.Pongs, rep.Missing, rep.MaxUS, len(rep.Samples), len(rep.Corrected))
	}
	s := summarize(rep)
	if s.p50 != 1 || s.p99 != 2 || s.max != 45 || s.pongs != 100 || s.missing != 1 {
		t.Fatalf("summary %+v", s)
	}
	// 103 samples (98 × 1, 2, 15, 25, 35, 45 ms): index int(0.99·102) =
	// 100 is 25 ms, where the raw p99 saw 2 ms.
	if s.p99Corrected != 25 {
		t.Fatalf("corrected p99 %v, want 25", s.p99Corrected)
	}
	if next := rec.take(); next.Pongs != 0 || next.Missing != 0 || next.MaxUS != 0 || len(next.Samples) != 0 || len(next.Corrected) != 0 {
		t.Fatalf("take did not start a new phase: %+v", next)
	}
	if s := summarize(rttReport{}); s.p99 != 0 || s.max != 0 {
		t.Fatalf("empty summary %+v", s)
	}
}

func TestFloorRounds(t *testing.T) {
	for _, c := range []struct {
		rate  float64
		count int
		want  int
	}{{5, 100, 100}, {5, 1000, 150}, {200, 100, 100}, {200, 10000, 6000}, {0.2, 100, 20}, {5, 10, 10}, {1, 0, 1}} {
		if got := floorRounds(c.rate, c.count); got != c.want {
			t.Errorf("floorRounds(%v, %d) = %d, want %d", c.rate, c.count, got, c.want)
		}
	}
}

// captureStdout returns what f prints on os.Stdout.
func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() { b, _ := io.ReadAll(r); done <- string(b) }()
	defer func() { os.Stdout = saved }()
	f()
	w.Close()
	os.Stdout = saved
	return <-done
}

func TestPrintResultsNA(t *testing.T) {
	var a, b result
	a.set("p99", "ms", 4)
	a.na("loop turns", "n")
	b.set("p99", "ms", 8)
	b.set("only the peer's", "n", 3)
	out := captureStdout(t, func() { printResults("t", []string{"portcullis", "centrifugo"}, []result{a, b}) })
	lines := strings.Split(out, "\n")
	find := func(prefix string) string {
		for _, l := range lines {
			if strings.HasPrefix(strings.TrimSpace(l), prefix) {
				return strings.Join(strings.Fields(l), " ")
			}
		}
		t.Fatalf("no row %q in\n%s", prefix, out)
		return ""
	}
	if got := find("p99 (ms)"); got != "p99 (ms) 4.00 8.00 0.500" {
		t.Errorf("row with both: %q", got)
	}
	if got := find("loop turns (n)"); got != "loop turns (n) n/a n/a" {
		t.Errorf("row with neither: %q", got)
	}
	if got := find("only the peer's (n)"); got != "only the peer's (n) n/a 3.00" {
		t.Errorf("row of the second column only: %q", got)
	}
}

// With three columns each other server gets a ratio column of its own.
func TestPrintResultsThreeColumns(t *testing.T) {
	var a, b, c result
	a.set("p99", "ms", 6)
	b.set("p99", "ms", 12)
	c.set("p99", "ms", 4)
	a.set("loop turns", "n", 10)
	b.na("loop turns", "n")
	c.na("loop turns", "n")
	out := captureStdout(t, func() {
		printResults("t", []string{"portcullis", "centrifugo", "floor"}, []result{a, b, c})
	})
	want := []string{
		"metric portcullis centrifugo floor ÷centrifugo ÷floor",
		"p99 (ms) 6.00 12.00 4.00 0.500 1.500",
		"loop turns (n) 10.00 n/a n/a",
	}
	var got []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && l != "t" {
			got = append(got, strings.Join(f, " "))
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// centrifugoForTest returns the Centrifugo binary the benches would use, or
// "" when it is not installed (the smoke runs then skip the peer).
func centrifugoForTest() string {
	cache, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	p := filepath.Join(cache, "portcullis-bench", "centrifugo-"+centrifugoVersion, "centrifugo")
	if executable(p) != nil {
		return ""
	}
	return p
}

// A small stall run on loopback against the gateway built from this tree
// (and Centrifugo when installed): it completes, every connection comes
// back, and the bystanders' pongs are timed.
func TestStallSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gateway")
	}
	args := []string{"stall", "--conns", "200", "--bystanders", "5", "--rounds", "2", "--floor"}
	peer := centrifugoForTest() != ""
	if peer {
		args = append(args, "--peer", "centrifugo", "--centrifugo-bin", centrifugoForTest())
	} else {
		t.Log("centrifugo not installed: Portcullis and the floor")
	}
	var errb strings.Builder
	var code int
	out := captureStdout(t, func() { code = run(args, io.Discard, &errb) })
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out, errb.String())
	}
	cols := 2 // Portcullis, [Centrifugo,] the floor
	if peer {
		cols = 3
	}
	row := func(prefix string) []string {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), prefix) {
				f := strings.Fields(l[strings.Index(l, ")")+1:])
				if len(f) < cols {
					t.Fatalf("row %q: %q", prefix, l)
				}
				return f[:cols]
			}
		}
		t.Fatalf("no row %q in\n%s", prefix, out)
		return nil
	}
	for _, v := range row("reconnected (n)") {
		if v != "200.00" {
			t.Errorf("reconnected %s of 200\n%s", v, out)
		}
	}
	for _, v := range row("bystanders (n)") {
		if v != "5.00" {
			t.Errorf("bystanders %s of 5\n%s", v, out)
		}
	}
	for _, prefix := range []string{"p99 of round 1 (ms)", "p99 of round 2 (ms)"} {
		for i, v := range row(prefix) {
			if v == "n/a" || v == "0.00" {
				t.Errorf("%s, column %d: %s\n%s", prefix, i+1, v, out)
			}
		}
	}
	for _, v := range row("bystander pongs over the episode (n)") {
		if v == "0.00" {
			t.Errorf("no pong timed\n%s", out)
		}
	}
	// The gateway and the floor time their loops' turns; Centrifugo has
	// none to report.
	turns, longest := row("loop turns over the episode (n)"), row("longest loop turn since start (ms)")
	for _, i := range []int{0, cols - 1} {
		if turns[i] == "n/a" || turns[i] == "0.00" || longest[i] == "n/a" || longest[i] == "0.00" {
			t.Errorf("column %d: %s loop turns over the episode, longest %s\n%s", i+1, turns[i], longest[i], out)
		}
	}
	if peer && turns[1] != "n/a" {
		t.Errorf("Centrifugo's column has loop turns: %s", turns[1])
	}
	// Every server's threads are read; a wait for a core is a duration.
	for i, v := range row("its threads runnable, waiting for a core (s)") {
		if f, err := strconv.ParseFloat(v, 64); err != nil || f < 0 {
			t.Errorf("column %d: waiting for a core %q", i+1, v)
		}
	}
}

// The wait for a core is read from the kernel's schedstat lines, per
// thread: a thread that starts between two readings counts all of its
// wait, one that ends counts nothing, a malformed line is an error.
func TestThreadWaits(t *testing.T) {
	if w, err := parseSchedstat("4294465 1250000 2\n"); err != nil || w != 1250000 {
		t.Fatalf("parse: %d, %v", w, err)
	}
	for _, bad := range []string{"", "1 2", "1 x 3", "1 -5 3", "1 2 3 4"} {
		if _, err := parseSchedstat(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	earlier := threadWaits{{1, 1}: 100, {1, 2}: 50, {1, 3}: 70}
	later := threadWaits{{1, 1}: 400, {1, 2}: 50, {1, 4}: 30} // 3 ended, 4 started
	if got := later.since(earlier); got != 330 {
		t.Fatalf("since: %d ns, want 330", got)
	}
	// This process's own threads are readable and their waits add up.
	w := threadWaits{}
	if err := addWaits(w, os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if len(w) < 2 {
		t.Fatalf("%d threads read from /proc/self/task", len(w))
	}
	// Threads that end while they are listed or read are skipped, not an
	// error: a goroutine that exits locked to its thread ends the thread.
	stop := make(chan struct{})
	ended := make(chan int)
	go func() {
		n := 0
		defer func() { ended <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			done := make(chan struct{})
			go func() { runtime.LockOSThread(); close(done) }()
			<-done
			n++
		}
	}()
	for range 300 {
		if err := addWaits(threadWaits{}, os.Getpid()); err != nil {
			close(stop)
			t.Fatalf("with threads ending meanwhile: %v", err)
		}
	}
	close(stop)
	if n := <-ended; n == 0 {
		t.Fatal("no thread ended while the waits were read")
	}
}

// rowValue is the first column's value of the report row starting with
// prefix (after its unit's closing parenthesis).
func rowValue(t *testing.T, out, prefix string) float64 {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			f := strings.Fields(l[strings.LastIndex(l, ")")+1:])
			v, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				t.Fatalf("row %q: %q", prefix, l)
			}
			return v
		}
	}
	t.Fatalf("no row %q in\n%s", prefix, out)
	return 0
}

// A small fan-out: the write floor and the io_uring floor are measured in
// the same run and the per-delivery rows are there (n/a where the gateway
// does not count its syscalls). The gateway sends through io_uring (its
// writes are fewer than its sends), or with write(2) under --no-io-uring
// (one write syscall per send).
func TestFanoutFloorSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gateway")
	}
	// At 5/s the floor's rounds go between the publications; at 20/s it
	// is measured after the fan-out.
	for _, rate := range []string{"5", "20"} {
		t.Run("rate "+rate, func(t *testing.T) {
			var errb strings.Builder
			var code int
			args := []string{"fanout", "--subs", "200", "--rate", rate, "--count", "10"}
			ring := rate == "5"
			if !ring {
				args = append([]string{"--no-io-uring"}, args...)
			}
			t.Cleanup(func() { noIOURing = false })
			out := captureStdout(t, func() { code = run(args, io.Discard, &errb) })
			if code != exitOK {
				t.Fatalf("exit %d\n%s\n%s", code, out, errb.String())
			}
			for _, want := range []string{"write floor: one write(2) per delivery, same run (µs)", "CPU per delivery ÷ write floor",
				"write syscalls per delivery (write, writev, io_uring_enter) (n)", "deliveries per write syscall (n)",
				"sends per delivery (write, writev, or one in an io_uring_enter) (n)", "deliveries per send (n)",
				"io_uring floor: one send per delivery, 256 per io_uring_enter, same run (µs)", "CPU per delivery ÷ io_uring floor"} {
				if !strings.Contains(out, want) {
					t.Errorf("no row %q in\n%s", want, out)
				}
			}
			if strings.Contains(errb.String(), "short or failed") {
				t.Errorf("the floor's readers fell behind: %s", errb.String())
			}
			writes := rowValue(t, out, "write syscalls per delivery")
			sends := rowValue(t, out, "sends per delivery")
			if sends < 0.9 || (ring && writes > sends/10) || (!ring && writes != sends) {
				t.Errorf("io_uring %v: %v write syscalls and %v sends per delivery\n%s", ring, writes, sends, out)
			}
		})
	}
}

func TestParseCPUList(t *testing.T) {
	for _, c := range []struct {
		list string
		want []int
	}{{"1", []int{1}}, {"0-2", []int{0, 1, 2}}, {"1,3-4", []int{1, 3, 4}}} {
		set, err := parseCPUList(c.list)
		if err != nil || set.Count() != len(c.want) {
			t.Fatalf("%q: %v, %d CPUs", c.list, err, set.Count())
		}
		for _, cpu := range c.want {
			if !set.IsSet(cpu) {
				t.Errorf("%q: CPU %d not set", c.list, cpu)
			}
		}
	}
	for _, bad := range []string{"", "a", "3-1", "-1", "1,,2", "2000"} {
		if _, err := parseCPUList(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// silentWorker is a worker process that never answers: sleep, with the
// pipes of a real worker. It is killed and reaped at the test's end.
func silentWorker(t *testing.T) *workerProc {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return &workerProc{cmd: cmd, in: in, out: bufio.NewScanner(out), pipe: out}
}

// A child that does not answer a command due at once fails the run with
// an error naming the wait, instead of hanging it.
func TestReadWithin(t *testing.T) {
	w := silentWorker(t)
	// Without the deadline the read would last until the child ends, and
	// fail as "worker ended".
	_, err := w.readWithin(200 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no answer within 200ms") {
		t.Fatalf("read from a silent child: %v", err)
	}
}

// killWorkers kills and reaps every worker; exitedChild tells a running
// child from one that ended without reaping it.
func TestKillWorkers(t *testing.T) {
	ws := []*workerProc{silentWorker(t), silentWorker(t), silentWorker(t)}
	if exitedChild(ws[0].cmd.Process.Pid) {
		t.Fatal("a running child reported ended")
	}
	killWorkers(ws)
	for i, w := range ws {
		st := w.cmd.ProcessState
		if st == nil || st.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("worker %d: %v, want killed and reaped", i, st)
		}
	}
}

// The handshake bench counts the event loops' syscalls per set-up over a
// window that ends once every set-up's close is done: each connection is
// accepted, read (its request, its subscribe) and closed.
func TestHandshakeSyscallRows(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gateway")
	}
	var errb strings.Builder
	var code int
	out := captureStdout(t, func() { code = run([]string{"handshake", "--conns", "200"}, io.Discard, &errb) })
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out, errb.String())
	}
	val := func(prefix string) float64 { return rowValue(t, out, prefix) }
	if n := val("set-ups (n)"); n != 200 {
		t.Fatalf("%v set-ups of 200\n%s", n, out)
	}
	if c := val("close per set-up"); c != 1 {
		t.Errorf("close per set-up %v, want 1: the window must hold every close\n%s", c, out)
	}
	if a := val("accept per set-up"); a < 1 {
		t.Errorf("accept per set-up %v, want at least 1\n%s", a, out)
	}
	if r := val("read per set-up"); r < 2 {
		t.Errorf("read per set-up %v, want at least 2 (the request, the subscribe)\n%s", r, out)
	}
	// At least one send per set-up (the 101 response); through io_uring
	// several set-ups' sends can share one io_uring_enter.
	total, w, sends := val("syscalls per set-up (event loops)"), val("write syscalls per set-up"), val("sends per set-up")
	if sends < 1 || w <= 0 || w > sends || total <= w {
		t.Errorf("syscalls per set-up %v, write syscalls %v, sends %v\n%s", total, w, sends, out)
	}
}
