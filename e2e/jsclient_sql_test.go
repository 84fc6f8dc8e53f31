package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/policy/sqltest"
)

// The browser client (clients/js/portcullis.js) against a gateway whose
// tokens come from the site's own MariaDB: the page of jsclient_test.go
// in headless Chromium, its getToken served by a "site backend" whose
// /token runs examples/php/mint_sql.php for each call, as a PHP site does
// per page view. The gateway redeems the row the script wrote; after a
// restart the client asks for a token again and a new row is redeemed.

// phpTokenSite is the site's backend of a PHP site writing token rows:
// the page and /portcullis.js import map of jsSite, and a /token that
// runs mint_sql.php.
type phpTokenSite struct {
	*jsSite
	kit    *phpSQLKit
	phpDir string // examples/php, absolute

	mu     sync.Mutex
	tokens []string // minted by mint_sql.php, in order
	errs   []string // failed /token calls
}

// newPHPTokenSite starts the backend on a loopback port for t.
func newPHPTokenSite(t *testing.T, sri string, kit *phpSQLKit) *phpTokenSite {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "examples", "php"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps := &phpTokenSite{
		jsSite: &jsSite{t: t, gw: map[string]*server{}, sri: sri, cfg: map[string]map[string]any{}},
		kit:    kit,
		phpDir: dir,
	}
	ps.web = &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(ps.serveSite)}}
	ps.web.Start()
	t.Cleanup(ps.web.Close)
	return ps
}

// serveSite answers /token by running mint_sql.php for the page's user
// and the topic it asks for; everything else is jsSite's page.
func (ps *phpTokenSite) serveSite(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/token" {
		ps.serve(w, r)
		return
	}
	tok, err := ps.mintRow(r.Context(), r.URL.Query().Get("topic"))
	if err != nil {
		ps.mu.Lock()
		ps.errs = append(ps.errs, err.Error())
		ps.mu.Unlock()
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
}

// mintRow runs `php mint_sql.php 42 TOPIC` against the kit's database, the
// way the examples tests run it, and returns the token it printed. It runs
// on the web server's goroutine, so it returns errors instead of failing
// the test.
func (ps *phpTokenSite) mintRow(ctx context.Context, topic string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "php", "mint_sql.php", jsUser, topic)
	cmd.Dir = ps.phpDir
	cmd.Env = append(exampleBaseEnv(), ps.kit.phpEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("php mint_sql.php %s %q: %w; stderr %q", jsUser, topic, err, errb.String())
	}
	var m minted
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return "", fmt.Errorf("php mint_sql.php printed something that is not its JSON: %w", err)
	}
	if m.Token == "" || m.UserID != jsUser || m.Topic != topic {
		return "", fmt.Errorf("php mint_sql.php printed user %q, topic %q (token empty: %t); want user %s, topic %q",
			m.UserID, m.Topic, m.Token == "", jsUser, topic)
	}
	ps.mu.Lock()
	ps.tokens = append(ps.tokens, m.Token)
	ps.mu.Unlock()
	return m.Token, nil
}

// rows returns the tokens mint_sql.php gave out, failing t if a /token
// call failed.
func (ps *phpTokenSite) rows(t *testing.T) []string {
	t.Helper()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if len(ps.errs) != 0 {
		t.Fatalf("the site's /token failed: %s", strings.Join(ps.errs, "; "))
	}
	return append([]string(nil), ps.tokens...)
}

// usedRows counts the table's rows, and those with used_at set.
func usedRows(t *testing.T, db *sqltest.Server) (total, used int) {
	t.Helper()
	if err := db.Open(t).QueryRow("SELECT COUNT(*), COUNT(used_at) FROM portcullis_tokens").Scan(&total, &used); err != nil {
		t.Fatalf("count the token rows: %v", err)
	}
	return total, used
}

