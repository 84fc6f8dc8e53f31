package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Audit details of a spent JWT (the jwt source says which case it is).
const (
	jwtReplayDetail = "jti already redeemed by another connection from the same address as the same user"
	jwtTheftDetail  = "jti already redeemed by a connection from another address"
)

// A spent JWT is judged like a spent store token. From the address that
// redeemed it, as its sub: a reconnect — token_replayed, a strike of
// weight 1 each (four do not ban), the connection stays open. From
// another address: token_theft_suspected, critical, naming the redeemer
// (redeemed_ip), and the thief's address is banned at once. A stolen
// WAMP v2 ticket is a theft too. The client sees only auth_failed.
func TestJWTTheftVersusReplay(t *testing.T) {
	sf, secret := jwtSecretFile(t)
	s := startServer(t, fmt.Sprintf("tokens: {source: jwt, jwt: {algorithms: [HS256], secret_file: %q}}\n", sf))
	tok := signJWT(t, secret, nil, jwt.MapClaims{"sub": "bob", "exp": time.Now().Add(5 * time.Minute).Unix(), "jti": "theft-1"})
	const office, thief = "127.0.4.1", "127.0.4.2"

	owner := upgradeFrom(t, s, office)
	owner.sendJSON(subMsg(1, "news", "bob", tok))
	if m := owner.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("owner: %v", m)
	}
	s.waitAudit(map[string]any{"event": "auth_ok", "ip": office, "userId": "bob", "token_fp": fp(tok)})

	// Four reconnects from the office with the same token.
	before := s.strikes()
	var again []*rawConn
	for i := 0; i < 4; i++ {
		rc := upgradeFrom(t, s, office)
		rc.sendJSON(subMsg(i, "news", "bob", tok))
		if m := rc.readMsg(); m["code"] != "auth_failed" || m["message"] != "authentication failed" || m["id"] != float64(i) {
			t.Fatalf("reconnect %d: %v", i, m)
		}
		again = append(again, rc)
	}
	replay := map[string]any{"event": "auth_failed", "reason": "token_replayed", "ip": office, "userId": "bob",
		"token_fp": fp(tok), "severity": "warning", "redeemed_ip": office, "detail": jwtReplayDetail}
	s.waitTotal(replay, 4)
	for _, e := range s.auditLines() {
		if matches(e, replay) && e["redeemed_ago_s"] == nil {
			t.Fatalf("replay without seconds since redemption: %v", e)
		}
	}
	checkFor(t, 10*time.Second, func() error {
		if n := s.strikes() - before; n != 4 {
			return fmt.Errorf("%d strikes for four replays, want 4", n)
		}
		return nil
	})
	// Weight 1 under maxretry 5: four strikes, no ban (weight 2 would
	// have banned at the third).
	if _, banned := s.bans()[office+"/32"]; banned {
		t.Fatal("the office was banned for four reconnects")
	}
	stillServed(t, again)
	if e := theftBanned(t, s, thief, office, tok); e["detail"] != jwtTheftDetail {
		t.Fatalf("theft audit %v", e)
	}

	// WAMP v2: the JWT as a ticket from 127.0.0.1 (allow-listed: audited,
	// never banned) is a theft as well.
	if _, reply := v2Open(t, s, "bob", tok); reply[0] != 3.0 || reply[2] != "wamp.error.authentication_failed" {
		t.Fatalf("WAMP v2 stolen ticket: %v", reply)
	}
	s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_theft_suspected", "ip": "127.0.0.1",
		"severity": "critical", "redeemed_ip": office, "userId": "bob", "detail": jwtTheftDetail})

	// The owner keeps its subscription through all of it.
	owner.sendJSON(map[string]any{"op": "ping", "id": 9})
	if m := owner.readMsg(); m["op"] != "pong" {
		t.Fatalf("owner: %v", m)
	}
}

