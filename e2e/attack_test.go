package e2e

// Attack scenarios against the built binary, from loopback addresses other
// than the allow-listed 127.0.0.1: every test checks both what the attacker
// sees on the wire and the audit line the gateway wrote.

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// subMsg is a native subscribe message.
func subMsg(id int, topic, user, tok string) map[string]any {
	return map[string]any{"op": "subscribe", "id": id, "topic": topic, "userId": user, "token": tok}
}

// A statically blocked address is reset at accept before a byte is read.
func TestAttackBlockedAtAccept(t *testing.T) {
	s := startServer(t, "bans: {block: [\"127.0.0.9\"], allow: [\"127.0.0.1\"]}\n")
	resetFrom(t, s, "127.0.0.9")
	e := s.waitAudit(map[string]any{"event": "conn_rejected", "stage": "accept", "reason": "blocked", "ip": "127.0.0.9"})
	if e["peer_ip"] != "127.0.0.9" || e["counted_prefix"] != "127.0.0.9/32" || e["severity"] != "warning" {
		t.Fatalf("audit %v", e)
	}
	// The neighbour is not blocked.
	upgradeFrom(t, s, "127.0.0.10")
	s.waitAudit(map[string]any{"event": "conn_open", "ip": "127.0.0.10"})
	if n := s.auditCount(map[string]any{"event": "conn_open", "ip": "127.0.0.9"}); n != 0 {
		t.Fatalf("%d conn_open from the blocked address", n)
	}
}

// nginx limit_req semantics: rate 1/s with burst 2 lets 3 connections in at
// once; the 4th reads the request and answers 429 with Retry-After.
func TestAttackConnRate(t *testing.T) {
	s := startServer(t, "limits: {conn_rate: {rate: 1, burst: 2}}\nbans: {allow: [\"127.0.0.1\"], maxretry: 100}\n")
	for i := 0; i < 3; i++ {
		rc := upgradeFrom(t, s, "127.0.0.5")
		rc.c.Close()
	}
	rep := refusedFrom(t, s, "127.0.0.5")
	if rep.status != 429 || rep.body["error"] != "conn_rate" || rep.header.Get("Retry-After") != "1" {
		t.Fatalf("4th connection: %d %v %q", rep.status, rep.header, rep.raw)
	}
	e := s.waitAudit(map[string]any{"event": "conn_rejected", "reason": "conn_rate", "ip": "127.0.0.5"})
	if e["code"] != 429.0 || e["counted_prefix"] != "127.0.0.5/32" {
		t.Fatalf("audit %v", e)
	}
	// Another address has its own bucket; the allow-list has none.
	upgradeFrom(t, s, "127.0.0.6")
	for i := 0; i < 8; i++ {
		upgradeFrom(t, s, "127.0.0.1").c.Close()
	}
	// Once the bucket refills (Retry-After: 1), the address is let in again.
	checkFor(t, 5*time.Second, func() error {
		rep, rc := handshakeOn(t, dialFrom(t, s, "127.0.0.5"), "", upgradeRequest(s))
		if rc == nil {
			return fmt.Errorf("still refused: %d", rep.status)
		}
		rc.c.Close()
		return nil
	})
}

// The per-address open-connection cap: the third concurrent connection
// gets 429 per_ip_connections; closing one frees the slot.
func TestAttackPerIPConnections(t *testing.T) {
	s := startServer(t, "limits: {per_ip_connections: 2}\n")
	a := upgradeFrom(t, s, "127.0.0.5")
	upgradeFrom(t, s, "127.0.0.5")
	rep := refusedFrom(t, s, "127.0.0.5")
	if rep.status != 429 || rep.body["error"] != "per_ip_connections" {
		t.Fatalf("3rd connection: %d %q", rep.status, rep.raw)
	}
	e := s.waitAudit(map[string]any{"event": "conn_rejected", "reason": "per_ip_connections", "ip": "127.0.0.5"})
	if e["code"] != 429.0 {
		t.Fatalf("audit %v", e)
	}
	a.c.Close()
	checkFor(t, 5*time.Second, func() error {
		rep, rc := handshakeOn(t, dialFrom(t, s, "127.0.0.5"), "", upgradeRequest(s))
		if rc == nil {
			return fmt.Errorf("slot not released: %d %s", rep.status, rep.raw)
		}
		return nil
	})
}

