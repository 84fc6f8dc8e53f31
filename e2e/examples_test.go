package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/policy/sqltest"
)

// The backend kit in examples/ (PHP, Node, Python), each script run as a
// subprocess the way a site runs it, against the built gateway: what it
// mints, a WebSocket client redeems; what it publishes, that client
// receives; what it gets wrong, it is told (exit status and message) and
// the trail records.

// Install hints for the example runtimes, as .ci/run installs them.
const (
	hintPHP    = "apt-get install php-cli php-curl php-mysql php-pgsql"
	hintNode20 = "apt-get install nodejs (20 or later: fetch and crypto from the standard library)"
	hintPy3    = "apt-get install python3"
)

// exampleLang is one language of the kit: how to run a script and which
// scripts mint, publish and sign.
type exampleLang struct {
	name    string   // the folder under examples/
	argv    []string // the interpreter
	mint    string   // admin API mint
	publish string   // admin API publish
	jwt     string   // HS256 JWT mint ("" when the kit has none)
	require func(t *testing.T)
}

var exampleLangs = []exampleLang{
	{name: "php", argv: []string{"php"}, mint: "mint_api.php", publish: "publish_api.php",
		require: func(t *testing.T) {
			requireTool(t, "php-cli with curl", hintPHP, "php", "-r", `exit(function_exists("curl_init") ? 0 : 1);`)
		}},
	{name: "node", argv: []string{"node"}, mint: "mint.mjs", publish: "publish.mjs", jwt: "jwt.mjs",
		require: func(t *testing.T) {
			requireTool(t, "node 20+", hintNode20, "node", "-e", `process.exit(parseInt(process.versions.node) >= 20 ? 0 : 1)`)
		}},
	{name: "python", argv: []string{pythonBinary}, mint: "mint.py", publish: "publish.py", jwt: "jwt_mint.py",
		require: func(t *testing.T) {
			requireTool(t, "python3", hintPy3, pythonBinary, "-c", "import sys; sys.exit(sys.version_info < (3, 9))")
		}},
}

// exampleRun is one finished run of an example script.
type exampleRun struct {
	stdout, stderr string
	code           int
}

// runExample runs examples/<lang>/<script> with args and the extra
// environment env (KEY=value), to completion within 30 s.
func runExample(t *testing.T, l exampleLang, env []string, script string, args ...string) exampleRun {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "examples", l.name))
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append(append([]string{}, l.argv...), script), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(exampleBaseEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s/%s: %v", l.name, script, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s/%s %q did not finish within 30 s\nstdout: %s\nstderr: %s", l.name, script, args, out.String(), errb.String())
	}
	r := exampleRun{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%s/%s: %v", l.name, script, err)
	}
	return r
}

// exampleBaseEnv is the test's environment without any PORTCULLIS_
// variable, so a developer's own settings cannot steer the examples.
func exampleBaseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PORTCULLIS_") {
			env = append(env, kv)
		}
	}
	return env
}

// adminEnv points the examples at s's admin API and key file.
func adminEnv(s *server) []string {
	return []string{"PORTCULLIS_ADMIN_URL=" + s.adminURL, "PORTCULLIS_ADMIN_KEY_FILE=" + filepath.Join(s.data, "admin.key")}
}

// minted is what every mint script prints.
type minted struct {
	Token   string `json:"token"`
	UserID  string `json:"userId"`
	Topic   string `json:"topic"`
	Expires string `json:"expires"`
}

// mustMint checks that a mint run succeeded and printed one minted token
// for user and topic, expiring within (0, ttl] from now.
func mustMint(t *testing.T, what string, r exampleRun, user, topic string, ttl time.Duration) minted {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", what, r.code, r.stdout, r.stderr)
	}
	var m minted
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%s printed %q: %v", what, r.stdout, err)
	}
	if m.Token == "" || m.UserID != user || m.Topic != topic {
		t.Fatalf("%s printed %+v, want a token for user %s and topic %s", what, m, user, topic)
	}
	exp, err := time.Parse(time.RFC3339, m.Expires)
	if err != nil {
		t.Fatalf("%s: expires %q is not RFC 3339: %v", what, m.Expires, err)
	}
	if d := time.Until(exp); d <= 0 || d > ttl+2*time.Second {
		t.Fatalf("%s: expires %s is %v from now, want within %v", what, m.Expires, d.Round(time.Second), ttl)
	}
	return m
}

