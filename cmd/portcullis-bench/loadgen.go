package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// perWorker is the most connections one load-generator process opens.
const perWorker = 7000

// gateway is the server child process.
type gateway struct {
	cmd      *exec.Cmd
	dir      string
	wsURL    string
	adminURL string
	key      string
	client   *http.Client
}

// benchConfig is the gateway config of every bench. The load generator
// opens thousands of connections from a few hundred source addresses, so
// the per-address limits are raised far above what it reaches: the
// connections still pass through the limiter tables and the ban lookup
// (the real pipeline, at its real cost) but are never refused by them.
// The flood bench bans its own flood prefix through the admin API. The
// message rate is raised for the stall bench's bystanders, which ping up
// to 100 times a second (pings count against it).
const benchConfig = `listen: "127.0.0.1:0"
admin: {listen: "127.0.0.1:0"}
limits:
  max_connections: 100000
  per_ip_connections: 100000
  conn_rate: {rate: 1000000, burst: 1000000}
  handshake_fail_rate: {rate: 1000000, burst: 1000000}
  msg_rate: {rate: 1000, burst: 1000}
tokens: {max_ttl: 1h}
bans: {maxretry: 1000}
`

var listenRE = regexp.MustCompile(`listening on (wss?)://(\S+?)(/\S*) \(WebSocket\), admin API on (\S+)`)

// startGateway starts gatewayExe with the bench config in a new temporary
// directory and waits until it listens.
func startGateway() (*gateway, error) { return startGatewayWith("") }

// startGatewayWith starts gatewayExe with the bench config and extra (YAML
// top-level keys, such as a cluster: block) appended.
func startGatewayWith(extra string) (*gateway, error) {
	dir, err := os.MkdirTemp("", "portcullis-bench")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "bench.yaml")
	yaml := benchConfig + extra
	if noIOURing {
		yaml += "io_uring: false\n"
	}
	if benchTLS != nil {
		yaml += fmt.Sprintf("tls: {cert_file: %q, key_file: %q}\n", benchTLS.certFile, benchTLS.keyFile)
	}
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		return nil, err
	}
	g := &gateway{dir: dir, client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	args := []string{"serve", "--config", cfg, "--data", filepath.Join(dir, "data"), "--log-level", "warn"}
	if p := os.Getenv("PORTCULLIS_BENCH_CPUPROFILE"); p != "" {
		args = append(args, "--cpuprofile", p)
	}
	if p := os.Getenv("PORTCULLIS_BENCH_MEMPROFILE"); p != "" {
		args = append(args, "--memprofile", p) // written on SIGUSR1
	}
	g.cmd = serverCommand(gatewayExe, args...)
	stderr, _ := g.cmd.StderrPipe()
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start gateway: %w", err)
	}
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m
			}
		}
	}()
	select {
	case m := <-found:
		g.wsURL, g.adminURL = m[1]+"://"+m[2]+m[3], m[4]
	case <-time.After(20 * time.Second):
		g.stop()
		return nil, errors.New("gateway did not start")
	}
	k, err := os.ReadFile(filepath.Join(dir, "data", "admin.key"))
	if err != nil {
		g.stop()
		return nil, err
	}
	g.key = strings.TrimSpace(string(k))
	return g, nil
}

func (g *gateway) stop() {
	interrupt(g.cmd, 15*time.Second)
	os.RemoveAll(g.dir)
}