// Token brute force on one connection: each wrong token is auth_failed
// (token_unknown, weight 1); the fifth strike bans the address, closes its
// live connection with 1008 and resets every new one at accept. The ban is
// persisted: after a restart on the same data dir it is still in force,
// with less time left.
func TestBanTokenBruteForce(t *testing.T) {
	s := startServer(t, "")
	rc := upgradeFrom(t, s, "127.0.0.5")
	for i := 0; i < 5; i++ {
		rc.sendJSON(subMsg(i, "news", "u1", wrongToken(i)))
		if m := rc.readMsg(); m["op"] != "error" || m["code"] != "auth_failed" || m["id"] != float64(i) ||
			m["message"] != "authentication failed" {
			t.Fatalf("wrong token %d: %v", i, m)
		}
	}
	// The fifth strike banned the address: its live connection is closed.
	if msgs, code := rc.drain(); code != 1008 || len(msgs) != 0 {
		t.Fatalf("after the 5th strike: %v, close %d; want close 1008", msgs, code)
	}
	s.waitTotal(map[string]any{"event": "auth_failed", "reason": "token_unknown", "ip": "127.0.0.5"}, 5)
	ban := s.waitAudit(map[string]any{"event": "ban", "counted_prefix": "127.0.0.5/32"})
	if ban["severity"] != "critical" || ban["actor"] != "auto" || ban["ip"] != "127.0.0.5" || ban["reason"] != "token_unknown" ||
		ban["strikes"] != 5.0 || ban["count"] != nil { // one ban, its strikes apart
		t.Fatalf("ban audit %v", ban)
	}
	s.waitAudit(map[string]any{"event": "conn_close", "ip": "127.0.0.5", "reason": "banned", "code": 1008})

	resetFrom(t, s, "127.0.0.5")
	e := s.waitAudit(map[string]any{"event": "conn_rejected", "stage": "accept", "reason": "banned", "ip": "127.0.0.5"})
	if e["counted_prefix"] != "127.0.0.5/32" {
		t.Fatalf("audit %v", e)
	}
	before := s.bans()["127.0.0.5/32"]
	if before == nil || before["actor"] != "auto" || before["reason"] != "token_unknown" {
		t.Fatalf("GET /v1/bans: %v", s.bans())
	}
	remBefore, _ := time.ParseDuration(before["remaining"].(string))
	if remBefore <= 9*time.Minute || remBefore > 10*time.Minute {
		t.Fatalf("remaining %v, want about bantime 10m", remBefore)
	}

	// Restart on the same data dir: the ban is still there, same end.
	s.stop()
	s2 := startServerIn(t, "", s.data)
	var after map[string]any
	checkFor(t, 10*time.Second, func() error {
		after = s2.bans()["127.0.0.5/32"]
		if after == nil {
			return fmt.Errorf("ban lost across the restart: %v", s2.bans())
		}
		rem, _ := time.ParseDuration(after["remaining"].(string))
		if rem >= remBefore {
			return fmt.Errorf("remaining %v, was %v before the restart", rem, remBefore)
		}
		return nil
	})
	if after["until"] != before["until"] {
		t.Fatalf("until %v after restart, was %v", after["until"], before["until"])
	}
	n := s2.auditCount(map[string]any{"event": "conn_rejected", "reason": "banned", "ip": "127.0.0.5"})
	resetFrom(t, s2, "127.0.0.5")
	checkFor(t, 10*time.Second, func() error {
		if m := s2.auditCount(map[string]any{"event": "conn_rejected", "stage": "accept", "reason": "banned", "ip": "127.0.0.5"}); m <= n {
			return fmt.Errorf("no new conn_rejected banned after restart")
		}
		return nil
	})
	// Others are unaffected.
	upgradeFrom(t, s2, "127.0.0.6")
}

// A ban ends the attack at once: guesses pipelined on the connection
// behind the banning one are not evaluated. (msg_rate is raised so that
// only the ban can stop them.)
func TestBanStopsPipelinedGuesses(t *testing.T) {
	s := startServer(t, "limits: {msg_rate: {rate: 10000, burst: 10000}}\n")
	rc := upgradeFrom(t, s, "127.0.0.8")
	rec := &recConn{Conn: rc.c}
	rc.c = rec
	for i := 0; i < 200; i++ {
		rc.sendJSON(subMsg(i, "news", "u1", wrongToken(i)))
	}
	rc.c = rec.Conn
	if _, err := rc.c.Write(rec.buf); err != nil {
		t.Fatal(err)
	}
	msgs, code := rc.drain()
	s.waitAudit(map[string]any{"event": "ban", "counted_prefix": "127.0.0.8/32"})
	s.waitAudit(map[string]any{"event": "conn_close", "ip": "127.0.0.8"})
	// Let the summaries of folded events reach the file.
	var total int
	checkFor(t, 10*time.Second, func() error {
		total = s.auditTotal(map[string]any{"event": "auth_failed", "reason": "token_unknown"})
		if total < len(msgs) {
			return fmt.Errorf("%d auth_failed audited, %d replies seen", total, len(msgs))
		}
		return nil
	})
	if len(msgs) > 5 || total > 5 || code != 1008 {
		t.Fatalf("the address was banned on the 5th wrong token, yet %d guesses were answered auth_failed "+
			"and %d evaluated in all before the connection closed (close %d)", len(msgs), total, code)
	}
}

// Strikes are weighted by reason: a spent token from another address than
// its redeemer's is a suspected theft and bans at once (a reconnect from
// the same address weighs 1: TestTokenReconnectVersusTheft); a schema
// violation weighs 2, so two do not ban and the third does.
func TestBanWeights(t *testing.T) {
	s := startServer(t, "")
	tok := s.token("42", "news")
	owner := upgradeFrom(t, s, "127.0.0.1")
	owner.sendJSON(subMsg(1, "news", "42", tok))
	if m := owner.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("owner: %v", m)
	}

	thief := upgradeFrom(t, s, "127.0.0.6")
	thief.sendJSON(subMsg(1, "news", "42", tok))
	msgs, code := thief.drain()
	if len(msgs) != 1 || msgs[0]["code"] != "auth_failed" || code != 1008 {
		t.Fatalf("stolen token: %v, close %d; want auth_failed then 1008", msgs, code)
	}
	s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_theft_suspected", "ip": "127.0.0.6", "token_fp": fp(tok)})
	ban := s.waitAudit(map[string]any{"event": "ban", "counted_prefix": "127.0.0.6/32"})
	if ban["reason"] != "token_theft_suspected" || ban["actor"] != "auto" {
		t.Fatalf("ban %v", ban)
	}

	// Schema abuse from another address.
	abuser := upgradeFrom(t, s, "127.0.0.7")
	bad := map[string]any{"op": "ping", "id": 1, "x": 1}
	for i := 0; i < 2; i++ {
		abuser.sendJSON(bad)
		if m := abuser.readMsg(); m["code"] != "bad_request" {
			t.Fatalf("schema violation %d: %v", i, m)
		}
	}
	if _, banned := s.bans()["127.0.0.7/32"]; banned {
		t.Fatal("banned after two schema violations (weight 4 < 5)")
	}
	abuser.sendJSON(bad)
	if _, code := abuser.drain(); code != 1008 {
		t.Fatalf("close %d after the third schema violation, want 1008", code)
	}
	ban = s.waitAudit(map[string]any{"event": "ban", "counted_prefix": "127.0.0.7/32"})
	if ban["reason"] != "schema_violation" {
		t.Fatalf("ban %v", ban)
	}
	// The token's owner is untouched.
	owner.sendJSON(map[string]any{"op": "ping", "id": 9})
	if m := owner.readMsg(); m["op"] != "pong" {
		t.Fatalf("owner: %v", m)
	}
}

