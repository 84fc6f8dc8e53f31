package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/policy/sqltest"
)

// sqlSchema returns the CREATE statements docs/TOKENS-SQL.md gives for k:
// the gateway is tested against the table the docs tell sites to create.
func sqlSchema(t testing.TB, k sqltest.Kind) []string {
	t.Helper()
	return sqltest.DocSchema(t, k, "../docs/TOKENS-SQL.md")
}

// sqlToken inserts a row the way the docs tell a site to (the database
// hashes the token) and returns the token; expired: already expired.
func sqlToken(t *testing.T, db *sqltest.Server, user string, expired bool) string {
	t.Helper()
	var raw [24]byte
	_, _ = rand.Read(raw[:])
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	q := "INSERT INTO portcullis_tokens (token_sha256, user_id, topics, expires_at) VALUES (SHA2(?, 256), ?, ?, UTC_TIMESTAMP() + INTERVAL 60 SECOND)"
	if expired {
		q = strings.Replace(q, "+ INTERVAL 60", "- INTERVAL 1", 1)
	}
	if db.Kind == sqltest.Postgres {
		q = "INSERT INTO portcullis_tokens (token_sha256, user_id, topics, expires_at) VALUES (encode(sha256(convert_to($1, 'UTF8')), 'hex'), $2, $3, (now() AT TIME ZONE 'UTC') + interval '60 seconds')"
		if expired {
			q = strings.Replace(q, "+ interval '60 seconds'", "- interval '1 second'", 1)
		}
	}
	if _, err := db.Open(t).Exec(q, tok, user, `["news","user.`+user+`.**"]`); err != nil {
		t.Fatalf("insert a token row: %v", err)
	}
	return tok
}

