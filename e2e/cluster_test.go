package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/policy/redistest"
)

// redisProc is a redis-server a test runs on a loopback port of its own
// (policy/redistest: the one starter the unit tests use too), with nothing
// saved: a restart loses every key and subscription.
type redisProc struct {
	t *testing.T
	s *redistest.Server
}

// startRedisProc starts redis-server on a free loopback port (skipped with
// the install hint without it, failed under CI).
func startRedisProc(t *testing.T) *redisProc {
	t.Helper()
	return &redisProc{t: t, s: redistest.Start(t)}
}

func (r *redisProc) addr() string { return r.s.Addr }

// start starts it again, empty, after kill.
func (r *redisProc) start() { r.s.Restart(r.t) }

func (r *redisProc) kill() { r.s.Stop() }

// clusterOf returns the "cluster" object of a node's /v1/stats.
func clusterOf(s *server) map[string]any {
	s.t.Helper()
	code, st := s.api("GET", "/v1/stats", "")
	if code != 200 {
		s.t.Fatalf("stats: %d %v", code, st)
	}
	c, _ := st["cluster"].(map[string]any)
	if c == nil {
		s.t.Fatalf("stats without cluster: %v", st)
	}
	return c
}

// publishCluster publishes through s's API and returns its answer.
func publishCluster(s *server, topic, data string) map[string]any {
	s.t.Helper()
	code, out := s.api("POST", "/v1/publish", fmt.Sprintf(`{"topic":%q,"data":%s}`, topic, data))
	if code != 200 {
		s.t.Fatalf("publish: %d %v", code, out)
	}
	return out
}

// expectEvent reads the next message of rc and checks it is data on topic.
func expectEvent(t *testing.T, rc *rawConn, node, topic, data string) {
	t.Helper()
	m := rc.readMsg()
	if m["op"] != "event" || m["topic"] != topic || fmt.Sprint(m["data"]) != data {
		t.Fatalf("subscriber on %s got %v, want event %s on %s", node, m, data, topic)
	}
}

