package e2e

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwtSecretFile writes a random 40-character HS256 secret, mode 0600.
func jwtSecretFile(t *testing.T) (path string, secret []byte) {
	t.Helper()
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	secret = make([]byte, 40)
	rand.Read(secret)
	for i := range secret {
		secret[i] = alnum[int(secret[i])%len(alnum)]
	}
	path = filepath.Join(t.TempDir(), "jwt.secret")
	if err := os.WriteFile(path, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, secret
}

// signJWT signs claims with HS256 and the extra header fields.
func signJWT(t *testing.T, secret []byte, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A token redeemed before a restart is still spent after it: after a
// clean stop, and after a SIGKILL a moment after the redemption. The
// audit says token_replayed for the token's fingerprint.
func TestJWTHardeningReplayAfterRestart(t *testing.T) {
	sf, secret := jwtSecretFile(t)
	cfg := fmt.Sprintf("tokens: {source: jwt, jwt: {algorithms: [HS256], secret_file: %q}}\n", sf)
	data := filepath.Join(t.TempDir(), "d")
	now := time.Now()
	tokA := signJWT(t, secret, nil, jwt.MapClaims{"sub": "42", "exp": now.Add(10 * time.Minute).Unix(), "jti": "restart-a"})
	tokB := signJWT(t, secret, nil, jwt.MapClaims{"sub": "42", "exp": now.Add(10 * time.Minute).Unix(), "jti": "restart-b"})

	s := startServerIn(t, cfg, data)
	rc := upgradeFrom(t, s, "127.0.2.1")
	rc.sendJSON(subMsg(1, "news", "42", tokA))
	if m := rc.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("first redemption: %v", m)
	}
	s.stop()

	s = startServerIn(t, cfg, data)
	rc = upgradeFrom(t, s, "127.0.2.1")
	rc.sendJSON(subMsg(2, "news", "42", tokA))
	if m := rc.readMsg(); m["code"] != "auth_failed" || m["message"] != "authentication failed" {
		t.Fatalf("token A after a clean restart: %v", m)
	}
	s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_replayed", "ip": "127.0.2.1", "token_fp": fp(tokA)})

	rc.sendJSON(subMsg(3, "news", "42", tokB))
	if m := rc.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("token B: %v", m)
	}
	// The writer commits within milliseconds; half a second is generous.
	time.Sleep(500 * time.Millisecond)
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-s.done

	s = startServerIn(t, cfg, data)
	rc = upgradeFrom(t, s, "127.0.2.1")
	rc.sendJSON(subMsg(4, "news", "42", tokB))
	if m := rc.readMsg(); m["code"] != "auth_failed" {
		t.Fatalf("token B after SIGKILL: %v", m)
	}
	s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_replayed", "ip": "127.0.2.1", "token_fp": fp(tokB)})
}

// Tokens the site signed with the gateway's key but for another use or
// audience, or with claims this source refuses: the client sees only
// auth_failed, the trail token_invalid with the token's fingerprint, and
// each counts as a strike (three from one address ban it).
func TestJWTHardeningRefusals(t *testing.T) {
	sf, secret := jwtSecretFile(t)
	s := startServer(t, fmt.Sprintf("tokens: {source: jwt, jwt: {algorithms: [HS256], secret_file: %q, "+
		"audience: portcullis, issuer: \"https://site.example\"}}\n", sf))
	exp := time.Now().Add(5 * time.Minute).Unix()
	claims := func(jti string, mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "42", "exp": exp, "jti": jti, "aud": "portcullis", "iss": "https://site.example"}
		if mod != nil {
			mod(c)
		}
		return c
	}
	good := signJWT(t, secret, map[string]any{"typ": "portcullis+jwt"}, claims("ok", func(c jwt.MapClaims) {
		c["aud"] = []string{"api", "portcullis"}
	}))
	rc := upgradeFrom(t, s, "127.0.3.1")
	rc.sendJSON(subMsg(1, "news", "42", good))
	if m := rc.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("valid token (aud array, typ portcullis+jwt): %v", m)
	}

	cases := []struct{ name, tok string }{
		{"wrong aud", signJWT(t, secret, nil, claims("c1", func(c jwt.MapClaims) { c["aud"] = "api" }))},
		{"missing aud", signJWT(t, secret, nil, claims("c2", func(c jwt.MapClaims) { delete(c, "aud") }))},
		{"wrong iss", signJWT(t, secret, nil, claims("c3", func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }))},
		{"typ at+jwt", signJWT(t, secret, map[string]any{"typ": "at+jwt"}, claims("c4", nil))},
		{"topics null", signJWT(t, secret, nil, claims("c5", func(c jwt.MapClaims) { c["topics"] = nil }))},
		{"unknown crit", signJWT(t, secret, map[string]any{"crit": []string{"exp"}}, claims("c6", nil))},
		{"sub with a dot", signJWT(t, secret, nil, claims("c7", func(c jwt.MapClaims) { c["sub"] = "alice.smith" }))},
	}
	for i, c := range cases {
		ip := fmt.Sprintf("127.0.3.%d", 10+i)
		user := "42"
		if c.name == "sub with a dot" {
			user = "alice"
		}
		rc := upgradeFrom(t, s, ip)
		rc.sendJSON(subMsg(i, "news", user, c.tok))
		if m := rc.readMsg(); m["code"] != "auth_failed" || m["message"] != "authentication failed" || m["id"] != float64(i) {
			t.Fatalf("%s: client saw %v", c.name, m)
		}
		s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_invalid", "ip": ip, "token_fp": fp(c.tok)})
	}
	// A strike each (weight 2, maxretry 5): one refusal bans no one...
	if b := s.bans(); len(b) != 0 {
		t.Fatalf("bans after one refusal per address: %v", b)
	}
	// ...three from one address do.
	rc = upgradeFrom(t, s, "127.0.3.2")
	for i, c := range cases[:3] {
		rc.sendJSON(subMsg(i, "news", "42", c.tok))
		if m := rc.readMsg(); m["code"] != "auth_failed" {
			t.Fatalf("%s again: %v", c.name, m)
		}
	}
	checkFor(t, 10*time.Second, func() error {
		if b, ok := s.bans()["127.0.3.2/32"]; !ok || b["reason"] != "token_invalid" {
			return fmt.Errorf("bans %v, want 127.0.3.2/32 for token_invalid", s.bans())
		}
		return nil
	})
	raw, _ := os.ReadFile(filepath.Join(s.data, "audit", "audit.log"))
	if strings.Contains(string(raw), good) || strings.Contains(string(raw), string(secret)) {
		t.Fatal("audit trail holds a token or the secret in clear")
	}
}

