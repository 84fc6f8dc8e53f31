package e2e

import (
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// The browser client (clients/js/portcullis.js) in headless Chromium, as a
// site uses it: the page is served by the site's backend (here an
// httptest server, another origin than the gateway), loads
// /portcullis.js from the gateway through an import map that pins it
// with the hash `portcullis version --client-sri` prints, and gets a token
// for every subscribe from the backend's /token endpoint, which mints it
// through the admin API (or, for the refusal tests, hands out bad ones).
// The page records what the client reports in window.log;
// clients/jsclient_browser.js prints it step by step.

// jsPage is the site's page. IMPORTMAP and CONFIG are replaced with JSON.
const jsPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>portcullis.js e2e</title>
<script type="importmap">IMPORTMAP</script>
<script type="application/json" id="cfg">CONFIG</script>
<script type="module">
const cfg = JSON.parse(document.getElementById('cfg').textContent);
const log = window.log = { states: [], messages: [], errors: [], subscribed: [], tokens: 0, attempts: 0, closedAt: 0 };
if (cfg.random !== null) Math.random = () => cfg.random; // a fixed jitter draw: attempts can be counted
let mod = null;
try {
  mod = await import('portcullis');
} catch (e) {
  window.loadError = String(e);
  window.loaded = false;
}
if (mod) {
  window.pc = mod.connect(cfg.ws, {
    backoff: cfg.backoff,
    getToken: async (topic) => {
      log.tokens++;
      const r = await fetch('/token?mode=' + cfg.mode + '&topic=' + encodeURIComponent(topic));
      if (!r.ok) throw new Error('token endpoint: HTTP ' + r.status);
      return (await r.json()).token;
    },
    onState: (s, info) => {
      log.states.push({ s, info, t: performance.now() });
      if (s === 'connecting') log.attempts++;
      if (s === 'closed') log.closedAt = performance.now();
    },
    onMessage: (topic, data) => log.messages.push({ topic, data }),
    onError: (e) => log.errors.push({ code: e.code, message: e.message, topic: e.topic, closeCode: e.closeCode, final: e.final }),
    onSubscribed: (topic) => log.subscribed.push(topic),
  });
  window.pc.subscribe(cfg.topic, { userId: cfg.userId });
  window.loaded = true;
}
</script></head><body></body></html>
`

// jsSite is the site's backend: the page and /token, for each mode a
// gateway to point the page at.
type jsSite struct {
	t    *testing.T
	web  *httptest.Server
	mu   sync.Mutex
	gw   map[string]*server // mode -> the gateway of the page; swapped on a restart
	sri  string
	cfg  map[string]map[string]any // mode -> the page's config
	mint []string                  // tokens minted, in order
	bad  atomic.Int64              // bad tokens handed out in mode "fresh"
}

const jsUser = "42"

func newJSSite(t *testing.T, sri string) *jsSite {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st := &jsSite{t: t, gw: map[string]*server{}, sri: sri, cfg: map[string]map[string]any{}}
	st.web = &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(st.serve)}}
	st.web.Start()
	t.Cleanup(st.web.Close)
	return st
}

// page sets mode's gateway and page config (backoff in ms; random, the
// fixed jitter draw, or nil for Math.random) and returns the page's URL.
func (st *jsSite) page(mode string, s *server, backoff map[string]int, random any) string {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.gw[mode] = s
	st.cfg[mode] = map[string]any{"mode": mode, "ws": s.wsURL, "topic": "news", "userId": jsUser, "backoff": backoff, "random": random}
	return st.web.URL + "/?mode=" + mode
}

func (st *jsSite) setGateway(mode string, s *server) {
	st.mu.Lock()
	st.gw[mode] = s
	st.mu.Unlock()
}

func (st *jsSite) minted() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]string(nil), st.mint...)
}

func (st *jsSite) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" && r.URL.Path != "/token" {
		w.WriteHeader(http.StatusNoContent) // favicon.ico
		return
	}
	mode := r.URL.Query().Get("mode")
	st.mu.Lock()
	s, cfg := st.gw[mode], st.cfg[mode]
	st.mu.Unlock()
	if s == nil {
		http.Error(w, "no gateway for mode "+mode, http.StatusNotFound)
		return
	}
	switch r.URL.Path {
	case "/":
		src := "http://" + s.wsAddr + "/portcullis.js"
		sri := st.sri
		if r.URL.Query().Get("sri") == "bad" {
			sum := sha512.Sum384([]byte("not portcullis.js"))
			sri = "sha384-" + base64.StdEncoding.EncodeToString(sum[:])
		}
		im, _ := json.Marshal(map[string]any{"imports": map[string]string{"portcullis": src}, "integrity": map[string]string{src: sri}})
		c, _ := json.Marshal(cfg)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, strings.NewReplacer("IMPORTMAP", string(im), "CONFIG", string(c)).Replace(jsPage))
	case "/token":
		var tok string
		switch mode {
		case "same":
			tok = wrongToken(0)
		case "fresh":
			tok = wrongToken(int(st.bad.Add(1)))
		default:
			var err error
			if tok, err = mintVia(s, jsUser, r.URL.Query().Get("topic")); err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			st.mu.Lock()
			st.mint = append(st.mint, tok)
			st.mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
	}
}

// mintVia mints a token through s's admin API, as a site's backend does;
// unlike server.token it runs off the test goroutine, so it returns errors.
func mintVia(s *server, user, topic string) (string, error) {
	b, _ := json.Marshal(map[string]any{"userId": user, "topics": []string{topic}})
	req, err := http.NewRequest("POST", s.adminURL+"/v1/tokens", strings.NewReader(string(b)))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+s.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	defer resp.Body.Close()
	var out struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated || out.Token == "" {
		return "", fmt.Errorf("mint: HTTP %d %v", resp.StatusCode, err)
	}
	return out.Token, nil
}

// jsLog is the page's window.log.
type jsLog struct {
	States []struct {
		S    string         `json:"s"`
		Info map[string]any `json:"info"`
	} `json:"states"`
	Messages []struct {
		Topic string         `json:"topic"`
		Data  map[string]any `json:"data"`
	} `json:"messages"`
	Errors []struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		Topic     string `json:"topic"`
		CloseCode int    `json:"closeCode"`
		Final     bool   `json:"final"`
	} `json:"errors"`
	Subscribed []string          `json:"subscribed"`
	Tokens     int               `json:"tokens"`
	Attempts   int               `json:"attempts"`
	State      string            `json:"state"`
	Topics     map[string]string `json:"topics"`
}

func pageLog(t *testing.T, m map[string]any) jsLog {
	t.Helper()
	b, _ := json.Marshal(m["log"])
	var l jsLog
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatalf("page log %s: %v", b, err)
	}
	return l
}

func (l jsLog) errorCodes() []string {
	var out []string
	for _, e := range l.Errors {
		out = append(out, fmt.Sprintf("%s/%d", e.Code, e.CloseCode))
	}
	return out
}

func requireChromium(t *testing.T) {
	t.Helper()
	requireTool(t, "Chromium", hintChromium, chromiumBinary, "--version")
	requireTool(t, "playwright-core in e2e/node_modules", hintNodeWS, "node", "-e", "require('playwright-core')")
}

// clientSRI is what `portcullis version --client-sri` prints.
func clientSRI(t *testing.T) string {
	t.Helper()
	out, errOut, code := portcullis(t, nil, "version", "--client-sri")
	sri := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(sri, "sha384-") || strings.Count(out, "\n") != 1 {
		t.Fatalf("portcullis version --client-sri: exit %d, %q %s", code, out, errOut)
	}
	b, err := os.ReadFile("../clients/js/portcullis.js")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum384(b)
	if want := "sha384-" + base64.StdEncoding.EncodeToString(sum[:]); sri != want {
		t.Fatalf("--client-sri printed %s; clients/js/portcullis.js hashes to %s", sri, want)
	}
	return sri
}

// jsGatewayYAML is a gateway on a fixed loopback port (so it can be
// restarted on it) admitting the site's pages; bans counts 127.0.0.1 like
// any address (allow: []), so a strike against the browser would show.
func jsGatewayYAML(port int, origin, bans string) string {
	return fmt.Sprintf("listen: \"127.0.0.1:%d\"\nadmin: {listen: \"127.0.0.1:0\"}\norigins: [%q]\nbans: {allow: []%s}\nshutdown: {drain: 1s}\n",
		port, origin, bans)
}

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestJSClientChromiumRestart: the page loads the client (a wrong hash in
// the import map is refused by the browser), subscribes with a minted
// token and receives a publication; the gateway is restarted on the same
// port and data dir; the client reconnects by itself, asks getToken
// again, resubscribes with the new token and receives the next
// publication. Neither gateway struck or banned the browser's address,
// the trail holds both redemptions and no token, and it verifies.
func TestJSClientChromiumRestart(t *testing.T) {
	requireChromium(t)
	sri := clientSRI(t)
	site := newJSSite(t, sri)
	data := filepath.Join(t.TempDir(), "d")
	yaml := jsGatewayYAML(freeLoopbackPort(t), site.web.URL, "")
	s := launch(t, yaml, data, "ws")
	// Reconnects are quick here (0.1–2 s) so that the test is; the defaults
	// are 0.25–30 s.
	pageURL := site.page("mint", s, map[string]int{"base": 200, "cap": 2000, "min": 100}, nil)
	c := startStepClient(t, "chromium", "node", "clients/jsclient_browser.js", "restart", pageURL, pageURL+"&sri=bad", "15000")

	c.next("launched")
	if m := c.next("sri"); m["loaded"] != false || !strings.Contains(fmt.Sprint(m["error"]), "portcullis") {
		t.Fatalf("a page pinning another hash loaded /portcullis.js: %v", m)
	}
	l := pageLog(t, c.next("subscribed"))
	toks := site.minted()
	if len(toks) != 1 || l.Tokens != 1 || len(l.Subscribed) != 1 || l.Subscribed[0] != "news" {
		t.Fatalf("first subscribe: %d tokens minted, getToken called %d times, subscribed %v", len(toks), l.Tokens, l.Subscribed)
	}
	s.waitAll(map[string]any{"event": "auth_ok", "topic": "news", "userId": jsUser, "token_fp": fp(toks[0]), "proto": "portcullis.v1"},
		map[string]any{"event": "subscribe", "topic": "news", "userId": jsUser, "token_fp": fp(toks[0])})
	if n := s.publish("news", `{"n":1}`); n != 1 {
		t.Fatalf("delivered %d, want 1", n)
	}
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
	site.setGateway("mint", s2) // the backend mints through the new admin API

	l = pageLog(t, c.next("resubscribed"))
	toks = site.minted()
	if len(toks) != 2 || toks[0] == toks[1] || l.Tokens != 2 {
		t.Fatalf("after the restart: %d tokens minted, getToken called %d times; want a second, new one", len(toks), l.Tokens)
	}
	l.requireWaitedAfterRestart(t)
	s2.waitAll(map[string]any{"event": "auth_ok", "topic": "news", "userId": jsUser, "token_fp": fp(toks[1])},
		map[string]any{"event": "subscribe", "topic": "news", "userId": jsUser, "token_fp": fp(toks[1])})
	if n := s2.publish("news", `{"n":2}`); n != 1 {
		t.Fatalf("delivered %d after the restart, want 1", n)
	}
	l = pageLog(t, c.next("event2"))
	if len(l.Messages) != 2 || l.Messages[1].Data["n"] != 2.0 {
		t.Fatalf("events %+v", l.Messages)
	}
	c.next("closed")
	c.wait()

	requireCleanRestart(t, s, s2, data, toks)
}

// requireWaitedAfterRestart checks that the page waited after the
// gateway's 1001 (going away) and reported no error.
func (l jsLog) requireWaitedAfterRestart(t *testing.T) {
	t.Helper()
	var waited bool
	for _, st := range l.States {
		if st.S == "waiting" && st.Info["code"] == 1001.0 {
			waited = true
		}
	}
	if !waited || len(l.Errors) != 0 {
		t.Fatalf("states %+v, errors %v: want a wait after the gateway's 1001 and no error", l.States, l.errorCodes())
	}
}

// requireCleanRestart stops s2, the gateway restarted after s on data,
// and checks that the page's reconnection cost its address nothing: no
// strike, no ban, no refusal in the trail; that no token (nor any of
// secrets) is in the trail or either log; and that the trail verifies.
func requireCleanRestart(t *testing.T, s, s2 *server, data string, toks []string, secrets ...string) {
	t.Helper()
	if n := s2.strikes(); n != 0 {
		t.Fatalf("%d strikes after the restart", n)
	}
	if b := s2.bans(); len(b) != 0 {
		t.Fatalf("bans: %v", b)
	}
	s2.stop()
	for _, e := range audEvents(t, filepath.Join(data, "audit")) {
		b, _ := json.Marshal(e)
		switch e["event"] {
		case "ban", "conn_rejected", "auth_failed", "message_rejected", "subscribe_denied", "token_source_down":
			t.Fatalf("a refusal in the trail: %s", b)
		}
		for _, tok := range toks {
			if strings.Contains(string(b), tok) {
				t.Fatalf("audit line holds a token: %s", b)
			}
		}
	}
	logs := s.stderr.String() + s2.stderr.String()
	for _, tok := range toks {
		if strings.Contains(logs, tok) {
			t.Fatal("the gateway's log holds a token")
		}
	}
	for _, sec := range secrets {
		if strings.Contains(logs, sec) {
			t.Fatal("the gateway's log holds a secret (the DSN)")
		}
	}
	if out, code := audVerify(t, data); code != 0 || !strings.Contains(out, "intact: ") {
		t.Fatalf("audit verify: exit %d, want 0:\n%s", code, out)
	}
}

// TestJSClientPolicyCloseBacksOff: a page whose tokens are refused.
// maxretry 1 bans the address at its first auth_failed, and the ban
// closes the connection with 1008. A client whose getToken gives the same
// token again does not reconnect at all (one attempt, closed, a final
// no_fresh_token error). One whose getToken gives a new (also bad) token
// each time reconnects, but backs off: with the jitter draw fixed at 0.5
// the waits are 0.5, 1, 2, 4 s, so at most five attempts in five seconds,
// where a client retrying at once would make hundreds. Counted by the
// pages, not timed on the server.
func TestJSClientPolicyCloseBacksOff(t *testing.T) {
	requireChromium(t)
	site := newJSSite(t, clientSRI(t))
	const bans = ", maxretry: 1"
	same := launch(t, jsGatewayYAML(freeLoopbackPort(t), site.web.URL, bans), filepath.Join(t.TempDir(), "d"), "ws")
	fresh := launch(t, jsGatewayYAML(freeLoopbackPort(t), site.web.URL, bans), filepath.Join(t.TempDir(), "d"), "ws")
	sameURL := site.page("same", same, nil, 0.5) // the default back-off: 1 s base, 30 s cap, 0.25 s floor
	freshURL := site.page("fresh", fresh, nil, 0.5)
	const window = 5000
	c := startStepClient(t, "chromium", "node", "clients/jsclient_browser.js", "refusal", sameURL, freshURL, "15000", fmt.Sprint(window))

	c.next("launched")
	c.next("loaded")
	// Same token: one attempt, auth_failed, the 1008 of the ban, one more
	// getToken that gives the same token, closed for good.
	l := pageLog(t, c.next("same"))
	codes := l.errorCodes()
	if l.Attempts != 1 || l.Tokens != 2 || l.State != "closed" || l.Topics["news"] != "failed" {
		t.Fatalf("same token: %d attempts, %d getToken calls, state %s, topics %v, errors %v; want 1, 2, closed, failed",
			l.Attempts, l.Tokens, l.State, l.Topics, codes)
	}
	if strings.Join(codes, " ") != "auth_failed/0 policy/1008 no_fresh_token/1008 no_fresh_token/1008" {
		t.Fatalf("same token: errors %v", codes)
	}
	if last := l.Errors[len(l.Errors)-1]; !last.Final || !strings.Contains(last.Message, "not reconnecting") {
		t.Fatalf("the last error %+v does not say the client gave up", last)
	}
	same.waitAll(map[string]any{"event": "auth_failed", "reason": "token_unknown", "ip": "127.0.0.1"},
		map[string]any{"event": "ban", "ip": "127.0.0.1"},
		map[string]any{"event": "conn_close", "reason": "banned", "code": 1008})
	if n := same.auditCount(map[string]any{"event": "conn_open", "ip": "127.0.0.1"}); n != 1 {
		t.Fatalf("%d connections reached the gateway, want 1", n)
	}

	// A fresh token each time: reconnects, backing off.
	l = pageLog(t, c.next("fresh"))
	if l.Attempts < 2 || l.Attempts > 5 {
		t.Fatalf("fresh tokens: %d attempts in %d ms, want 2 to 5 (states %+v)", l.Attempts, window, l.States)
	}
	var delays []float64
	for _, st := range l.States {
		if st.S == "waiting" {
			delays = append(delays, st.Info["delay"].(float64))
		}
	}
	for i, d := range delays {
		if want := []float64{500, 1000, 2000, 4000, 8000}[i]; d != want {
			t.Fatalf("waits %v ms, want 500, 1000, 2000, … (full jitter at 0.5)", delays)
		}
	}
	if l.State == "closed" || len(l.Errors) < 2 || l.Errors[0].Code != "auth_failed" || l.Errors[1].Code != "policy" {
		t.Fatalf("fresh tokens: state %s, errors %v", l.State, l.errorCodes())
	}
	fresh.waitAll(map[string]any{"event": "auth_failed", "reason": "token_unknown", "ip": "127.0.0.1"},
		map[string]any{"event": "conn_close", "reason": "banned", "code": 1008})
	c.wait()
	// Every later attempt met the ban at accept: none reached the pipeline.
	if n := fresh.auditTotal(map[string]any{"event": "auth_failed"}); n != 1 {
		t.Fatalf("%d auth_failed lines, want 1", n)
	}
}