// The allow-listed 127.0.0.1 brute forcing tokens is answered and audited
// but never counted: no ban, the connection stays open.
func TestBanAllowListedNeverBanned(t *testing.T) {
	s := startServer(t, "")
	rc := upgradeFrom(t, s, "127.0.0.1")
	for i := 0; i < 12; i++ {
		rc.sendJSON(subMsg(i, "news", "u1", wrongToken(i)))
		if m := rc.readMsg(); m["code"] != "auth_failed" || m["id"] != float64(i) {
			t.Fatalf("attempt %d: %v", i, m)
		}
	}
	rc.sendJSON(map[string]any{"op": "ping", "id": 99})
	if m := rc.readMsg(); m["op"] != "pong" {
		t.Fatalf("after 12 failures: %v", m)
	}
	s.waitTotal(map[string]any{"event": "auth_failed", "reason": "token_unknown", "ip": "127.0.0.1"}, 12)
	if n := s.auditCount(map[string]any{"event": "ban"}); n != 0 {
		t.Fatalf("%d ban events for an allow-listed address", n)
	}
	if b := s.bans(); len(b) != 0 {
		t.Fatalf("bans %v", b)
	}
	upgradeFrom(t, s, "127.0.0.1")
}

// Admin bans by API and CLI: audited with their actor, enforced at accept,
// closing live connections, and lifted again.
func TestBanAdmin(t *testing.T) {
	s := startServer(t, "")
	victim := upgradeFrom(t, s, "127.0.0.5")
	code, out := s.api("POST", "/v1/bans", `{"prefix":"127.0.0.0/24","for":"1h","reason":"range abuse","actor":"alice"}`)
	if code != 201 || out["prefix"] != "127.0.0.0/24" || out["actor"] != "alice via api@127.0.0.1" ||
		out["reason"] != "manual" || out["note"] != "range abuse" {
		t.Fatalf("POST /v1/bans: %d %v", code, out)
	}
	if _, c := victim.drain(); c != 1008 {
		t.Fatalf("live connection in the banned range: close %d, want 1008", c)
	}
	resetFrom(t, s, "127.0.0.5")
	// The allow-listed address inside the range still gets in.
	upgradeFrom(t, s, "127.0.0.1")
	// It cannot be banned on its own; nonsense is refused.
	if code, out := s.api("POST", "/v1/bans", `{"prefix":"127.0.0.1"}`); code != 409 || out["error"] != "allow_listed" {
		t.Fatalf("ban of an allow-listed address: %d %v", code, out)
	}
	if code, out := s.api("POST", "/v1/bans", `{"prefix":"not-an-ip"}`); code != 400 || out["error"] != "bad_request" {
		t.Fatalf("bad prefix: %d %v", code, out)
	}
	if code, out := s.api("POST", "/v1/bans", `{"prefix":"127.0.0.20","for":"-5m"}`); code != 400 || out["error"] != "bad_request" {
		t.Fatalf("negative duration: %d %v", code, out)
	}
	if code, out := s.api("DELETE", "/v1/bans/127.0.0.0%2F24?actor=bob", ""); code != 200 || out["removed"] != "127.0.0.0/24" {
		t.Fatalf("DELETE: %d %v", code, out)
	}
	upgradeFrom(t, s, "127.0.0.5")
	if code, out := s.api("DELETE", "/v1/bans/127.0.0.0%2F24", ""); code != 404 || out["error"] != "not_banned" {
		t.Fatalf("second DELETE: %d %v", code, out)
	}

	// The CLI, finding the gateway from the data dir.
	stdout, stderr, rc := portcullis(t, nil, "ban", "add", "127.0.0.6", "--for", "30m", "--reason", "cli-test", "--data", s.data)
	if rc != 0 || !strings.HasPrefix(stdout, "banned 127.0.0.6/32 until ") || !strings.Contains(stdout, `reason "cli-test"`) {
		t.Fatalf("ban add: exit %d %q %s", rc, stdout, stderr)
	}
	resetFrom(t, s, "127.0.0.6")
	stdout, stderr, rc = portcullis(t, nil, "ban", "list", "--data", s.data)
	if rc != 0 || !strings.Contains(stdout, "127.0.0.6/32") || !strings.Contains(stdout, "cli-test") {
		t.Fatalf("ban list: exit %d %q %s", rc, stdout, stderr)
	}
	stdout, stderr, rc = portcullis(t, nil, "ban", "rm", "127.0.0.6", "--data", s.data)
	if rc != 0 || strings.TrimSpace(stdout) != "unbanned 127.0.0.6/32" {
		t.Fatalf("ban rm: exit %d %q %s", rc, stdout, stderr)
	}
	upgradeFrom(t, s, "127.0.0.6")
	if stdout, _, rc = portcullis(t, nil, "ban", "list", "--data", s.data); rc != 0 || strings.TrimSpace(stdout) != "no bans in force" {
		t.Fatalf("ban list at the end: exit %d %q", rc, stdout)
	}

	got := s.waitAll(
		map[string]any{"event": "ban", "counted_prefix": "127.0.0.0/24"},
		map[string]any{"event": "conn_close", "ip": "127.0.0.5", "reason": "banned", "code": 1008},
		map[string]any{"event": "conn_rejected", "stage": "accept", "reason": "banned", "ip": "127.0.0.5"},
		map[string]any{"event": "unban", "counted_prefix": "127.0.0.0/24"},
		map[string]any{"event": "ban", "counted_prefix": "127.0.0.6/32", "ip": "127.0.0.6", "reason": "manual"},
		map[string]any{"event": "unban", "counted_prefix": "127.0.0.6/32"},
	)
	if e := got[0]; e["actor"] != "alice via api@127.0.0.1" || e["severity"] != "critical" || e["reason"] != "manual" ||
		!strings.HasPrefix(fmt.Sprint(e["detail"]), `"range abuse"; `) {
		t.Fatalf("ban audit %v", e)
	}
	if e := got[3]; e["actor"] != "bob via api@127.0.0.1" {
		t.Fatalf("unban audit %v", e)
	}
	if d := fmt.Sprint(got[4]["detail"]); !strings.HasPrefix(d, `"cli-test"; banned for 30m0s until `) {
		t.Fatalf("CLI ban detail %q", d)
	}
	if a, _ := got[4]["actor"].(string); !strings.HasPrefix(a, "cli") || !strings.HasSuffix(a, " via api@127.0.0.1") {
		t.Fatalf("CLI ban actor %q", got[4]["actor"])
	}
	if a, _ := got[5]["actor"].(string); !strings.HasPrefix(a, "cli") {
		t.Fatalf("CLI unban actor %q", got[5]["actor"])
	}
}