// TestSQLTokens runs the gateway on tokens from MariaDB and from
// PostgreSQL rows: one redemption, the replay refused, 50 connections
// racing for one token and one winning, an expired row refused, the
// database stopped (refused, fail closed, one critical event) and back
// (tokens work again), and an intact trail at the end.
func TestSQLTokens(t *testing.T) {
	for _, k := range []sqltest.Kind{sqltest.MariaDB, sqltest.Postgres} {
		t.Run(string(k), func(t *testing.T) {
			db := sqltest.Start(t, k)
			db.Exec(t, sqlSchema(t, k)...)
			dsn := filepath.Join(t.TempDir(), "tokens.dsn")
			if err := os.WriteFile(dsn, []byte(db.DSN+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			s := startServer(t, "tokens:\n  source: sql\n  sql:\n    driver: "+string(k)+"\n    dsn_file: "+dsn+
				"\n    timeout: 300ms\n    max_open: 8\ntopics:\n  - match: news\n    subscribe: token\n")
			if strings.Contains(s.stderr.String(), db.DSN) {
				t.Fatal("serve printed the DSN")
			}
			sub := func(rc *rawConn, id int, tok string) map[string]any {
				rc.sendJSON(map[string]any{"op": "subscribe", "id": id, "topic": "news", "userId": "42", "token": tok})
				return rc.readMsg()
			}

			// Redeemed once; the same connection may use it for another topic.
			tok := sqlToken(t, db, "42", false)
			a := dialRaw(t, s)
			if m := sub(a, 1, tok); m["op"] != "subscribed" {
				t.Fatalf("subscribe with a fresh row's token: %v", m)
			}
			a.sendJSON(map[string]any{"op": "subscribe", "id": 2, "topic": "user.42.inbox", "userId": "42", "token": tok})
			if m := a.readMsg(); m["op"] != "subscribed" {
				t.Fatalf("second topic on the redeeming connection: %v", m)
			}
			s.waitAudit(map[string]any{"event": "auth_ok", "topic": "news", "userId": "42"})

			// Replayed on another connection: refused, token_replayed.
			b := dialRaw(t, s)
			if m := sub(b, 1, tok); m["op"] != "error" || m["code"] != "auth_failed" {
				t.Fatalf("replay: %v", m)
			}
			s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_replayed", "redeemed_ip": "127.0.0.1"})

			// Expired row: refused, token_expired.
			if m := sub(b, 2, sqlToken(t, db, "42", true)); m["op"] != "error" || m["code"] != "auth_failed" {
				t.Fatalf("expired row: %v", m)
			}
			s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_expired"})

			// 50 connections, one token, sent at once: exactly one wins.
			race := sqlToken(t, db, "42", false)
			conns := make([]*rawConn, 50)
			for i := range conns {
				conns[i] = dialRaw(t, s)
			}
			for _, rc := range conns {
				rc.sendJSON(map[string]any{"op": "subscribe", "id": 1, "topic": "news", "userId": "42", "token": race})
			}
			won := 0
			for i, rc := range conns {
				switch m := rc.readMsg(); {
				case m["op"] == "subscribed":
					won++
				case m["op"] == "error" && m["code"] == "auth_failed":
				default:
					t.Fatalf("racer %d: %v", i, m)
				}
			}
			if won != 1 {
				t.Fatalf("%d of 50 connections redeemed one token, want exactly 1", won)
			}
			s.waitTotal(map[string]any{"event": "auth_failed", "reason": "token_replayed"}, 50)

			// The database stopped: refused (fail closed), one critical event.
			later := sqlToken(t, db, "42", false)
			db.Stop()
			c := dialRaw(t, s)
			for i := 1; i <= 3; i++ {
				if m := sub(c, i, later); m["op"] != "error" || m["code"] == "" {
					t.Fatalf("subscribe with the database stopped: %v", m)
				}
			}
			s.waitTotal(map[string]any{"event": "auth_failed", "reason": "token_source_unavailable"}, 3)
			down := s.waitAudit(map[string]any{"event": "token_source_down", "severity": "critical"})
			if strings.Contains(down["detail"].(string), db.DSN) {
				t.Fatalf("token_source_down shows the DSN: %v", down)
			}
			if n := s.auditCount(map[string]any{"event": "token_source_down"}); n != 1 {
				t.Fatalf("token_source_down audited %d times, want once per episode", n)
			}

			// Back: the token that was refused works now.
			db.Restart(t)
			if m := sub(c, 9, later); m["op"] != "subscribed" {
				t.Fatalf("subscribe after the database came back: %v", m)
			}
			s.waitAudit(map[string]any{"event": "token_source_recovered", "severity": "notice"})

			s.stop()
			if strings.Contains(s.stderr.String(), db.DSN) {
				t.Fatal("serve printed the DSN")
			}
			if out, code := audVerify(t, s.data); code != 0 {
				t.Fatalf("audit verify: exit %d\n%s", code, out)
			}
		})
	}
}

// runGW runs the binary and returns its output (stdout and stderr) and
// exit code.
func runGW(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, errOut, code := portcullis(t, nil, args...)
	return out + errOut, code
}

// TestSQLConfigCheckConnect: `config check --connect` connects and names
// a missing column; exit 1.
func TestSQLConfigCheckConnect(t *testing.T) {
	db := sqltest.StartPostgres(t)
	db.Exec(t, sqlSchema(t, sqltest.Postgres)...)
	dsn := filepath.Join(t.TempDir(), "tokens.dsn")
	if err := os.WriteFile(dsn, []byte(db.DSN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := writeTemp(t, "tokens:\n  source: sql\n  sql:\n    driver: postgres\n    dsn_file: "+dsn+"\n")
	if out, code := runGW(t, "config", "check", "--connect", good); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("config check --connect of a good config: exit %d\n%s", code, out)
	}
	bad := writeTemp(t, "tokens:\n  source: sql\n  sql:\n    driver: postgres\n    dsn_file: "+dsn+"\n    columns: {used: redeemed_at}\n")
	out, code := runGW(t, "config", "check", "--connect", bad)
	if code != 1 || !strings.Contains(out, bad+":3:3: tokens.sql: table portcullis_tokens has no column redeemed_at (tokens.sql.columns.used)") {
		t.Fatalf("config check --connect with a wrong column: exit %d\n%s", code, out)
	}
	// Without --connect the database is not asked.
	if out, code := runGW(t, "config", "check", bad); code != 0 {
		t.Fatalf("config check without --connect: exit %d\n%s", code, out)
	}
	if strings.Contains(out, db.DSN) {
		t.Fatalf("config check printed the DSN:\n%s", out)
	}
}