// TestJSClientMariaDBRows: portcullis.js in headless Chromium on a PHP
// site's page whose getToken makes the site's backend run mint_sql.php,
// which writes a row into MariaDB (the table created as
// docs/TOKENS-SQL.md says); the gateway runs tokens.source: sql. The page
// subscribes and receives what publish_api.php sends, and the row is
// marked used. The gateway restarts on the same port and data dir: the
// client reconnects by itself, calls getToken again, a new row is
// redeemed (two rows used) and the next publication arrives. Nothing
// struck or banned the browser's address, neither the trail nor the log
// holds a token, and the trail verifies.
func TestJSClientMariaDBRows(t *testing.T) {
	exampleLangs[0].require(t)
	requireChromium(t)
	kit := startPHPSQLKit(t, sqltest.MariaDB)
	site := newPHPTokenSite(t, clientSRI(t), kit)
	data := filepath.Join(t.TempDir(), "d")
	yaml := jsGatewayYAML(freeLoopbackPort(t), site.web.URL, "") + kit.gwYAML +
		"topics:\n  - {match: \"news\", subscribe: token}\n"
	s := launch(t, yaml, data, "ws")
	if strings.Contains(s.stderr.String(), kit.db.DSN) {
		t.Fatal("serve printed the DSN")
	}
	// Reconnects are quick (0.1–2 s) so that the test is.
	pageURL := site.page("sql", s, map[string]int{"base": 200, "cap": 2000, "min": 100}, nil)
	c := startStepClient(t, "chromium", "node", "clients/jsclient_browser.js", "restart", pageURL, pageURL+"&sri=bad", "15000")
	publish := func(s *server, n int) {
		t.Helper()
		r := runExample(t, exampleLangs[0], adminEnv(s), "publish_api.php", "news", fmt.Sprintf(`{"n":%d}`, n))
		if r.code != 0 || strings.TrimSpace(r.stdout) != `{"delivered":1}` {
			t.Fatalf("publish_api.php: exit %d, stdout %q, stderr %q; want {\"delivered\":1}", r.code, r.stdout, r.stderr)
		}
	}

	c.next("launched")
	if m := c.next("sri"); m["loaded"] != false {
		t.Fatalf("a page pinning another hash loaded /portcullis.js: %v", m)
	}
	l := pageLog(t, c.next("subscribed"))
	toks := site.rows(t)
	if len(toks) != 1 || l.Tokens != 1 || len(l.Subscribed) != 1 || l.Subscribed[0] != "news" {
		t.Fatalf("first subscribe: %d rows written, getToken called %d times, subscribed %v", len(toks), l.Tokens, l.Subscribed)
	}
	s.waitAll(map[string]any{"event": "auth_ok", "topic": "news", "userId": jsUser, "token_fp": fp(toks[0]), "proto": "portcullis.v1"},
		map[string]any{"event": "subscribe", "topic": "news", "userId": jsUser, "token_fp": fp(toks[0])})
	if row := kit.row(t, toks[0]); !row.used || row.user != jsUser || row.topics != `["news"]` {
		t.Fatalf("the first row %+v, want user %s, topics [\"news\"], used", row, jsUser)
	}
	if total, used := usedRows(t, kit.db); total != 1 || used != 1 {
		t.Fatalf("%d rows, %d used; want 1 and 1", total, used)
	}
	publish(s, 1)
	l = pageLog(t, c.next("event"))
	if m := l.Messages[0]; m.Topic != "news" || m.Data["n"] != 1.0 {
		t.Fatalf("first event %+v", l.Messages)
	}
	if n := s.strikes(); n != 0 {
		t.Fatalf("%d strikes before the restart", n)
	}

	s.stop()
	s2 := launch(t, yaml, data, "ws")
	if s2.wsAddr != s.wsAddr {
		t.Fatalf("restarted on %s, was %s", s2.wsAddr, s.wsAddr)
	}
	site.setGateway("sql", s2)

	l = pageLog(t, c.next("resubscribed"))
	toks = site.rows(t)
	if len(toks) != 2 || toks[0] == toks[1] || l.Tokens != 2 {
		t.Fatalf("after the restart: %d rows written, getToken called %d times; want a second, new one", len(toks), l.Tokens)
	}
	l.requireWaitedAfterRestart(t)
	s2.waitAll(map[string]any{"event": "auth_ok", "topic": "news", "userId": jsUser, "token_fp": fp(toks[1])},
		map[string]any{"event": "subscribe", "topic": "news", "userId": jsUser, "token_fp": fp(toks[1])})
	if !kit.row(t, toks[1]).used {
		t.Fatal("used_at of the second row is still NULL after the resubscription")
	}
	if total, used := usedRows(t, kit.db); total != 2 || used != 2 {
		t.Fatalf("%d rows, %d used; want 2 and 2", total, used)
	}
	publish(s2, 2)
	l = pageLog(t, c.next("event2"))
	if len(l.Messages) != 2 || l.Messages[1].Data["n"] != 2.0 {
		t.Fatalf("events %+v", l.Messages)
	}
	c.next("closed")
	c.wait()

	requireCleanRestart(t, s, s2, data, toks, kit.db.DSN)
}