// Allow-listed addresses are never banned, "even inside a banned
// CIDR" (policy/bans.Config.Allowed). A manual ban of a range must not cut
// the allow-listed address's live connections either.
func TestBanRangeSparesAllowListedConnections(t *testing.T) {
	s := startServer(t, "")
	friend := upgradeFrom(t, s, "127.0.0.1")
	victim := upgradeFrom(t, s, "127.0.0.5")
	if code, out := s.api("POST", "/v1/bans", `{"prefix":"127.0.0.0/24","for":"1h"}`); code != 201 {
		t.Fatalf("POST /v1/bans: %d %v", code, out)
	}
	if _, c := victim.drain(); c != 1008 {
		t.Fatalf("banned client: close %d, want 1008", c)
	}
	// By the time the victim's close is in the trail every event loop has
	// run the disconnect.
	s.waitAudit(map[string]any{"event": "conn_close", "ip": "127.0.0.5", "reason": "banned"})
	friend.sendJSON(map[string]any{"op": "ping", "id": 1})
	op, p, err := friend.next()
	for err == nil && (op == 9 || op == 10) {
		op, p, err = friend.next()
	}
	if err != nil || op != 1 || !strings.Contains(string(p), `"pong"`) {
		t.Fatalf("allow-listed 127.0.0.1 lost its live connection to a range ban: op %d %q %v", op, p, err)
	}
	if n := s.auditCount(map[string]any{"event": "conn_close", "ip": "127.0.0.1", "reason": "banned"}); n != 0 {
		t.Fatalf("audit closed the allow-listed connection as banned")
	}
}