// subscribeWith subscribes a native client from 127.0.0.1 with m and
// checks the gateway's "subscribed" answer.
func subscribeWith(t *testing.T, s *server, m minted) *rawConn {
	t.Helper()
	rc := dialRaw(t, s)
	rc.sendJSON(subMsg(1, m.Topic, m.UserID, m.Token))
	if got := rc.readMsg(); got["op"] != "subscribed" || got["topic"] != m.Topic {
		t.Fatalf("subscribe with the minted token: %v", got)
	}
	return rc
}

// publishAndReceive publishes data through the kit's publish script and
// checks that rc, subscribed to topic, receives it.
func publishAndReceive(t *testing.T, l exampleLang, s *server, rc *rawConn, topic, data string) {
	t.Helper()
	r := runExample(t, l, adminEnv(s), l.publish, topic, data)
	if r.code != 0 || strings.TrimSpace(strings.ReplaceAll(r.stdout, " ", "")) != `{"delivered":1}` {
		t.Fatalf("%s/%s: exit %d, stdout %q, stderr %q; want {\"delivered\":1}", l.name, l.publish, r.code, r.stdout, r.stderr)
	}
	ev := rc.readMsg()
	want := map[string]any{}
	if err := json.Unmarshal([]byte(data), &want); err != nil {
		t.Fatal(err)
	}
	got, _ := ev["data"].(map[string]any)
	if ev["op"] != "event" || ev["topic"] != topic || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("received %v, want the event %s on %s", ev, data, topic)
	}
}