// TestClusterThreeNodes: three gateways on one Redis. A publication on A
// reaches the subscribers on B and C; with Redis killed mid-traffic each
// node keeps delivering to its own subscribers, audits cluster_degraded
// once (C, under on_redis_down: refuse, answers new connections 503);
// with Redis back each resubscribes, audits cluster_recovered, and
// cross-node delivery resumes. Every node's trail verifies.
func TestClusterThreeNodes(t *testing.T) {
	r := startRedisProc(t)
	names := []string{"a", "b", "c"}
	nodes := make([]*server, 3)
	for i, name := range names {
		down := "degrade"
		if name == "c" {
			down = "refuse"
		}
		nodes[i] = startServer(t, fmt.Sprintf("topics:\n  - match: news\n    subscribe: public\n"+
			"cluster:\n  node: %s\n  redis: {addrs: [%q], key_prefix: \"e2e:\"}\n  on_redis_down: %s\n", name, r.addr(), down))
	}
	a, b, c := nodes[0], nodes[1], nodes[2]

	// A second node named a does not start, and says why.
	dup := exec.Command(gwBinary(t), "serve", "--config", writeTemp(t, fmt.Sprintf(
		"listen: \"127.0.0.1:0\"\nadmin: {listen: \"127.0.0.1:0\"}\ncluster:\n  node: a\n  redis: {addrs: [%q], key_prefix: \"e2e:\"}\n", r.addr())),
		"--data", filepath.Join(t.TempDir(), "d"))
	out, err := dup.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `another running node is named "a"`) {
		t.Fatalf("a second node named a: %v\n%s", err, out)
	}

	subs := make([]*rawConn, 3)
	for i, s := range nodes {
		subs[i] = upgradeFrom(t, s, "127.0.0.1")
		subs[i].sendJSON(map[string]any{"op": "subscribe", "id": 1, "topic": "news"})
		if m := subs[i].readMsg(); m["op"] != "subscribed" {
			t.Fatalf("subscribe on %s: %v", names[i], m)
		}
	}
	for i, s := range nodes {
		checkFor(t, 10*time.Second, func() error {
			cl := clusterOf(s)
			if fmt.Sprint(cl["nodes"]) != "[a b c]" || cl["channels"] != 1.0 || cl["node"] != names[i] {
				return fmt.Errorf("%s's cluster view: %v", names[i], cl)
			}
			return nil
		})
		for _, other := range names {
			if other != names[i] {
				s.waitAudit(map[string]any{"event": "node_up", "detail": other})
			}
		}
	}

	// Publish on A: every node's subscriber gets it, A's once.
	res := publishCluster(a, "news", `"one"`)
	if res["delivered"] != 1.0 || res["nodes"] != 3.0 || res["degraded"] != false {
		t.Fatalf("publish on A: %v", res)
	}
	for i, rc := range subs {
		expectEvent(t, rc, names[i], "news", "one")
	}
	if res := publishCluster(b, "news", `"two"`); res["nodes"] != 3.0 {
		t.Fatalf("publish on B: %v", res)
	}
	for i, rc := range subs {
		expectEvent(t, rc, names[i], "news", "two")
	}

	// Redis killed mid-traffic.
	r.kill()
	for i, s := range nodes {
		checkFor(t, 10*time.Second, func() error {
			if cl := clusterOf(s); cl["degraded"] != true {
				return fmt.Errorf("%s not degraded: %v", names[i], cl)
			}
			return nil
		})
	}
	for i := range 20 {
		res := publishCluster(a, "news", strconv.Itoa(i))
		if res["delivered"] != 1.0 || res["degraded"] != true || res["nodes"] != 0.0 {
			t.Fatalf("publish on A while Redis is down: %v", res)
		}
	}
	for i := range 20 {
		expectEvent(t, subs[0], "a", "news", strconv.Itoa(i))
	}
	// C refuses new connections with 503, audited; B still admits.
	rep := refusedFrom(t, c, "127.0.0.9")
	if rep.status != 503 {
		t.Fatalf("C while Redis is down: HTTP %d %s", rep.status, rep.raw)
	}
	c.waitAudit(map[string]any{"event": "conn_rejected", "reason": "cluster_unavailable", "ip": "127.0.0.9", "code": 503})
	upgradeFrom(t, b, "127.0.0.9")

	// Redis back (empty): resubscribed, recovered, delivery across nodes.
	r.start()
	for i, s := range nodes {
		checkFor(t, 15*time.Second, func() error {
			if cl := clusterOf(s); cl["degraded"] != false || cl["channels"] != 1.0 {
				return fmt.Errorf("%s not recovered: %v", names[i], cl)
			}
			return nil
		})
		s.waitAudit(map[string]any{"event": "cluster_recovered", "severity": "notice"})
	}
	res = publishCluster(c, "news", `"three"`)
	if res["delivered"] != 1.0 || res["nodes"] != 3.0 || res["degraded"] != false {
		t.Fatalf("publish on C after recovery: %v", res)
	}
	for i, rc := range subs {
		expectEvent(t, rc, names[i], "news", "three")
	}
	upgradeFrom(t, c, "127.0.0.10")

	for i, s := range nodes {
		want := map[string]any{"event": "cluster_degraded", "severity": "critical"}
		if got := s.auditCount(want); got != 1 {
			t.Fatalf("%s audited cluster_degraded %d times, want once per episode", names[i], got)
		}
	}
	for _, s := range nodes {
		s.stop()
	}
	for i, s := range nodes {
		if out, code := audVerify(t, s.data); code != 0 {
			t.Fatalf("audit verify of %s: exit %d\n%s", names[i], code, out)
		}
	}
}

// writeTemp writes a config file into a fresh temp dir.
func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "portcullis.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