// Client address from trusted proxies only: the rightmost untrusted
// X-Forwarded-For hop; garbage keeps the proxy's address; a banned derived
// client gets 403 at the handshake; strikes count against the client, not
// the proxy.
func TestProxyForwardedFor(t *testing.T) {
	s := startServer(t, "trusted_proxies: [\"127.0.0.7\"]\n")
	xff := "X-Forwarded-For: 198.51.100.1, 203.0.113.9"
	viaProxy := upgradeFrom(t, s, "127.0.0.7", xff)
	// Trusted hops on the right are skipped.
	upgradeFrom(t, s, "127.0.0.7", "X-Forwarded-For: 203.0.113.50, 127.0.0.7")
	// The same header from an untrusted peer is ignored.
	upgradeFrom(t, s, "127.0.0.6", xff)
	// Garbage from the trusted proxy: audited, and the proxy's address used.
	upgradeFrom(t, s, "127.0.0.7", "X-Forwarded-For: <script>, 999.1.1.1")
	got := s.waitAll(
		map[string]any{"event": "conn_open", "ip": "203.0.113.9"},
		map[string]any{"event": "conn_open", "ip": "203.0.113.50", "peer_ip": "127.0.0.7"},
		map[string]any{"event": "conn_open", "ip": "127.0.0.6"},
		map[string]any{"event": "conn_rejected", "reason": "bad_client_ip"},
	)
	if e := got[0]; e["peer_ip"] != "127.0.0.7" || e["counted_prefix"] != "203.0.113.9/32" {
		t.Fatalf("conn_open via proxy %v", e)
	}
	if e := got[2]; e["peer_ip"] != "127.0.0.6" || e["counted_prefix"] != "127.0.0.6/32" {
		t.Fatalf("conn_open direct %v", e)
	}
	if n := s.auditCount(map[string]any{"event": "conn_open", "ip": "203.0.113.9", "peer_ip": "127.0.0.6"}); n != 0 {
		t.Fatal("untrusted peer's X-Forwarded-For believed")
	}
	bad := got[3]
	if bad["ip"] != "127.0.0.7" || bad["peer_ip"] != "127.0.0.7" || bad["stage"] != "handshake" {
		t.Fatalf("bad_client_ip audit %v", bad)
	}
	if s.auditCount(map[string]any{"event": "conn_open", "ip": "127.0.0.7", "peer_ip": "127.0.0.7", "conn": bad["conn"]}) != 1 {
		t.Fatal("the connection with a garbage forwarding header did not proceed as the proxy")
	}

	// Ban the derived client: its live connection closes, a new request
	// through the proxy gets 403 banned.
	if code, out := s.api("POST", "/v1/bans", `{"prefix":"203.0.113.9","for":"10m"}`); code != 201 {
		t.Fatalf("ban: %d %v", code, out)
	}
	if _, c := viaProxy.drain(); c != 1008 {
		t.Fatalf("banned client behind the proxy: close %d, want 1008", c)
	}
	rep := refusedFrom(t, s, "127.0.0.7", xff)
	if rep.status != 403 || rep.body["error"] != "banned" {
		t.Fatalf("banned client behind the proxy: %d %q", rep.status, rep.raw)
	}

	// Brute force through the proxy bans the client, not the proxy.
	rc := upgradeFrom(t, s, "127.0.0.7", "X-Forwarded-For: 203.0.113.20")
	for i := 0; i < 5; i++ {
		rc.sendJSON(subMsg(i, "news", "u", wrongToken(i)))
	}
	if _, c := rc.drain(); c != 1008 {
		t.Fatalf("brute force via proxy: close %d", c)
	}
	got = s.waitAll(
		map[string]any{"event": "conn_rejected", "reason": "banned", "ip": "203.0.113.9"},
		map[string]any{"event": "ban", "counted_prefix": "203.0.113.20/32"},
	)
	if e := got[0]; e["peer_ip"] != "127.0.0.7" || e["code"] != 403.0 || e["stage"] != "handshake" {
		t.Fatalf("banned-behind-proxy audit %v", e)
	}
	if e := got[1]; e["ip"] != "203.0.113.20" || e["actor"] != "auto" {
		t.Fatalf("ban %v", e)
	}
	if _, banned := s.bans()["127.0.0.7/32"]; banned {
		t.Fatal("the trusted proxy itself was banned")
	}
	upgradeFrom(t, s, "127.0.0.7", "X-Forwarded-For: 203.0.113.21")
}

// PROXY protocol v1 from a trusted proxy names the client; a missing
// header is 400 proxy_header; an untrusted peer is reset at accept.
func TestProxyProtocol(t *testing.T) {
	s := startServer(t, "proxy_protocol: true\ntrusted_proxies: [\"127.0.0.1\"]\n")
	hdr := "PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n"
	rep, rc := handshakeOn(t, dialFrom(t, s, "127.0.0.1"), hdr, upgradeRequest(s))
	if rc == nil {
		t.Fatalf("with PROXY header: %d %s", rep.status, rep.raw)
	}
	rc.sendJSON(map[string]any{"op": "ping", "id": 1})
	if m := rc.readMsg(); m["op"] != "pong" {
		t.Fatalf("ping: %v", m)
	}

	rep = refusedFrom(t, s, "127.0.0.1")
	if rep.status != 400 || rep.body["error"] != "proxy_header" {
		t.Fatalf("without PROXY header: %d %q", rep.status, rep.raw)
	}

	resetFrom(t, s, "127.0.0.8")

	// A banned client behind the PROXY header is refused at the handshake.
	if code, out := s.api("POST", "/v1/bans", `{"prefix":"203.0.113.66"}`); code != 201 {
		t.Fatalf("ban: %d %v", code, out)
	}
	rep, rc = handshakeOn(t, dialFrom(t, s, "127.0.0.1"), "PROXY TCP4 203.0.113.66 127.0.0.1 5555 80\r\n", upgradeRequest(s))
	if rc != nil || rep.status != 403 || rep.body["error"] != "banned" {
		t.Fatalf("banned client via PROXY: %+v", rep)
	}
	got := s.waitAll(
		map[string]any{"event": "conn_open", "ip": "203.0.113.7"},
		map[string]any{"event": "conn_rejected", "reason": "proxy_header", "code": 400},
		map[string]any{"event": "conn_rejected", "reason": "proxy_header", "ip": "127.0.0.8"},
		map[string]any{"event": "conn_rejected", "reason": "banned", "ip": "203.0.113.66", "peer_ip": "127.0.0.1"},
	)
	if e := got[0]; e["peer_ip"] != "127.0.0.1" || e["counted_prefix"] != "203.0.113.7/32" {
		t.Fatalf("conn_open %v", e)
	}
	if e := got[1]; e["ip"] != "127.0.0.1" || e["stage"] != "handshake" {
		t.Fatalf("missing header audit %v", e)
	}
	if e := got[2]; e["stage"] != "accept" {
		t.Fatalf("untrusted peer audit %v", e)
	}
	if e := got[3]; e["code"] != 403.0 || e["stage"] != "handshake" {
		t.Fatalf("banned via PROXY audit %v", e)
	}
}