// TestExamplesAdminAPI runs each kit's admin API scripts: a token minted
// by the script is redeemed by a WebSocket client, which receives what the
// publish script sends; the trail holds the issue and the redemption under
// the token's fingerprint. Bad input gets a usage error (exit 2) before
// any request, a refusal from the gateway (exit 1, its HTTP status and
// error code), and the refusal's audit line.
func TestExamplesAdminAPI(t *testing.T) {
	for _, l := range exampleLangs {
		t.Run(l.name, func(t *testing.T) {
			l.require(t)
			s := startServer(t, "topics:\n  - {match: \"news\", subscribe: token}\n  - {match: \"user.{userId}.**\", subscribe: token}\n")
			const user = "42"
			m := mustMint(t, l.name+"/"+l.mint, runExample(t, l, adminEnv(s), l.mint, user, "user.42.inbox", "news"), user, "user.42.inbox", time.Minute)
			s.waitAudit(map[string]any{"event": "admin", "detail": "token issued", "userId": user, "token_fp": fp(m.Token)})
			rc := subscribeWith(t, s, m)
			s.waitAudit(map[string]any{"event": "subscribe", "topic": "user.42.inbox", "userId": user, "token_fp": fp(m.Token)})
			// The same token covers the second topic on this connection.
			rc.sendJSON(subMsg(2, "news", user, m.Token))
			if got := rc.readMsg(); got["op"] != "subscribed" || got["topic"] != "news" {
				t.Fatalf("second topic with the same token: %v", got)
			}
			publishAndReceive(t, l, s, rc, "user.42.inbox", `{"from":"`+l.name+`","n":1}`)
			publishAndReceive(t, l, s, rc, "news", `{"headline":"kit"}`)

			// A TTL from the environment reaches the gateway.
			short := mustMint(t, "ttl 5", runExample(t, l, append(adminEnv(s), "PORTCULLIS_TOKEN_TTL=5"), l.mint, user, "news"), user, "news", 5*time.Second)
			if short.Token == m.Token {
				t.Fatal("two mints returned the same token")
			}

			// Usage errors: exit 2, nothing sent.
			for _, args := range [][]string{{user}, {}} {
				r := runExample(t, l, adminEnv(s), l.mint, args...)
				if r.code != 2 || !strings.Contains(r.stderr, "a user id and at least one topic are required") || !strings.Contains(r.stderr, "usage:") {
					t.Fatalf("%s %q: exit %d, stderr %q; want 2 and the usage", l.mint, args, r.code, r.stderr)
				}
			}
			r := runExample(t, l, append(adminEnv(s), "PORTCULLIS_TOKEN_TTL=1m"), l.mint, user, "news")
			if r.code != 2 || !strings.Contains(r.stderr, `PORTCULLIS_TOKEN_TTL="1m" is not a number of seconds`) {
				t.Fatalf("TTL 1m: exit %d, stderr %q", r.code, r.stderr)
			}
			r = runExample(t, l, adminEnv(s), l.publish, "news", "{not json")
			if r.code != 2 || !strings.Contains(r.stderr, "JSON_DATA is not JSON") {
				t.Fatalf("publish of bad JSON: exit %d, stderr %q", r.code, r.stderr)
			}

			// Refusals by the gateway: the status, the code and the message.
			r = runExample(t, l, adminEnv(s), l.mint, "4.2", "news")
			if r.code != 1 || !strings.Contains(r.stderr, "HTTP 400 bad_request") || !strings.Contains(r.stderr, "userId must be") {
				t.Fatalf("mint for user 4.2: exit %d, stderr %q", r.code, r.stderr)
			}
			s.waitAudit(map[string]any{"event": "admin", "reason": "bad_request", "code": 400})
			r = runExample(t, l, adminEnv(s), l.publish, "news..x", `{"a":1}`)
			if r.code != 1 || !strings.Contains(r.stderr, "HTTP 400 bad_request: topic must be") {
				t.Fatalf("publish to news..x: exit %d, stderr %q", r.code, r.stderr)
			}
			wrongKey := filepath.Join(t.TempDir(), "admin.key")
			if err := os.WriteFile(wrongKey, []byte("not-the-admin-key-at-all\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			r = runExample(t, l, []string{"PORTCULLIS_ADMIN_URL=" + s.adminURL, "PORTCULLIS_ADMIN_KEY_FILE=" + wrongKey}, l.publish, "news", `{"a":1}`)
			if r.code != 1 || !strings.Contains(r.stderr, "HTTP 401 unauthorized") {
				t.Fatalf("publish with a wrong key: exit %d, stderr %q", r.code, r.stderr)
			}
			s.waitAudit(map[string]any{"event": "auth_failed", "stage": "admin", "reason": "admin_key_wrong", "detail": "POST /v1/publish"})
			missing := filepath.Join(t.TempDir(), "absent.key")
			r = runExample(t, l, []string{"PORTCULLIS_ADMIN_URL=" + s.adminURL, "PORTCULLIS_ADMIN_KEY_FILE=" + missing}, l.mint, user, "news")
			if r.code != 1 || !strings.Contains(r.stderr, "cannot read the admin key file "+missing) {
				t.Fatalf("mint without a key file: exit %d, stderr %q", r.code, r.stderr)
			}

			// No script echoes the admin key, and the gateway's log never
			// holds a token.
			for _, out := range []string{r.stdout, r.stderr} {
				if strings.Contains(out, s.key) {
					t.Fatal("an example printed the admin key")
				}
			}
			if strings.Contains(s.stderr.String(), m.Token) {
				t.Fatal("a minted token reached the gateway's log")
			}
		})
	}
}

// TestExamplesJWT runs the Node and Python JWT minters against a gateway
// with tokens.source: jwt, audience and issuer set: their tokens are
// accepted (the claim names, typ and secret handling match the gateway's),
// redeemed once, and a token for another audience is refused with
// auth_failed and the audit's reason and detail.
func TestExamplesJWT(t *testing.T) {
	for _, l := range exampleLangs {
		if l.jwt == "" {
			continue
		}
		t.Run(l.name, func(t *testing.T) {
			l.require(t)
			sf, secret := jwtSecretFile(t)
			// The secret file as an editor saves it: with a trailing newline.
			if err := os.WriteFile(sf, append(secret, '\n'), 0o600); err != nil {
				t.Fatal(err)
			}
			s := startServer(t, fmt.Sprintf("tokens: {source: jwt, jwt: {algorithms: [HS256], secret_file: %q, "+
				"audience: portcullis, issuer: \"https://site.example\"}}\n"+
				"topics:\n  - {match: \"user.{userId}.**\", subscribe: token}\n", sf))
			env := []string{"PORTCULLIS_JWT_SECRET_FILE=" + sf, "PORTCULLIS_JWT_AUDIENCE=portcullis",
				"PORTCULLIS_JWT_ISSUER=https://site.example", "PORTCULLIS_TOKEN_TTL=120"}
			const user = "alice"
			m := mustMint(t, l.name+"/"+l.jwt, runExample(t, l, env, l.jwt, user, "user.alice.inbox", "user.{userId}.**"),
				user, "user.alice.inbox", 2*time.Minute)
			rc := subscribeWith(t, s, m)
			s.waitAudit(map[string]any{"event": "subscribe", "topic": "user.alice.inbox", "userId": user, "token_fp": fp(m.Token)})
			if n := s.publish("user.alice.inbox", `{"mail":1}`); n != 1 {
				t.Fatalf("delivered %d, want 1", n)
			}
			if ev := rc.readMsg(); ev["op"] != "event" || ev["topic"] != "user.alice.inbox" {
				t.Fatalf("event %v", ev)
			}
			// One use: another connection presenting it is a replay.
			other := dialRaw(t, s)
			other.sendJSON(subMsg(1, "user.alice.inbox", user, m.Token))
			if got := other.readMsg(); got["op"] != "error" || got["code"] != "auth_failed" {
				t.Fatalf("replayed JWT: %v, want auth_failed", got)
			}
			s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_replayed", "token_fp": fp(m.Token)})

			// Signed for another audience: refused, and the trail says why.
			env[1] = "PORTCULLIS_JWT_AUDIENCE=another-gateway"
			bad := mustMint(t, "other audience", runExample(t, l, env, l.jwt, user, "user.alice.inbox"), user, "user.alice.inbox", 2*time.Minute)
			rc2 := dialRaw(t, s)
			rc2.sendJSON(subMsg(1, "user.alice.inbox", user, bad.Token))
			if got := rc2.readMsg(); got["op"] != "error" || got["code"] != "auth_failed" {
				t.Fatalf("JWT for another audience: %v, want auth_failed", got)
			}
			e := s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_invalid", "token_fp": fp(bad.Token)})
			if d, _ := e["detail"].(string); !strings.Contains(d, "does not name tokens.jwt.audience") {
				t.Fatalf("audit detail %q, want the audience named", d)
			}

			// The minter refuses what the gateway would refuse, and a short secret.
			r := runExample(t, l, env, l.jwt, "alice.smith", "news")
			if r.code != 2 || !strings.Contains(r.stderr, `user id "alice.smith": 1-128 characters`) {
				t.Fatalf("user alice.smith: exit %d, stderr %q", r.code, r.stderr)
			}
			r = runExample(t, l, env, l.jwt, user, "news/today")
			if r.code != 2 || !strings.Contains(r.stderr, `topic "news/today"`) {
				t.Fatalf("topic news/today: exit %d, stderr %q", r.code, r.stderr)
			}
			short := filepath.Join(t.TempDir(), "short.secret")
			if err := os.WriteFile(short, []byte("only-20-bytes-long!!\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			r = runExample(t, l, []string{"PORTCULLIS_JWT_SECRET_FILE=" + short}, l.jwt, user, "news")
			if r.code != 1 || !strings.Contains(r.stderr, "has 20 bytes; the gateway needs at least 32") {
				t.Fatalf("short secret: exit %d, stderr %q", r.code, r.stderr)
			}
			r = runExample(t, l, nil, l.jwt, user, "news")
			if r.code != 2 || !strings.Contains(r.stderr, "PORTCULLIS_JWT_SECRET_FILE is not set") {
				t.Fatalf("no secret file: exit %d, stderr %q", r.code, r.stderr)
			}
		})
	}
}

// docSQL returns the first ```sql block after the heading line in
// docs/TOKENS-SQL.md: the tests create their tables with the statements
// the page gives sites, so the page cannot drift from what works.
func docSQL(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "TOKENS-SQL.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("docs/TOKENS-SQL.md has no heading %q", heading)
	}
	rest := doc[i:]
	j := strings.Index(rest, "```sql\n")
	if j < 0 {
		t.Fatalf("docs/TOKENS-SQL.md: no ```sql block after %q", heading)
	}
	block := rest[j+len("```sql\n"):]
	k := strings.Index(block, "```")
	if k < 0 {
		t.Fatalf("docs/TOKENS-SQL.md: unterminated ```sql block after %q", heading)
	}
	return strings.TrimSpace(block[:k])
}

// phpSQLKit is a database started on loopback, its table created as
// docs/TOKENS-SQL.md says, and what PHP and the gateway each need to
// reach it.
type phpSQLKit struct {
	db      *sqltest.Server
	phpEnv  []string // PORTCULLIS_DB_* for mint_sql.php
	gwYAML  string   // the tokens: block of the gateway's config
	heading string
}

// startPHPSQLKit starts a database of kind k for t (skipped, or failed
// under CI, without the server or php's PDO driver).
func startPHPSQLKit(t *testing.T, k sqltest.Kind) *phpSQLKit {
	t.Helper()
	ext, heading := "pdo_mysql", "### MariaDB and MySQL"
	if k == sqltest.Postgres {
		ext, heading = "pdo_pgsql", "### PostgreSQL"
	}
	requireTool(t, "php-cli with "+ext, hintPHP, "php", "-r", fmt.Sprintf("exit(extension_loaded(%q) ? 0 : 1);", ext))
	ddl := docSQL(t, heading)
	db := sqltest.Start(t, k)
	for _, st := range strings.Split(ddl, ";") {
		if st = strings.TrimSpace(st); st != "" {
			db.Exec(t, st)
		}
	}
	host, port, _ := strings.Cut(db.Addr, ":")
	kit := &phpSQLKit{db: db, heading: heading}
	switch k {
	case sqltest.Postgres:
		kit.phpEnv = []string{fmt.Sprintf("PORTCULLIS_DB_DSN=pgsql:host=%s;port=%s;dbname=%s", host, port, sqltest.Database), "PORTCULLIS_DB_USER=postgres"}
	default:
		kit.phpEnv = []string{fmt.Sprintf("PORTCULLIS_DB_DSN=mysql:host=%s;port=%s;dbname=%s", host, port, sqltest.Database), "PORTCULLIS_DB_USER=root"}
	}
	dsnFile := filepath.Join(t.TempDir(), "tokens.dsn")
	if err := os.WriteFile(dsnFile, []byte(db.DSN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kit.gwYAML = fmt.Sprintf("tokens: {source: sql, sql: {driver: %s, dsn_file: %q}}\n", k, dsnFile)
	return kit
}

// mint runs mint_sql.php for user and topics.
func (k *phpSQLKit) mint(t *testing.T, env []string, args ...string) exampleRun {
	t.Helper()
	return runExample(t, exampleLangs[0], append(append([]string{}, k.phpEnv...), env...), "mint_sql.php", args...)
}

// tokenRow is a row of portcullis_tokens as the test reads it back.
type tokenRow struct {
	user, topics string
	expires      time.Time
	used         bool
}

// row reads the row of token (hashed), failing t when there is none.
func (k *phpSQLKit) row(t *testing.T, token string) tokenRow {
	t.Helper()
	sum := sha256.Sum256([]byte(token))
	q := "SELECT user_id, topics, expires_at, used_at IS NOT NULL FROM portcullis_tokens WHERE token_sha256 = ?"
	if k.db.Kind == sqltest.Postgres {
		q = strings.Replace(q, "?", "$1", 1)
	}
	var r tokenRow
	var exp any
	if err := k.db.Open(t).QueryRow(q, hex.EncodeToString(sum[:])).Scan(&r.user, &r.topics, &exp, &r.used); err != nil {
		t.Fatalf("the row of the minted token (by its hex SHA-256): %v", err)
	}
	switch v := exp.(type) {
	case time.Time:
		r.expires = v
	case []byte: // go-sql-driver/mysql without parseTime
		e, err := time.Parse(time.DateTime, string(v))
		if err != nil {
			t.Fatalf("expires_at %q: %v", v, err)
		}
		r.expires = e
	default:
		t.Fatalf("expires_at of type %T", exp)
	}
	return r
}

// TestExamplesPHPSQL runs mint_sql.php against real MariaDB and
// PostgreSQL servers on loopback, whose tables are created as
// docs/TOKENS-SQL.md says: the row holds the token's hex SHA-256 (never
// the token), the user, the topics as a JSON array and a UTC expiry; a
// gateway with tokens.source: sql redeems it once (the row is marked
// used; a replay from another connection is refused and audited), and the
// subscriber receives what publish_api.php sends. Bad input is refused by
// the script with the reason.
func TestExamplesPHPSQL(t *testing.T) {
	for _, kind := range []sqltest.Kind{sqltest.MariaDB, sqltest.Postgres} {
		t.Run(string(kind), func(t *testing.T) {
			exampleLangs[0].require(t)
			kit := startPHPSQLKit(t, kind)
			const user = "42"
			before := time.Now().UTC().Truncate(time.Second)
			m := mustMint(t, "php/mint_sql.php", kit.mint(t, nil, user, "user.42.inbox", "news"), user, "user.42.inbox", time.Minute)
			row := kit.row(t, m.Token)
			if row.user != user || row.topics != `["user.42.inbox","news"]` || row.used {
				t.Fatalf("row %+v, want user 42, topics [\"user.42.inbox\",\"news\"], unused", row)
			}
			// Stored as UTC wall-clock time, a minute ahead.
			e := row.expires
			exp := time.Date(e.Year(), e.Month(), e.Day(), e.Hour(), e.Minute(), e.Second(), 0, time.UTC)
			if d := exp.Sub(before); d < time.Minute || d > time.Minute+5*time.Second {
				t.Fatalf("expires_at %s is %v after the mint, want 60 s in UTC", e, d)
			}

			s := startServer(t, kit.gwYAML+"topics:\n  - {match: \"news\", subscribe: token}\n  - {match: \"user.{userId}.**\", subscribe: token}\n")
			rc := subscribeWith(t, s, m)
			s.waitAudit(map[string]any{"event": "subscribe", "topic": "user.42.inbox", "userId": user, "token_fp": fp(m.Token)})
			if !kit.row(t, m.Token).used {
				t.Fatal("used_at is still NULL after the redemption")
			}
			rc.sendJSON(subMsg(2, "news", user, m.Token))
			if got := rc.readMsg(); got["op"] != "subscribed" || got["topic"] != "news" {
				t.Fatalf("second topic with the same token: %v", got)
			}
			publishAndReceive(t, exampleLangs[0], s, rc, "user.42.inbox", `{"from":"php","db":"`+string(kind)+`"}`)

			// Another connection replays it: refused, audited with the redeemer.
			other := upgradeFrom(t, s, "127.0.0.1")
			other.sendJSON(subMsg(1, "news", user, m.Token))
			if got := other.readMsg(); got["op"] != "error" || got["code"] != "auth_failed" {
				t.Fatalf("replayed token: %v, want auth_failed", got)
			}
			s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_replayed", "token_fp": fp(m.Token)})

			// Bad input never reaches the table.
			for _, c := range []struct {
				args []string
				env  []string
				code int
				want string
			}{
				{[]string{"4.2", "news"}, nil, 2, `user id "4.2": 1-128 characters`},
				{[]string{user, "news today"}, nil, 2, `topic "news today"`},
				{[]string{user}, nil, 2, "a user id and at least one topic are required"},
				{[]string{user, "news"}, []string{"PORTCULLIS_TOKEN_TABLE=tokens; DROP TABLE x"}, 2, `table "tokens; DROP TABLE x" is not a plain [schema.]name`},
				{[]string{user, "news"}, []string{"PORTCULLIS_TOKEN_TABLE=no_such_table"}, 1, "error: insert into no_such_table:"},
				{[]string{user, "news"}, []string{"PORTCULLIS_TOKEN_HASHED=yes"}, 2, "PORTCULLIS_TOKEN_HASHED must be true or false"},
			} {
				r := kit.mint(t, c.env, c.args...)
				if r.code != c.code || !strings.Contains(r.stderr, c.want) || r.stdout != "" {
					t.Fatalf("mint_sql.php %q %q: exit %d, stdout %q, stderr %q; want exit %d and %q", c.args, c.env, r.code, r.stdout, r.stderr, c.code, c.want)
				}
			}
			var n int
			if err := kit.db.Open(t).QueryRow("SELECT COUNT(*) FROM portcullis_tokens").Scan(&n); err != nil || n != 1 {
				t.Fatalf("%d rows (%v), want only the one minted", n, err)
			}
			// No database: a clear error, exit 1.
			kit.db.Stop()
			r := kit.mint(t, nil, user, "news")
			if r.code != 1 || !strings.Contains(r.stderr, "error: connect to the database:") {
				t.Fatalf("mint_sql.php with the database down: exit %d, stderr %q", r.code, r.stderr)
			}
		})
	}
}

// servePage serves page at / of a loopback web server for t; the
// browser's Origin is its URL.
func servePage(t *testing.T, page []byte) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	web := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			w.WriteHeader(http.StatusNoContent) // favicon.ico
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})}}
	web.Start()
	t.Cleanup(web.Close)
	return web
}

