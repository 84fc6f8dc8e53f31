package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Clustered runs (fanout --nodes N, idle --cluster): one redis-server
// started for the run, and N servers of one kind on it. Portcullis nodes
// get a cluster: block (docs/CLUSTER.md) with distinct node names and data
// directories; Centrifugo nodes its Redis engine on another database and
// key prefix of the same redis-server.

// benchKeyPrefix is the cluster.redis.key_prefix of the bench's gateways.
const benchKeyPrefix = "portcullis-bench:"

// centrifugoRedisDB is the Redis database of the Centrifugo nodes (the
// gateways use 0). Pub/sub channels are not per database in Redis, so
// Centrifugo's key prefix keeps its channels apart too.
const centrifugoRedisDB = 1

// redisServer is a redis-server the bench started on a free loopback port,
// in a temporary directory, with nothing saved.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
	dir  string
}

// redisBinary returns redis-server on PATH, or Debian's.
func redisBinary() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		return "/usr/bin/redis-server", nil
	}
	return "", errors.New("redis-server not found (clustered runs start one): apt-get install redis-server")
}

// startRedis starts redis-server on a free loopback port and waits until
// it answers PING.
func startRedis() (*redisServer, error) {
	bin, err := redisBinary()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("redis-server port: %w", err)
	}
	dir, err := os.MkdirTemp("", "portcullis-bench-redis")
	if err != nil {
		return nil, fmt.Errorf("redis-server directory: %w", err)
	}
	r := &redisServer{addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir}
	r.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	if err := r.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		reply, err := r.do("PING")
		if err == nil && reply == "PONG" {
			fmt.Fprintf(os.Stderr, "portcullis-bench: redis-server on %s\n", r.addr)
			return r, nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			r.stop()
			return nil, fmt.Errorf("redis-server on %s did not answer PING within 10 s (%v); its log:\n%s", r.addr, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *redisServer) pid() int { return r.cmd.Process.Pid }

// stop kills the server and removes its directory.
func (r *redisServer) stop() {
	if r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
	}
	os.RemoveAll(r.dir)
}

// do sends one inline command on a new connection and returns its reply:
// a simple string, an integer's digits, or a bulk string's contents.
func (r *redisServer) do(command string) (string, error) {
	c, err := net.DialTimeout("tcp", r.addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, command+"\r\n"); err != nil {
		return "", fmt.Errorf("redis %s: %w", command, err)
	}
	reply, err := readRESP(bufio.NewReader(c))
	if err != nil {
		return "", fmt.Errorf("redis %s: %w", command, err)
	}
	return reply, nil
}