// Origin allow-list: exact scheme, host and port (ASCII case and an
// explicit default port normalised); look-alikes are 403 bad_origin.
func TestOriginTricks(t *testing.T) {
	s := startServer(t, "origins: [\"https://app.example.com\"]\n")
	var bad []string
	for i, o := range []string{
		"https://app.example.com.evil.example",
		"https://app.example.com:8443",
		"http://app.example.com",
		"https://evil-app.example.com",
		"https://app.example.com@evil.example",
		"https://app.example.com.",
		"https://app.example.com/",
		"wss://app.example.com",
		"null",
		"",
	} {
		// One source address each: identical refusals from one address
		// beyond five a second are folded into a summary without detail.
		rep := refusedFrom(t, s, fmt.Sprintf("127.0.1.%d", i+1), "Origin: "+o)
		if rep.status != 403 || rep.body["error"] != "bad_origin" {
			t.Fatalf("Origin %q: %d %q", o, rep.status, rep.raw)
		}
		bad = append(bad, o)
	}
	checkFor(t, 10*time.Second, func() error {
		for _, o := range bad {
			if s.auditCount(map[string]any{"event": "conn_rejected", "reason": "bad_origin", "code": 403,
				"detail": fmt.Sprintf("origin %q", o), "stage": "handshake"}) != 1 {
				return fmt.Errorf("no bad_origin audit line for %q", o)
			}
		}
		return nil
	})
	// Two Origin headers, one of them good.
	rep := refusedFrom(t, s, "127.0.0.1", "Origin: https://app.example.com", "Origin: https://evil.example")
	if rep.status != 400 || rep.body["error"] != "bad_header" {
		t.Fatalf("two Origins: %d %q", rep.status, rep.raw)
	}
	n := s.auditCount(map[string]any{"event": "conn_open"})
	for _, o := range []string{"https://app.example.com", "https://APP.Example.com", "https://app.example.com:443"} {
		upgradeFrom(t, s, "127.0.0.1", "Origin: "+o)
	}
	// No Origin: a non-browser client, allowed by default.
	upgradeFrom(t, s, "127.0.0.1")
	checkFor(t, 5*time.Second, func() error {
		if m := s.auditCount(map[string]any{"event": "conn_open"}); m != n+4 {
			return fmt.Errorf("%d conn_open, want %d", m, n+4)
		}
		return nil
	})
}

// 100 connections race to redeem one token: exactly one wins.
func TestAttackTokenRace(t *testing.T) {
	s := startServer(t, "")
	tok := s.token("42", "news")
	const n = 100
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = upgradeFrom(t, s, "127.0.0.1")
	}
	start := make(chan struct{})
	results := make(chan string, n)
	var wg sync.WaitGroup
	for _, rc := range conns {
		wg.Add(1)
		go func(rc *rawConn) {
			defer wg.Done()
			<-start
			rc.sendJSON(subMsg(1, "news", "42", tok))
			for {
				op, p, err := rc.next()
				if err != nil {
					results <- "read error: " + err.Error()
					return
				}
				if op == 1 {
					results <- string(p)
					return
				}
			}
		}(rc)
	}
	close(start)
	wg.Wait()
	close(results)
	won, lost := 0, 0
	for r := range results {
		switch {
		case strings.Contains(r, `"op":"subscribed"`):
			won++
		case strings.Contains(r, `"code":"auth_failed"`):
			lost++
		default:
			t.Errorf("unexpected reply %q", r)
		}
	}
	if won != 1 || lost != n-1 {
		t.Fatalf("%d subscribed, %d auth_failed; want 1 and %d", won, lost, n-1)
	}
	// The first few replays are written out with the token's fingerprint,
	// the rest folded into a summary (count) for the same address.
	s.waitTotal(map[string]any{"event": "auth_failed", "reason": "token_replayed"}, n-1)
	if ok := s.auditCount(map[string]any{"event": "auth_ok"}); ok != 1 {
		t.Fatalf("%d auth_ok", ok)
	}
	s.waitAudit(map[string]any{"event": "auth_ok", "token_fp": fp(tok), "userId": "42", "topic": "news"})
	for _, e := range s.auditLines() {
		if e["event"] == "auth_failed" && e["count"] == nil && e["token_fp"] != fp(tok) {
			t.Fatalf("replay audited without the token fingerprint: %v", e)
		}
	}
}