// A secret_file readable by others stops serve at once: exit 1, and the
// message names the file and its mode.
func TestJWTHardeningSecretFileMode(t *testing.T) {
	sf, _ := jwtSecretFile(t)
	if err := os.Chmod(sf, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "portcullis.yaml")
	yaml := fmt.Sprintf("listen: \"127.0.0.1:0\"\nadmin: {listen: \"127.0.0.1:0\"}\n"+
		"tokens: {source: jwt, jwt: {algorithms: [HS256], secret_file: %q}}\n", sf)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gwBinary(t), "serve", "--config", cfg, "--data", filepath.Join(t.TempDir(), "d"))
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("serve did not exit within 20 s")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1; output:\n%s", err, out)
	}
	if !strings.Contains(string(out), sf) || !strings.Contains(string(out), "mode 0644") {
		t.Fatalf("message does not name the file and the mode:\n%s", out)
	}
}

// A full used-jti table: valid tokens with new jtis are refused (the
// client sees internal), one critical jti_table_full event says so, and
// once the held tokens lapse new ones are accepted again.
func TestJWTHardeningTableFull(t *testing.T) {
	sf, secret := jwtSecretFile(t)
	s := startServer(t, fmt.Sprintf("tokens: {source: jwt, max_entries: 3, jwt: {algorithms: [HS256], secret_file: %q}}\n", sf))
	now := time.Now()
	// Valid now thanks to the 30 s leeway; their entries lapse 6 s from now.
	soon := now.Add(-24 * time.Second).Unix()
	for i := range 3 {
		tok := signJWT(t, secret, nil, jwt.MapClaims{"sub": "42", "exp": soon, "jti": fmt.Sprintf("fill-%d", i)})
		rc := upgradeFrom(t, s, "127.0.0.1")
		rc.sendJSON(subMsg(i, "news", "42", tok))
		if m := rc.readMsg(); m["op"] != "subscribed" {
			t.Fatalf("filling token %d: %v", i, m)
		}
	}
	fresh := func(jti string) string {
		return signJWT(t, secret, nil, jwt.MapClaims{"sub": "42", "exp": now.Add(5 * time.Minute).Unix(), "jti": jti})
	}
	rc := upgradeFrom(t, s, "127.0.0.1")
	for i := range 2 {
		rc.sendJSON(subMsg(10+i, "news", "42", fresh(fmt.Sprintf("new-%d", i))))
		if m := rc.readMsg(); m["op"] != "error" || m["code"] != "internal" {
			t.Fatalf("new token %d on a full table: %v", i, m)
		}
	}
	s.waitAll(
		map[string]any{"event": "jti_table_full", "severity": "critical", "reason": "internal"},
		map[string]any{"event": "subscribe_denied", "reason": "internal"},
	)
	if n := s.auditCount(map[string]any{"event": "jti_table_full"}); n != 1 {
		t.Fatalf("%d jti_table_full events for one episode, want 1", n)
	}
	var m map[string]any
	checkFor(t, 15*time.Second, func() error {
		time.Sleep(400 * time.Millisecond) // well under msg_rate
		rc.sendJSON(subMsg(20, "news", "42", fresh(fmt.Sprintf("later-%d", time.Now().UnixNano()))))
		if m = rc.readMsg(); m["op"] != "subscribed" {
			return fmt.Errorf("new token after the lapse: %v", m)
		}
		return nil
	})
	s.waitAudit(map[string]any{"event": "jti_table_recovered", "severity": "notice"})
	if n := s.auditCount(map[string]any{"event": "jti_table_full"}); n != 1 {
		t.Fatalf("%d jti_table_full events, want 1", n)
	}
}

// allow_missing_origin: false refuses an upgrade without Origin (403,
// bad_origin in the trail, a strike) and still admits a same-host Origin;
// true admits the request without Origin.
func TestJWTHardeningAllowMissingOrigin(t *testing.T) {
	s := startServer(t, "allow_missing_origin: false\n")
	rep := refusedFrom(t, s, "127.0.4.1")
	if rep.status != 403 || rep.body["error"] == nil {
		t.Fatalf("no Origin, allow_missing_origin false: %d %s", rep.status, rep.raw)
	}
	s.waitAudit(map[string]any{"event": "conn_rejected", "reason": "bad_origin", "ip": "127.0.4.1", "code": 403})
	upgradeFrom(t, s, "127.0.4.2", "Origin: http://"+s.wsAddr)

	s2 := startServer(t, "allow_missing_origin: true\n")
	upgradeFrom(t, s2, "127.0.4.1")
	if n := s2.auditCount(map[string]any{"event": "conn_rejected", "reason": "bad_origin"}); n != 0 {
		t.Fatalf("%d bad_origin refusals with allow_missing_origin true", n)
	}
}