// TestExamplesSeedClientMariaDB is the seed site moved to Portcullis: the
// PHP example writes the token row into MariaDB as the site's page view
// did, and an unchanged WAMP v1 page (the wire format AutobahnJS 0.8
// speaks: subprotocol "wamp", the topic the JSON string {topic, userId,
// token}) in headless Chromium subscribes with it through a gateway with
// tokens.source: sql, receives what publish_api.php sends on an EVENT
// echoing its exact topic string, and a second page replaying the token
// is closed cleanly with 1008 and audited token_replayed.
func TestExamplesSeedClientMariaDB(t *testing.T) {
	exampleLangs[0].require(t)
	requireTool(t, "Chromium", hintChromium, chromiumBinary, "--version")
	requireTool(t, "playwright-core in e2e/node_modules", hintNodeWS, "node", "-e", "require('playwright-core')")
	page, err := os.ReadFile("clients/wamp1_page.html")
	if err != nil {
		t.Fatal(err)
	}
	web := servePage(t, page)
	kit := startPHPSQLKit(t, sqltest.MariaDB)
	s := startServer(t, kit.gwYAML+fmt.Sprintf("origins: [%q]\ntopics:\n  - {match: \"news\", subscribe: token}\n", web.URL))

	const user = "42"
	m := mustMint(t, "php/mint_sql.php", kit.mint(t, nil, user, "news"), user, "news", time.Minute)
	topic := seed("news", user, m.Token) // what the page's JSON.stringify({topic, userId, token}) gives
	foreign := strings.Replace(web.URL, "127.0.0.1", "localhost", 1) + "/"
	c := startStepClient(t, "chromium", "node", "clients/wamp1_browser.js", web.URL+"/", foreign, s.wsURL, "news", user, m.Token, "15000")

	if w := c.next("welcome"); w["protocol"] != "wamp" {
		t.Fatalf("negotiated subprotocol %v, want wamp", w["protocol"])
	}
	if sent := c.next("subscribe_sent"); sent["topic"] != topic {
		t.Fatalf("page subscribed with %q, want %q", sent["topic"], topic)
	}
	s.waitAudit(map[string]any{"event": "subscribe", "topic": "news", "userId": user, "proto": "wamp", "token_fp": fp(m.Token)})
	if !kit.row(t, m.Token).used {
		t.Fatal("used_at is still NULL after the page's subscription")
	}
	checkEvent := func(step, headline string) {
		t.Helper()
		ev := c.next(step)
		msg, _ := ev["msg"].([]any)
		if len(msg) != 3 || msg[0] != 8.0 || msg[1] != topic {
			t.Fatalf("EVENT %v does not echo the exact seed string %q", ev["msg"], topic)
		}
		if d, _ := msg[2].(map[string]any); d["headline"] != headline {
			t.Fatalf("EVENT data %v, want headline %q", msg[2], headline)
		}
	}
	publish := func(headline string) {
		t.Helper()
		r := runExample(t, exampleLangs[0], adminEnv(s), "publish_api.php", "news", fmt.Sprintf(`{"headline":%q}`, headline))
		if r.code != 0 || strings.TrimSpace(r.stdout) != `{"delivered":1}` {
			t.Fatalf("publish_api.php: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	}
	publish("from the site")
	checkEvent("event", "from the site")

	r := c.next("replay_close")
	if r["code"] != 1008.0 || r["wasClean"] != true {
		t.Fatalf("replay close %v, want a clean 1008 (AutobahnJS 0.8 does not reconnect)", r)
	}
	rep := s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_replayed", "proto": "wamp", "code": 1008})
	if rep["token_fp"] != fp(m.Token) || rep["topic"] != "news" {
		t.Fatalf("replay audit %v", rep)
	}
	publish("after the replay")
	checkEvent("event2", "after the replay")
	if f := c.next("foreign"); f["welcomed"] != false {
		t.Fatalf("page from an origin not allowed: %v, want no WELCOME", f)
	}
	c.wait()
	for _, e := range s.auditLines() {
		b, _ := json.Marshal(e)
		if strings.Contains(string(b), m.Token) {
			t.Fatalf("audit line holds the token: %s", b)
		}
	}
}