// JSON over the size cap closes 1009; too deep and schema-violating
// messages get bad_request naming the JSON pointer, and the audit trail
// records where without the payload.
func TestAttackJSONLimits(t *testing.T) {
	s := startServer(t, "limits: {max_message_bytes: 4096, max_frame_bytes: 4096}\n")
	const secret = "SECRET-PAYLOAD-MARKER"

	// One frame over the cap.
	rc := upgradeFrom(t, s, "127.0.0.1")
	rc.sendJSON(`{"op":"ping","id":1,"pad":"` + strings.Repeat("x", 5000) + `"}`)
	if _, code := rc.drain(); code != 1009 {
		t.Fatalf("5000-byte message: close %d, want 1009", code)
	}
	// Fragments each under the cap, together over it.
	rc = upgradeFrom(t, s, "127.0.0.1")
	rc.frame(false, 1, []byte(`{"op":"ping","id":1,"pad":"`+strings.Repeat("y", 3000)), true)
	rc.frame(true, 0, []byte(strings.Repeat("y", 3000)+`"}`), true)
	if _, code := rc.drain(); code != 1009 {
		t.Fatalf("fragmented 6000-byte message: close %d, want 1009", code)
	}

	rc = upgradeFrom(t, s, "127.0.0.1")
	deep := `{"op":"ping","id":2,"x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`
	rc.sendJSON(deep)
	if m := rc.readMsg(); m["op"] != "error" || m["code"] != "bad_request" {
		t.Fatalf("deep: %v", m)
	}

	// The client learns which field is wrong, except an unexpected field's
	// name (attacker-chosen text is never echoed); the audit line has the
	// JSON pointer.
	cases := []struct {
		msg     string
		id      float64
		says    string
		pointer string
	}{
		{`{"op":"subscribe","id":3,"topic":"news","userId":"u","token":"tok-` + secret + `","evil":"` + secret + `"}`, 3,
			"unexpected field in subscribe message", "/evil"},
		{`{"op":"subscribe","id":4,"topic":"news","userId":"u","token":["` + secret + `"]}`, 4,
			"token must be of type string", "/token"},
		{`{"op":"subscribe","id":5,"topic":{"x":"` + secret + `"},"userId":"u","token":"t"}`, 5,
			"topic must be of type string", "/topic"},
	}
	for _, c := range cases {
		rc.sendJSON(c.msg)
		if m := rc.readMsg(); m["op"] != "error" || m["code"] != "bad_request" || m["id"] != c.id || m["message"] != c.says {
			t.Fatalf("%s: reply %v, want bad_request %q", c.msg, m, c.says)
		}
	}
	rc.sendJSON(map[string]any{"op": "ping", "id": 6})
	if m := rc.readMsg(); m["op"] != "pong" {
		t.Fatalf("connection after bad messages: %v", m)
	}

	s.waitAll(
		map[string]any{"event": "message_rejected", "reason": "frame_too_large", "code": 1009},
		map[string]any{"event": "message_rejected", "reason": "message_too_large", "code": 1009},
		map[string]any{"event": "message_rejected", "reason": "too_deep"},
	)
	checkFor(t, 10*time.Second, func() error {
		for _, c := range cases {
			n := 0
			for _, l := range s.auditLines() {
				if l["event"] == "message_rejected" && l["reason"] == "schema_violation" &&
					strings.HasSuffix(fmt.Sprint(l["detail"]), " at "+c.pointer) {
					n++
				}
			}
			if n != 1 {
				return fmt.Errorf("%d schema_violation audit lines naming %s, want 1", n, c.pointer)
			}
		}
		return nil
	})
	raw, _ := os.ReadFile(filepath.Join(s.data, "audit", "audit.log"))
	if strings.Contains(string(raw), secret) {
		t.Fatal("the audit trail contains message payload")
	}
}

// A {userId} rule: user 42's token cannot read user 43's topic.
func TestAttackOtherUsersTopic(t *testing.T) {
	s := startServer(t, "topics: [{match: \"user.{userId}.**\", subscribe: token}]\n")
	tok := s.token("42")
	rc := upgradeFrom(t, s, "127.0.0.1")
	rc.sendJSON(subMsg(1, "user.43.inbox", "42", tok))
	if m := rc.readMsg(); m["op"] != "error" || m["code"] != "forbidden" || m["id"] != 1.0 {
		t.Fatalf("user 42 → user.43.inbox: %v", m)
	}
	e := s.waitAudit(map[string]any{"event": "subscribe_denied", "reason": "topic_other_user", "topic": "user.43.inbox"})
	if e["userId"] != "42" || e["token_fp"] != fp(tok) || e["severity"] != "notice" {
		t.Fatalf("audit %v", e)
	}
	// Wildcards are not topics.
	for i, topic := range []string{"user.*.inbox", "user.**", "user.43.inbox.**"} {
		rc.sendJSON(subMsg(10+i, topic, "42", tok))
		if m := rc.readMsg(); m["op"] != "error" {
			t.Fatalf("subscribe %q: %v", topic, m)
		}
	}
	// Claiming to be user 43 with 42's token: a token problem.
	tok2 := s.token("42")
	rc2 := upgradeFrom(t, s, "127.0.0.1")
	rc2.sendJSON(subMsg(2, "user.43.inbox", "43", tok2))
	if m := rc2.readMsg(); m["code"] != "auth_failed" || m["message"] != "authentication failed" {
		t.Fatalf("userId 43 with 42's token: %v", m)
	}
	s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_user_mismatch", "token_fp": fp(tok2), "userId": "43"})
	if n := s.publish("user.43.inbox", `{"secret":1}`); n != 0 {
		t.Fatalf("user 43's topic delivered to %d subscribers", n)
	}
	// The token still serves its own user on the connection that redeemed it.
	rc.sendJSON(subMsg(3, "user.42.inbox", "42", tok))
	if m := rc.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("user.42.inbox: %v", m)
	}
}