func (g *gateway) post(path string, body any, out any) error {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", g.adminURL+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+g.key)
	resp, err := g.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %d %s", path, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// serverStats is the part of GET /v1/stats the benchmarks report.
type serverStats struct {
	Connections   int64  `json:"connections"`
	Accepted      uint64 `json:"accepted"`
	Rejected      uint64 `json:"rejected"`
	Goroutines    int    `json:"goroutines"`
	HeapLiveBytes uint64 `json:"heap_live_bytes"`
	HeapInuse     uint64 `json:"heap_inuse_bytes"`
	HeapSys       uint64 `json:"heap_sys_bytes"`
	HeapReleased  uint64 `json:"heap_released_bytes"`
	RuntimeSys    uint64 `json:"runtime_sys_bytes"`
	// Cluster is the node's view of its cluster; nil without one.
	Cluster *clusterStats `json:"cluster"`
	// MaxLoopStall is the longest event-loop turn since start
	// (time.Duration String form).
	MaxLoopStall string `json:"max_loop_stall"`
	// LoopTurns and Syscalls are nil from a gateway that does not report
	// them (gwstats.go).
	LoopTurns *loopTurns    `json:"loop_turns"`
	Syscalls  syscallCounts `json:"syscalls"`
}

// clusterStats is the part of /v1/stats "cluster" the benchmarks use.
type clusterStats struct {
	Node     string   `json:"node"`
	Nodes    []string `json:"nodes"`
	Degraded bool     `json:"degraded"`
	Sent     uint64   `json:"sent"`
	Received uint64   `json:"received"`
	Dropped  uint64   `json:"dropped"`
}

func (g *gateway) stats() serverStats {
	st, err := g.fetchStats()
	if err != nil {
		return serverStats{Goroutines: -1}
	}
	return st
}

// settled waits, at most within, until the gateway holds no more than
// conns connections (its closes are done), and returns its stats then.
func (g *gateway) settled(conns int64, within time.Duration) (serverStats, error) {
	end := time.Now().Add(within)
	for {
		st, err := g.fetchStats()
		if err != nil || st.Connections <= conns {
			return st, err
		}
		if time.Now().After(end) {
			return st, fmt.Errorf("the gateway still holds %d connections %v after the clients closed (%d before)", st.Connections, within, conns)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fetchStats reads GET /v1/stats.
func (g *gateway) fetchStats() (serverStats, error) {
	var st serverStats
	req, _ := http.NewRequest("GET", g.adminURL+"/v1/stats", nil)
	req.Header.Set("Authorization", "Bearer "+g.key)
	resp, err := g.client.Do(req)
	if err != nil {
		return st, fmt.Errorf("GET /v1/stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /v1/stats: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("GET /v1/stats: %w", err)
	}
	return st, nil
}

// mint returns n tokens for users u0…, bound to topic.
func (g *gateway) mint(n int, topic string) ([]string, error) {
	toks := make([]string, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var out struct{ Token string }
				if err := g.post("/v1/tokens", map[string]any{"userId": "u" + strconv.Itoa(i), "topics": []string{topic}, "ttl": "1h"}, &out); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					continue
				}
				toks[i] = out.Token
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return toks, first
}

// cpuTicks is a process's CPU time in clock ticks, split as the kernel
// accounts it: user space, and system calls (which on loopback include the
// receiving side's TCP work and wake-ups).
type cpuTicks struct{ user, sys int64 }

func (c cpuTicks) total() int64 { return c.user + c.sys }

func (c cpuTicks) sub(d cpuTicks) cpuTicks { return cpuTicks{c.user - d.user, c.sys - d.sys} }

// procStat reads VmRSS (KiB) and CPU time of pid.
func procStat(pid int) (rssKB int64, cpu cpuTicks, err error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, cpu, err
	}
	cpu, err = parseStatTicks(string(st))
	if err != nil {
		return 0, cpu, err
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, cpu, err
	}
	return parseRSS(string(status)), cpu, nil
}

// parseStatTicks returns utime and stime from a /proc/PID/stat line. The
// command name may contain spaces and parentheses, so fields count from the
// last ')'.
func parseStatTicks(s string) (cpuTicks, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return cpuTicks{}, errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return cpuTicks{}, errors.New("short /proc stat")
	}
	// After ')': state(0) ppid … utime is field 14 of the line → index 11 here.
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return cpuTicks{}, errors.New("bad utime/stime")
	}
	return cpuTicks{u, st}, nil
}

func parseRSS(status string) int64 { return statusKB(status, "VmRSS:") }

// statusKB returns the value in KiB of a field of /proc/PID/status, such as
// "RssFile:"; 0 when it is missing.
func statusKB(status, field string) int64 {
	for _, l := range strings.Split(status, "\n") {
		if strings.HasPrefix(l, field) {
			if f := strings.Fields(l); len(f) > 1 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n
			}
		}
	}
	return 0
}

// rssFileKB returns the file-backed part of a process's RSS in KiB: pages
// of the program text and other mapped files, shared with the page cache.
func rssFileKB(pid int) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	return statusKB(string(status), "RssFile:")
}

// ticksToMicros converts clock ticks (USER_HZ = 100 on Linux) to µs.
func ticksToMicros(t int64) float64 { return float64(t) * 10000 }

// percentile returns the p-th percentile (0–100) of sorted xs.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(sorted)-1))
	return sorted[i]
}

func progress(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "\r\033[K"+format, a...)
}

func sortFloats(xs []float64) { sort.Float64s(xs) }