// readRESP reads one reply that is a simple string, an integer (as its
// digits), an error or a bulk string: all the bench asks for.
func readRESP(rd *bufio.Reader) (string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(rd, b); err != nil {
			return "", err
		}
		return string(b[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// commandStats is the calls of each command since the server started
// (INFO commandstats), by lower-case command name.
type commandStats map[string]int64

// commandStats reads INFO commandstats.
func (r *redisServer) commandStats() (commandStats, error) {
	s, err := r.do("INFO commandstats")
	if err != nil {
		return nil, err
	}
	return parseCommandStats(s)
}

// parseCommandStats parses INFO commandstats: lines such as
// "cmdstat_publish:calls=100,usec=250,usec_per_call=2.50,...".
func parseCommandStats(info string) (commandStats, error) {
	st := commandStats{}
	for _, l := range strings.Split(info, "\n") {
		l = strings.TrimSpace(l)
		name, rest, ok := strings.Cut(strings.TrimPrefix(l, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(l, "cmdstat_") {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("INFO commandstats: %q: %w", l, err)
				}
				st[strings.ToLower(name)] = n
			}
		}
	}
	return st, nil
}

// since returns the calls made after earlier, in total and of one command,
// leaving out the INFO calls the bench makes itself.
func (s commandStats) since(earlier commandStats, command string) (total, of int64) {
	for name, n := range s {
		if name == "info" {
			continue
		}
		d := n - earlier[name]
		total += d
		if name == command {
			of = d
		}
	}
	return total, of
}

// nodeSet is several servers of one kind on one redis-server, measured as
// one target: node 1 mints and publishes; subscribers are spread over all
// nodes (connectWith); CPU is summed over all (cpuOf).
type nodeSet struct {
	nodes []target
	redis *redisServer
}

func (s *nodeSet) name() string                               { return s.nodes[0].name() + "×" + strconv.Itoa(len(s.nodes)) }
func (s *nodeSet) pid() int                                   { return s.nodes[0].pid() }
func (s *nodeSet) url() string                                { return s.nodes[0].url() }
func (s *nodeSet) protocol() string                           { return s.nodes[0].protocol() }
func (s *nodeSet) mint(n int, topic string) ([]string, error) { return s.nodes[0].mint(n, topic) }
func (s *nodeSet) publish(topic string, data json.RawMessage) error {
	return s.nodes[0].publish(topic, data)
}
func (s *nodeSet) stats() serverStats { return s.nodes[0].stats() }
func (s *nodeSet) stop() {
	for _, n := range s.nodes {
		n.stop()
	}
}

// members returns the servers subscribers of t are spread over: t's nodes,
// or t itself.
func members(t target) []target {
	if s, ok := t.(*nodeSet); ok {
		return s.nodes
	}
	return []target{t}
}

// cpuOf returns the CPU time of every process of t, summed.
func cpuOf(t target) (cpuTicks, error) {
	var sum cpuTicks
	for _, m := range members(t) {
		_, c, err := procStat(m.pid())
		if err != nil {
			return sum, fmt.Errorf("%s: %w", m.name(), err)
		}
		sum.user += c.user
		sum.sys += c.sys
	}
	return sum, nil
}

// startGatewayNodes starts n gateways as one cluster on r: node names
// bench-1…, each with a data directory of its own.
func startGatewayNodes(n int, r *redisServer) (*nodeSet, error) {
	if _, err := r.do("FLUSHALL"); err != nil {
		return nil, err
	}
	s := &nodeSet{redis: r}
	for i := 1; i <= n; i++ {
		g, err := startGatewayWith(fmt.Sprintf("cluster:\n  node: bench-%d\n  redis: {addrs: [%q], key_prefix: %q}\n",
			i, r.addr, benchKeyPrefix))
		if err != nil {
			s.stop()
			return nil, fmt.Errorf("gateway node %d: %w", i, err)
		}
		s.nodes = append(s.nodes, g)
	}
	return s, s.waitGatewayMembership()
}

// waitGatewayMembership waits until every node lists all n nodes in its
// /v1/stats, so no publication is made before the cluster is whole.
func (s *nodeSet) waitGatewayMembership() error {
	deadline := time.Now().Add(20 * time.Second)
	for _, t := range s.nodes {
		g := t.(*gateway)
		for {
			st := g.stats()
			if st.Cluster != nil && len(st.Cluster.Nodes) == len(s.nodes) {
				break
			}
			if time.Now().After(deadline) {
				s.stop()
				return fmt.Errorf("gateway cluster: a node sees %v, want %d nodes", st.Cluster, len(s.nodes))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// startCentrifugoNodes starts n Centrifugo nodes with the Redis engine on
// r, sharing one token secret and API key.
func startCentrifugoNodes(bin string, n int, r *redisServer) (*nodeSet, error) {
	s := &nodeSet{redis: r}
	o := centrifugoOptions{secret: randomHex(32), apiKey: randomHex(16), redisAddr: r.addr}
	for i := 1; i <= n; i++ {
		c, err := startCentrifugoWith(bin, o)
		if err != nil {
			s.stop()
			return nil, fmt.Errorf("centrifugo node %d: %w", i, err)
		}
		s.nodes = append(s.nodes, c)
	}
	// Centrifugo nodes find each other over Redis; subscriptions are per
	// channel, so delivery does not wait for that.
	return s, nil
}

// redisCounts is the commands a publishing phase costs the redis-server
// (INFO commandstats), with the commands the nodes send while idle
// (presence renewals, announcements, pings) measured beforehand so that
// they can be taken out.
type redisCounts struct {
	idleFrom, from, to commandStats
	idleFor, phase     time.Duration
	phaseStart         time.Time
}

// idle measures the idle nodes' commands over d; the phase starts after.
func (c *redisCounts) idle(r *redisServer, d time.Duration) error {
	a, err := r.commandStats()
	if err != nil {
		return err
	}
	start := time.Now()
	time.Sleep(d)
	b, err := r.commandStats()
	if err != nil {
		return err
	}
	c.idleFor = time.Since(start)
	c.idleFrom, c.from, c.phaseStart = a, b, time.Now()
	return nil
}

// end ends the phase.
func (c *redisCounts) end(r *redisServer) error {
	to, err := r.commandStats()
	if err != nil {
		return err
	}
	c.to, c.phase = to, time.Since(c.phaseStart)
	return nil
}

// report sets the phase's Redis figures per publication in r.
func (c *redisCounts) report(r *result, pubs int) {
	total, publish := c.to.since(c.from, "publish")
	idleTotal, idlePublish := c.from.since(c.idleFrom, "publish")
	scale := c.phase.Seconds() / max(c.idleFor.Seconds(), 1e-3)
	per := func(x float64) float64 { return x / float64(max(pubs, 1)) }
	r.set("Redis commands per publication", "n", per(float64(total)))
	r.set("  net of the idle nodes' commands", "n", per(float64(total)-scale*float64(idleTotal)))
	r.set("  of which PUBLISH, net", "n", per(float64(publish)-scale*float64(idlePublish)))
}