// tokens.source jwt: a valid HS256 token subscribes; alg none, expiry,
// a replayed jti, a wrong key or algorithm are auth_failed with the precise
// reason in the audit trail; the store's minting endpoint is 409.
func TestJWTAttacks(t *testing.T) {
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	secret := make([]byte, 40)
	rand.Read(secret)
	for i := range secret {
		secret[i] = alnum[int(secret[i])%len(alnum)]
	}
	sf := filepath.Join(t.TempDir(), "jwt.secret")
	if err := os.WriteFile(sf, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, fmt.Sprintf("tokens: {source: jwt, jwt: {algorithms: [HS256], secret_file: %q}}\n", sf))
	now := time.Now()
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	claims := func(jti string, exp time.Time) jwt.MapClaims {
		return jwt.MapClaims{"sub": "42", "exp": exp.Unix(), "jti": jti, "topics": []string{"news"}}
	}
	good := sign(jwt.SigningMethodHS256, secret, claims("j-1", now.Add(5*time.Minute)))
	rc := upgradeFrom(t, s, "127.0.0.1")
	rc.sendJSON(subMsg(1, "news", "42", good))
	if m := rc.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("valid JWT: %v", m)
	}
	s.waitAudit(map[string]any{"event": "auth_ok", "userId": "42", "topic": "news"})
	if n := s.publish("news", `{"n":1}`); n != 1 {
		t.Fatalf("delivered %d", n)
	}

	otherKey := []byte(strings.Repeat("k", 40))
	cases := []struct {
		name, tok, topic, reason string
	}{
		{"replayed token", good, "news", "token_replayed"},
		{"same jti, new signature", sign(jwt.SigningMethodHS256, secret, claims("j-1", now.Add(4*time.Minute))), "news", "token_replayed"},
		{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("j-2", now.Add(5*time.Minute))), "news", "token_invalid"},
		{"expired", sign(jwt.SigningMethodHS256, secret, claims("j-3", now.Add(-time.Hour))), "news", "token_expired"},
		{"wrong key", sign(jwt.SigningMethodHS256, otherKey, claims("j-4", now.Add(5*time.Minute))), "news", "token_invalid"},
		{"HS512 not allowed", sign(jwt.SigningMethodHS512, secret, claims("j-5", now.Add(5*time.Minute))), "news", "token_invalid"},
		{"topic not in claims", sign(jwt.SigningMethodHS256, secret, claims("j-6", now.Add(5*time.Minute))), "sport", "token_topic_mismatch"},
		{"garbage", "eyJhbGciOiJIUzI1NiJ9.e30.AAAA", "news", "token_invalid"},
	}
	rc2 := upgradeFrom(t, s, "127.0.0.1")
	want := map[string]int{}
	for i, c := range cases {
		rc2.sendJSON(subMsg(i, c.topic, "42", c.tok))
		if m := rc2.readMsg(); m["code"] != "auth_failed" || m["message"] != "authentication failed" || m["id"] != float64(i) {
			t.Fatalf("%s: %v", c.name, m)
		}
		want[c.reason]++
	}
	checkFor(t, 10*time.Second, func() error {
		for r, n := range want {
			if got := s.auditCount(map[string]any{"event": "auth_failed", "reason": r, "ip": "127.0.0.1"}); got != n {
				return fmt.Errorf("%d auth_failed %s lines, want %d", got, r, n)
			}
		}
		return nil
	})
	s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_replayed", "token_fp": fp(good)})
	if code, out := s.api("POST", "/v1/tokens", `{"userId":"42"}`); code != 409 || out["error"] != "tokens_from_site" {
		t.Fatalf("POST /v1/tokens with jwt source: %d %v", code, out)
	}
	raw, _ := os.ReadFile(filepath.Join(s.data, "audit", "audit.log"))
	if strings.Contains(string(raw), good) || strings.Contains(string(raw), string(secret)) {
		t.Fatal("audit trail holds a token or the secret in clear")
	}
}

// A burst of 100 pings with msg_rate 5/s burst 5: six pongs (the bucket),
// then ten rate_limited errors, then close 1008.
func TestFloodMessages(t *testing.T) {
	s := startServer(t, "limits: {msg_rate: {rate: 5, burst: 5}}\n")
	rc := upgradeFrom(t, s, "127.0.0.1")
	var buf []byte
	saved := rc.c
	rec := &recConn{Conn: saved}
	rc.c = rec
	for i := 0; i < 100; i++ {
		rc.sendJSON(map[string]any{"op": "ping", "id": i})
	}
	buf = rec.buf
	rc.c = saved
	if _, err := saved.Write(buf); err != nil {
		t.Fatal(err)
	}
	msgs, code := rc.drain()
	pongs, limited := 0, 0
	for _, m := range msgs {
		switch {
		case m["op"] == "pong":
			if limited > 0 {
				t.Fatalf("pong after rate_limited: %v", msgs)
			}
			if m["id"] != float64(pongs) {
				t.Fatalf("pong %v out of order", m)
			}
			pongs++
		case m["op"] == "error" && m["code"] == "rate_limited":
			limited++
		default:
			t.Fatalf("unexpected %v", m)
		}
	}
	if pongs < 6 || pongs > 7 || limited != 10 || code != 1008 {
		t.Fatalf("%d pongs, %d rate_limited, close %d; want 6, 10, 1008", pongs, limited, code)
	}
	// Ten rate_limited answers and the closing one; identical rejections
	// beyond the first five per second are folded into a summary.
	s.waitTotal(map[string]any{"event": "message_rejected", "reason": "msg_rate"}, 11)
	s.waitAudit(map[string]any{"event": "conn_close", "reason": "msg_rate", "code": 1008})
}

// recConn records writes instead of sending them, so that many frames go
// out in one write.
type recConn struct {
	net.Conn
	buf []byte
}

func (r *recConn) Write(p []byte) (int, error) {
	r.buf = append(r.buf, p...)
	return len(p), nil
}
