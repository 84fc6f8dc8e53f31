package e2e

import (
	"encoding/json"
	"fmt"
	"mime"
	"strings"
	"sync"
	"testing"
	"time"
)

// startClusterNodes starts one gateway per name on Redis r, each with
// extra config.
func startClusterNodes(t *testing.T, r *redisProc, extra string, names ...string) []*server {
	t.Helper()
	nodes := make([]*server, len(names))
	for i, name := range names {
		nodes[i] = startServer(t, fmt.Sprintf("%scluster:\n  node: %s\n  redis: {addrs: [%q], key_prefix: \"e2e:\"}\n",
			extra, name, r.addr()))
	}
	return nodes
}

// verifyTrails stops every node and checks that each trail verifies.
func verifyTrails(t *testing.T, nodes []*server) {
	t.Helper()
	for _, s := range nodes {
		s.stop()
	}
	for i, s := range nodes {
		if out, code := audVerify(t, s.data); code != 0 {
			t.Fatalf("audit verify of node %d: exit %d\n%s", i, code, out)
		}
	}
}

// A token minted on A, presented at once by 100 connections spread over
// three nodes (from 100 addresses): exactly one redeems it; every other
// is refused as spent, on its own node's trail, with who redeemed it.
func TestClusterStateTokenRedeemedOnce(t *testing.T) {
	r := startRedisProc(t)
	nodes := startClusterNodes(t, r, "", "a", "b", "c")
	tok := nodes[0].token("u1", "news")

	const n = 100
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = upgradeFrom(t, nodes[i%3], fmt.Sprintf("127.0.1.%d", i+1))
	}
	msg, _ := json.Marshal(subMsg(1, "news", "u1", tok))
	frame := maskedFrame(true, 1, msg)
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, n)
	for _, rc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := rc.c.Write(frame); err != nil {
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("send: %v", err)
	}
	ok, refused := 0, 0
	for i, rc := range conns {
		m := rc.readMsg()
		switch {
		case m["op"] == "subscribed":
			ok++
		case m["op"] == "error" && m["code"] == "auth_failed":
			refused++
		default:
			t.Fatalf("connection %d: %v", i, m)
		}
	}
	if ok != 1 || refused != n-1 {
		t.Fatalf("%d subscribed, %d refused; want exactly one of %d", ok, refused, n)
	}
	// The trails agree: one auth_ok in the cluster, 99 refusals as a
	// spent token, each naming the redeeming address.
	authOK, spent := 0, 0
	for _, s := range nodes {
		s.waitAudit(map[string]any{"event": "conn_open"})
	}
	checkFor(t, 10*time.Second, func() error {
		authOK, spent = 0, 0
		for _, s := range nodes {
			for _, e := range s.auditLines() {
				switch {
				case e["event"] == "auth_ok":
					authOK++
				case e["event"] == "auth_failed" && (e["reason"] == "token_replayed" || e["reason"] == "token_theft_suspected"):
					if ip, _ := e["redeemed_ip"].(string); !strings.HasPrefix(ip, "127.0.1.") {
						return fmt.Errorf("refusal without the redeemer: %v", e)
					}
					spent++
				}
			}
		}
		if authOK != 1 || spent != n-1 {
			return fmt.Errorf("%d auth_ok, %d spent refusals in the trails", authOK, spent)
		}
		return nil
	})
	for _, s := range nodes {
		for _, e := range s.auditLines() {
			if raw, _ := json.Marshal(e); strings.Contains(string(raw), tok) {
				t.Fatalf("the token is in a trail: %s", raw)
			}
		}
	}
	verifyTrails(t, nodes)
}

