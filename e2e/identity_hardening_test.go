package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Identities and topics cannot be confused: a userId is one topic segment
// at minting (API and CLI) and in every client protocol, so no user can
// own a name that reaches into another user's namespace, and a {userId}
// rule refuses another user's topics.
func TestIdentityUserIDIsOneSegment(t *testing.T) {
	s := startServer(t, "topics: [{match: \"user.{userId}.**\", subscribe: token}]\ndefault: token\n")

	// Minting: 400 naming the rule, audited; the plain id mints.
	code, out := s.api("POST", "/v1/tokens", `{"userId":"alice.smith"}`)
	if code != 400 || out["error"] != "bad_request" || !strings.Contains(fmt.Sprint(out["message"]), "one topic segment") {
		t.Fatalf("mint alice.smith: %d %v", code, out)
	}
	s.waitAudit(map[string]any{"event": "admin", "reason": "bad_request", "code": 400})
	_, stderr, exit := portcullis(t, nil, "token", "issue", "--user", "alice.smith", "--data", s.data)
	if exit != 1 || !strings.Contains(stderr, "one topic segment") {
		t.Fatalf("token issue --user alice.smith: exit %d, %s", exit, stderr)
	}
	alice := s.token("alice")

	// A client claiming "alice.smith" is refused by the schema, before any
	// token is looked at: the token stays unspent.
	rc := upgradeFrom(t, s, "127.0.0.40")
	rc.sendJSON(subMsg(1, "user.alice.smith.inbox", "alice.smith", alice))
	if m := rc.readMsg(); m["op"] != "error" || m["code"] != "bad_request" || m["id"] != 1.0 ||
		!strings.Contains(fmt.Sprint(m["message"]), "userId") {
		t.Fatalf("userId alice.smith: %v", m)
	}
	e := s.waitAudit(map[string]any{"event": "message_rejected", "ip": "127.0.0.40", "reason": "schema_violation"})
	if !strings.Contains(fmt.Sprint(e["detail"]), "/userId") || e["token_fp"] != nil {
		t.Fatalf("audit %v", e)
	}
	// The same through WAMP v1's seed topic and WAMP v2's authid.
	v1, _ := v1Open(t, s)
	v1.sendJSON(wampMsg(5, seed("user.alice.smith.inbox", "alice.smith", alice)))
	if code := v1.closeCode(); code != 1008 {
		t.Fatalf("WAMP v1 seed with userId alice.smith: close %d, want 1008", code)
	}
	if _, reply := v2Open(t, s, "alice.smith", alice); reply[0] != 3.0 || reply[2] != "wamp.error.authentication_failed" {
		t.Fatalf("WAMP v2 authid alice.smith: %v", reply)
	}
	s.waitTotal(map[string]any{"event": "message_rejected", "reason": "schema_violation", "ip": "127.0.0.1"}, 2)

	// alice's own namespace is hers; another user's is not, root included.
	rc.sendJSON(subMsg(2, "user.bob.inbox", "alice", alice))
	if m := rc.readMsg(); m["code"] != "forbidden" {
		t.Fatalf("alice → user.bob.inbox: %v", m)
	}
	rc.sendJSON(subMsg(3, "user.alice.inbox", "alice", alice))
	if m := rc.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("alice → user.alice.inbox: %v", m)
	}
	s.waitAll(
		map[string]any{"event": "subscribe_denied", "reason": "topic_other_user", "topic": "user.bob.inbox", "userId": "alice", "token_fp": fp(alice)},
		map[string]any{"event": "subscribe", "topic": "user.alice.inbox", "userId": "alice"},
	)
}

// user.{userId}.** covers its root: under default: token, carol's token
// cannot read user.bob, bob's can; config check warns (exit 0) where a
// user namespace still falls through to the default.
func TestIdentityUserNamespaceRoot(t *testing.T) {
	s := startServer(t, "topics: [{match: \"news\"}, {match: \"user.{userId}.**\", subscribe: token}]\ndefault: token\n")
	carol, bob := s.token("carol"), s.token("bob")

	c := upgradeFrom(t, s, "127.0.0.41")
	c.sendJSON(subMsg(1, "user.bob", "carol", carol))
	if m := c.readMsg(); m["op"] != "error" || m["code"] != "forbidden" {
		t.Fatalf("carol → user.bob: %v", m)
	}
	e := s.waitAudit(map[string]any{"event": "subscribe_denied", "reason": "topic_other_user", "topic": "user.bob"})
	if e["userId"] != "carol" || e["token_fp"] != fp(carol) || e["ip"] != "127.0.0.41" {
		t.Fatalf("audit %v", e)
	}
	b := upgradeFrom(t, s, "127.0.0.42")
	b.sendJSON(subMsg(1, "user.bob", "bob", bob))
	if m := b.readMsg(); m["op"] != "subscribed" || m["topic"] != "user.bob" {
		t.Fatalf("bob → user.bob: %v", m)
	}
	s.waitAudit(map[string]any{"event": "subscribe", "topic": "user.bob", "userId": "bob"})
	if n := s.publish("user.bob", `{"to":"bob"}`); n != 1 {
		t.Fatalf("user.bob delivered to %d subscribers, want bob only", n)
	}
	if m := b.readMsg(); m["op"] != "event" || m["topic"] != "user.bob" {
		t.Fatalf("bob: %v", m)
	}

	// config check: the rule above is safe; user.{userId}.inbox alone
	// leaves user.X and user.X.other to default: token.
	dir := t.TempDir()
	check := func(name, yaml string) (string, int) {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		out, stderr, code := portcullis(t, nil, "config", "check", path)
		return out + stderr, code
	}
	if out, code := check("safe.yaml", "topics: [{match: \"user.{userId}.**\"}]\ndefault: token\n"); code != 0 || strings.Contains(out, "warning") {
		t.Fatalf("safe config: exit %d\n%s", code, out)
	}
	out, code := check("leaky.yaml", "topics: [{match: \"user.{userId}.inbox\"}]\ndefault: token\n")
	if code != 0 || !strings.Contains(out, "leaky.yaml: warning: topics[0]") || !strings.Contains(out, "user.{userId}") ||
		!strings.Contains(out, "default: token") || !strings.Contains(out, "leaky.yaml: ok") {
		t.Fatalf("leaky config: exit %d, want 0 with a warning\n%s", code, out)
	}
	if out, code := check("denied.yaml", "topics: [{match: \"user.{userId}.inbox\"}]\ndefault: deny\n"); code != 0 || strings.Contains(out, "warning") {
		t.Fatalf("default deny: exit %d\n%s", code, out)
	}
}