// After a restart the jti state file still knows who redeemed a token: a
// reconnect from that address is a replay, another address a theft.
func TestJWTTheftAfterRestart(t *testing.T) {
	sf, secret := jwtSecretFile(t)
	cfg := fmt.Sprintf("tokens: {source: jwt, jwt: {algorithms: [HS256], secret_file: %q}}\n", sf)
	data := filepath.Join(t.TempDir(), "d")
	tok := signJWT(t, secret, nil, jwt.MapClaims{"sub": "bob", "exp": time.Now().Add(5 * time.Minute).Unix(), "jti": "theft-restart"})
	const office, thief = "127.0.4.11", "127.0.4.12"

	s := startServerIn(t, cfg, data)
	rc := upgradeFrom(t, s, office)
	rc.sendJSON(subMsg(1, "news", "bob", tok))
	if m := rc.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("first redemption: %v", m)
	}
	s.stop()

	s = startServerIn(t, cfg, data)
	rc = upgradeFrom(t, s, office)
	rc.sendJSON(subMsg(2, "news", "bob", tok))
	if m := rc.readMsg(); m["code"] != "auth_failed" || m["message"] != "authentication failed" {
		t.Fatalf("reconnect after restart: %v", m)
	}
	s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_replayed", "ip": office,
		"redeemed_ip": office, "detail": jwtReplayDetail, "token_fp": fp(tok)})

	th := upgradeFrom(t, s, thief)
	th.sendJSON(subMsg(3, "news", "bob", tok))
	if msgs, code := th.drain(); len(msgs) != 1 || msgs[0]["code"] != "auth_failed" || code != 1008 {
		t.Fatalf("thief after restart: %v, close %d", msgs, code)
	}
	s.waitAll(
		map[string]any{"event": "auth_failed", "reason": "token_theft_suspected", "ip": thief, "severity": "critical",
			"redeemed_ip": office, "detail": jwtTheftDetail, "token_fp": fp(tok)},
		map[string]any{"event": "ban", "counted_prefix": thief + "/32", "reason": "token_theft_suspected"},
	)
	if _, banned := s.bans()[office+"/32"]; banned {
		t.Fatal("the office was banned")
	}
}

// A JWT refusal's audit line says which check failed (the client still
// learns nothing).
func TestJWTRefusalDetail(t *testing.T) {
	sf, secret := jwtSecretFile(t)
	s := startServer(t, fmt.Sprintf("tokens: {source: jwt, jwt: {algorithms: [HS256], secret_file: %q, audience: portcullis}}\n", sf))
	exp := time.Now().Add(5 * time.Minute).Unix()
	cases := []struct{ name, tok, reason, detail string }{
		{"wrong aud", signJWT(t, secret, nil, jwt.MapClaims{"sub": "42", "exp": exp, "jti": "d1", "aud": []string{"api"}}),
			"token_invalid", `aud ["api"] does not name tokens.jwt.audience`},
		{"bad signature", signJWT(t, []byte("another-secret-of-forty-characters-xxxxx"), nil,
			jwt.MapClaims{"sub": "42", "exp": exp, "jti": "d2", "aud": "portcullis"}),
			"token_invalid", "signature invalid"},
		{"expired", signJWT(t, secret, nil, jwt.MapClaims{"sub": "42", "exp": time.Now().Add(-time.Hour).Unix(), "jti": "d3", "aud": "portcullis"}),
			"token_expired", "exp passed"},
	}
	for i, c := range cases {
		ip := fmt.Sprintf("127.0.4.%d", 21+i)
		rc := upgradeFrom(t, s, ip)
		rc.sendJSON(subMsg(i, "news", "42", c.tok))
		if m := rc.readMsg(); m["code"] != "auth_failed" || m["message"] != "authentication failed" {
			t.Fatalf("%s: client saw %v", c.name, m)
		}
		s.waitAudit(map[string]any{"event": "auth_failed", "reason": c.reason, "ip": ip, "token_fp": fp(c.tok), "detail": c.detail})
	}
}