// A brute force against A bans the address; B and C enforce the ban
// (refused at accept) and list it; lifting it on C lifts it everywhere.
func TestClusterStateBanReachesEveryNode(t *testing.T) {
	r := startRedisProc(t)
	nodes := startClusterNodes(t, r, "bans: {allow: [\"127.0.0.1\"]}\n", "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	const ip = "127.0.0.60"

	rc := upgradeFrom(t, a, ip)
	for i := 0; i < 5; i++ {
		rc.sendJSON(subMsg(i, "news", "u1", wrongToken(i)))
		if m := rc.readMsg(); m["code"] != "auth_failed" {
			t.Fatalf("wrong token %d: %v", i, m)
		}
	}
	if _, code := rc.drain(); code != 1008 {
		t.Fatalf("banned connection closed with %d, want 1008", code)
	}
	banA := a.waitAudit(map[string]any{"event": "ban", "ip": ip, "actor": "auto"})
	for _, s := range []*server{b, c} {
		got := s.waitAudit(map[string]any{"event": "ban", "ip": ip, "actor": "auto", "severity": "notice"})
		if d, _ := got["detail"].(string); !strings.HasPrefix(d, "ban of node a applied here") {
			t.Fatalf("applied ban line: %v", got)
		}
		ta, _ := time.Parse(time.RFC3339Nano, banA["time"].(string))
		tb, _ := time.Parse(time.RFC3339Nano, got["time"].(string))
		t.Logf("ban on a → enforced on %s after %s", got["node"], tb.Sub(ta))
		resetFrom(t, s, ip)
		if _, ok := s.bans()[ip+"/32"]; !ok {
			t.Fatalf("%s does not list the ban: %v", got["node"], s.bans())
		}
	}
	// Strikes stay per node: nothing but the ban reached B.
	if n := b.auditCount(map[string]any{"event": "auth_failed", "ip": ip}); n != 0 {
		t.Fatalf("b saw %d auth failures", n)
	}

	// A manual ban on B, lifted on C: every node follows.
	if code, out := b.api("POST", "/v1/bans", `{"prefix":"127.0.2.0/24","for":"1h","reason":"range abuse","actor":"alice"}`); code != 201 && code != 200 {
		t.Fatalf("ban on b: %d %v", code, out)
	}
	for _, s := range []*server{a, c} {
		got := s.waitAudit(map[string]any{"event": "ban", "counted_prefix": "127.0.2.0/24"})
		if actor, _ := got["actor"].(string); !strings.HasPrefix(actor, "alice") {
			t.Fatalf("applied manual ban: %v", got)
		}
	}
	if code, out := c.api("DELETE", "/v1/bans/127.0.2.0%2F24?actor=bob", ""); code != 200 {
		t.Fatalf("unban on c: %d %v", code, out)
	}
	for _, s := range []*server{a, b} {
		s.waitAudit(map[string]any{"event": "unban", "counted_prefix": "127.0.2.0/24"})
		checkFor(t, 5*time.Second, func() error {
			if _, ok := s.bans()["127.0.2.0/24"]; ok {
				return fmt.Errorf("still listed")
			}
			return nil
		})
		upgradeFrom(t, s, "127.0.2.9")
	}
	verifyTrails(t, nodes)
}

// An attack on all three nodes fires the ban rule on each: one email
// leaves the cluster, the other nodes drop theirs as sent_by_other_node.
func TestClusterStateOneAlertMail(t *testing.T) {
	smtp := startSMTP(t)
	r := startRedisProc(t)
	nodes := startClusterNodes(t, r, fmt.Sprintf(`bans: {allow: ["127.0.0.1"]}
alerting:
  smtp: {host: "127.0.0.1", port: %d, from: "portcullis@gw.example", to: ["oncall@site.example"], tls: none, timeout: 5s}
  group_wait: 2s
`, smtp.port), "a", "b", "c")
	for i, s := range nodes {
		rc := upgradeFrom(t, s, fmt.Sprintf("127.0.0.%d", 70+i))
		for j := 0; j < 5; j++ {
			rc.sendJSON(subMsg(j, "news", "u1", wrongToken(j)))
			if m := rc.readMsg(); m["code"] != "auth_failed" {
				t.Fatalf("wrong token %d on node %d: %v", j, i, m)
			}
		}
		if _, code := rc.drain(); code != 1008 {
			t.Fatalf("node %d: banned connection closed with %d", i, code)
		}
	}
	checkFor(t, 20*time.Second, func() error {
		if len(smtp.messages(t)) == 0 {
			return fmt.Errorf("no email")
		}
		return nil
	})
	// Each node's group has flushed and been decided once its outbox is empty.
	for _, s := range nodes {
		checkFor(t, 20*time.Second, func() error {
			if st := s.statsOf("alerts"); st["pending"] != 0.0 || st["queued"] == 0.0 {
				return fmt.Errorf("alerts %v", st)
			}
			return nil
		})
	}
	got := smtp.messages(t)
	if len(got) != 1 {
		t.Fatalf("%d emails for one attack over three nodes, want 1", len(got))
	}
	subject, _ := new(mime.WordDecoder).DecodeHeader(got[0].Header.Get("Subject"))
	if !strings.HasPrefix(subject, "[portcullis CRITICAL]") {
		t.Fatalf("subject %q", subject)
	}
	// The decisions reach the trails (written in batches).
	checkFor(t, 10*time.Second, func() error {
		sent, elsewhere := 0, 0
		for _, s := range nodes {
			sent += s.auditCount(map[string]any{"event": "alert_sent", "reason": "sent"})
			elsewhere += s.auditCount(map[string]any{"event": "alert_sent", "reason": "sent_by_other_node"})
		}
		if sent != 1 || elsewhere != 2 {
			return fmt.Errorf("%d sent, %d sent_by_other_node; want 1 and 2", sent, elsewhere)
		}
		return nil
	})
	if got := smtp.messages(t); len(got) != 1 {
		t.Fatalf("%d emails in the end, want 1", len(got))
	}
	verifyTrails(t, nodes)
}