// A spent token presented again from the address and as the user that
// redeemed it is a reconnect: token_replayed, weight 1, no ban after two.
// From another address it is a stolen token: token_theft_suspected,
// critical, both addresses in the trail, the thief banned at once. The
// client sees auth_failed either way.
func TestTokenReconnectVersusTheft(t *testing.T) {
	s := startServer(t, "")
	tok := s.token("bob", "news")
	const office, thief = "127.0.0.50", "127.0.0.51"

	owner := upgradeFrom(t, s, office)
	owner.sendJSON(subMsg(1, "news", "bob", tok))
	if m := owner.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("owner: %v", m)
	}
	// Two reconnects with the same token from the office.
	var again []*rawConn
	for i := 0; i < 2; i++ {
		rc := upgradeFrom(t, s, office)
		rc.sendJSON(subMsg(1, "news", "bob", tok))
		if m := rc.readMsg(); m["code"] != "auth_failed" || m["message"] != "authentication failed" {
			t.Fatalf("reconnect %d: %v", i, m)
		}
		again = append(again, rc)
	}
	replay := map[string]any{"event": "auth_failed", "reason": "token_replayed", "ip": office, "userId": "bob",
		"token_fp": fp(tok), "severity": "warning", "redeemed_ip": office}
	s.waitTotal(replay, 2)
	for _, e := range s.auditLines() {
		if matches(e, replay) && e["redeemed_ago_s"] == nil {
			t.Fatalf("replay without seconds since redemption: %v", e)
		}
	}
	if _, banned := s.bans()[office+"/32"]; banned {
		t.Fatal("the office was banned for two reconnects")
	}
	stillServed(t, again)
	e := theftBanned(t, s, thief, office, tok)
	if e["counted_prefix"] != thief+"/32" {
		t.Fatalf("theft audit %v", e)
	}
	if _, banned := s.bans()[thief+"/32"]; !banned {
		t.Fatal("thief not in the ban list")
	}

	// WAMP v2: the ticket is the token; from 127.0.0.1 (allow-listed, so
	// audited but never banned) it is a theft too, and the client sees
	// ABORT authentication_failed.
	if _, reply := v2Open(t, s, "bob", tok); reply[0] != 3.0 || reply[2] != "wamp.error.authentication_failed" {
		t.Fatalf("WAMP v2 stolen ticket: %v", reply)
	}
	s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_theft_suspected", "ip": "127.0.0.1",
		"severity": "critical", "redeemed_ip": office, "userId": "bob"})

	// The owner keeps its subscription through all of it.
	if n := s.publish("news", `{"n":1}`); n != 1 {
		t.Fatalf("news delivered to %d, want the owner", n)
	}
	if m := owner.readMsg(); m["op"] != "event" {
		t.Fatalf("owner: %v", m)
	}
}

// stillServed checks that every connection whose reconnect was refused
// as a replay is still open and answering.
func stillServed(t *testing.T, again []*rawConn) {
	t.Helper()
	for i, rc := range again {
		rc.sendJSON(map[string]any{"op": "ping", "id": 7})
		if m := rc.readMsg(); m["op"] != "pong" {
			t.Fatalf("reconnect %d after its refusal: %v", i, m)
		}
	}
}

// theftBanned presents tok, redeemed by bob from office, from thief: the
// client sees auth_failed then 1008, the trail a critical
// token_theft_suspected naming both addresses and an automatic ban of the
// thief alone, whose next connection is reset. It returns the theft line
// for the caller's own checks.
func theftBanned(t *testing.T, s *server, thief, office, tok string) map[string]any {
	t.Helper()
	th := upgradeFrom(t, s, thief)
	th.sendJSON(subMsg(1, "news", "bob", tok))
	msgs, code := th.drain()
	if len(msgs) != 1 || msgs[0]["code"] != "auth_failed" || msgs[0]["message"] != "authentication failed" || code != 1008 {
		t.Fatalf("thief: %v, close %d; want auth_failed then 1008", msgs, code)
	}
	got := s.waitAll(
		map[string]any{"event": "auth_failed", "reason": "token_theft_suspected", "ip": thief},
		map[string]any{"event": "ban", "counted_prefix": thief + "/32"},
	)
	e := got[0]
	if e["severity"] != "critical" || e["redeemed_ip"] != office || e["userId"] != "bob" || e["token_fp"] != fp(tok) ||
		e["redeemed_ago_s"] == nil || e["redeemed_ago_s"].(float64) < 0 {
		t.Fatalf("theft audit %v", e)
	}
	if got[1]["reason"] != "token_theft_suspected" || got[1]["actor"] != "auto" {
		t.Fatalf("ban %v", got[1])
	}
	resetFrom(t, s, thief)
	if _, banned := s.bans()[office+"/32"]; banned {
		t.Fatal("the office was banned for the thief's attempt")
	}
	return e
}
