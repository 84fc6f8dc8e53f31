package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// WAMP clients nobody on the team wrote, against the built binary:
// Debian's python3-autobahn, AutobahnJS from npm, and a WAMP v1 page in
// Debian's headless Chromium driven by playwright-core. Each client script
// prints one JSON line per step ({"step": NAME, ...}); the test reads them
// as they come, publishes through the admin API when the client is ready,
// and checks the client's outcome and the audit trail.

// stepClient is a running client script.
type stepClient struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan map[string]any
	log   *syncBuffer // every line and stderr, for failures
	start time.Time
}

func startStepClient(t *testing.T, name string, argv ...string) *stepClient {
	t.Helper()
	c := &stepClient{t: t, name: name, lines: make(chan map[string]any, 64), log: &syncBuffer{}, start: time.Now()}
	c.cmd = exec.Command(argv[0], argv[1:]...)
	c.cmd.Stderr = c.log
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintf(c.log, "%6dms stdout: %s\n", time.Since(c.start).Milliseconds(), sc.Text())
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"step": "unparsed", "line": sc.Text()}
			}
			c.lines <- m
		}
		close(c.lines)
	}()
	t.Cleanup(func() {
		c.stdin.Close()
		if c.cmd.ProcessState == nil {
			done := make(chan struct{})
			go func() { _ = c.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = c.cmd.Process.Kill()
				<-done
			}
		}
		if t.Failed() {
			t.Logf("%s client output:\n%s", name, c.log.String())
		}
	})
	return c
}

// next returns the next step line, which must be named step.
func (c *stepClient) next(step string) map[string]any {
	c.t.Helper()
	select {
	case m, ok := <-c.lines:
		if !ok {
			c.t.Fatalf("%s exited before step %q", c.name, step)
		}
		if m["step"] != step {
			c.t.Fatalf("%s: step %v, want %q: %v", c.name, m["step"], step, m)
		}
		return m
	case <-time.After(20 * time.Second):
		c.t.Fatalf("%s: no step %q within 20s", c.name, step)
	}
	return nil
}

func (c *stepClient) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		c.t.Fatalf("%s stdin: %v", c.name, err)
	}
}

// wait reads the script's last line and its exit.
func (c *stepClient) wait() {
	c.t.Helper()
	c.next("end")
	if err := c.cmd.Wait(); err != nil {
		c.t.Fatalf("%s exited: %v", c.name, err)
	}
	c.t.Logf("%s ran %v", c.name, time.Since(c.start).Round(time.Millisecond))
	if testing.Verbose() {
		c.t.Logf("%s output:\n%s", c.name, c.log.String())
	}
}

// autobahnScenario runs the WAMP v2 scenario with one Autobahn client:
// ticket join, subscribe to an allowed topic and receive a publication,
// two forbidden subscriptions refused with wamp.error.not_authorized (a
// topic the rules deny, a topic the token does not cover), unsubscribe,
// GOODBYE, then an unknown and a replayed ticket refused with ABORT
// wamp.error.authentication_failed.
func autobahnScenario(t *testing.T, name string, argv ...string) {
	s := startServer(t, "topics:\n"+
		"  - {match: \"news\", subscribe: token}\n"+
		"  - {match: \"sport\", subscribe: token}\n"+
		"  - {match: \"secret\", subscribe: deny}\n")
	const user = "7"
	tok := s.token(user, "news")
	forbidden := `["secret","sport"]`
	bad := `["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","` + tok + `"]`
	c := startStepClient(t, name, append(argv, s.wsURL, "realm1", user, tok, "news", forbidden, bad, "15000")...)

	if m := c.next("connect"); m["protocol"] != "wamp.2.json" {
		t.Fatalf("negotiated subprotocol %v, want wamp.2.json", m["protocol"])
	}
	if m := c.next("challenge"); m["method"] != "ticket" {
		t.Fatalf("challenge %v", m)
	}
	j := c.next("joined")
	if j["authid"] != user || j["authmethod"] != "ticket" || j["realm"] != "realm1" {
		t.Fatalf("joined %v", j)
	}
	if id, ok := j["session"].(float64); !ok || id < 1 || id > 1<<53 {
		t.Fatalf("session id %v", j["session"])
	}
	s.waitAudit(map[string]any{"event": "auth_ok", "userId": user, "proto": "wamp.2.json", "token_fp": fp(tok)})

	c.next("subscribed")
	s.waitAudit(map[string]any{"event": "subscribe", "topic": "news", "userId": user, "proto": "wamp.2.json", "token_fp": fp(tok)})
	if n := s.publish("news", `{"headline":"autobahn","n":1}`); n != 1 {
		t.Fatalf("delivered %d, want 1", n)
	}
	ev := c.next("event")
	args, _ := ev["args"].([]any)
	if len(args) != 1 {
		t.Fatalf("event args %v, want the payload as args[0]", ev["args"])
	}
	if p, _ := args[0].(map[string]any); p["headline"] != "autobahn" || p["n"] != 1.0 {
		t.Fatalf("event payload %v", args[0])
	}

	for _, topic := range []string{"secret", "sport"} {
		if e := c.next("subscribe_error"); e["topic"] != topic || e["error"] != "wamp.error.not_authorized" {
			t.Fatalf("forbidden subscribe to %s: %v, want wamp.error.not_authorized", topic, e)
		}
	}
	s.waitAudit(map[string]any{"event": "subscribe_denied", "reason": "topic_denied", "topic": "secret", "userId": user, "proto": "wamp.2.json"})
	s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_topic_mismatch", "topic": "sport", "userId": user, "proto": "wamp.2.json", "token_fp": fp(tok)})

	if u := c.next("unsubscribed"); u["active"] != false {
		t.Fatalf("unsubscribed %v", u)
	}
	// Still joined, but no longer subscribed: nothing is delivered.
	if n := s.publish("news", `{"after":"unsubscribe"}`); n != 0 {
		t.Fatalf("delivered %d after UNSUBSCRIBED, want 0", n)
	}
	c.send("leave")
	if l := c.next("left"); l["reason"] != "wamp.close.goodbye_and_out" {
		t.Fatalf("left %v, want the broker's GOODBYE echo", l)
	}
	noRetry(t, c.next("disconnected"))

	for _, reason := range []string{"token_unknown", "token_replayed"} {
		c.next("connect")
		c.next("challenge")
		if l := c.next("left"); l["reason"] != "wamp.error.authentication_failed" {
			t.Fatalf("bad ticket (%s): %v, want ABORT wamp.error.authentication_failed", reason, l)
		}
		noRetry(t, c.next("disconnected"))
		s.waitAudit(map[string]any{"event": "auth_failed", "reason": reason, "userId": user, "proto": "wamp.2.json"})
	}
	c.wait()
	if strings.Contains(s.stderr.String(), tok) {
		t.Fatal("the ticket reached the operational log")
	}
}

// noRetry fails when AutobahnJS says it would reconnect (its
// Connection retries unless the session ended with GOODBYE or ABORT).
func noRetry(t *testing.T, d map[string]any) {
	t.Helper()
	if d["will_retry"] == true {
		t.Fatalf("client would reconnect: %v", d)
	}
}

func TestWAMPClientAutobahnPython(t *testing.T) {
	requireTool(t, "python3-autobahn", hintAutobahn, pythonBinary, "-c", "import autobahn")
	v, _ := exec.Command("/usr/bin/python3", "-c", "import autobahn; print(autobahn.__version__)").Output()
	t.Logf("python3-autobahn %s (Debian bookworm ships 22.7.1)", strings.TrimSpace(string(v)))
	autobahnScenario(t, "python3-autobahn", "/usr/bin/python3", "clients/autobahn_v2.py")
}

func TestWAMPClientAutobahnJS(t *testing.T) {
	requireTool(t, "AutobahnJS 22.11.1 in e2e/node_modules", hintNodeWS,
		"node", "-e", "if (require('autobahn/package.json').version !== '22.11.1') process.exit(1)")
	autobahnScenario(t, "autobahnjs", "node", "clients/autobahn_v2.js")
}

// TestWAMPClientChromium speaks WAMP v1 from a page in headless Chromium:
// the browser's own WebSocket, Origin set by the browser, the seed topic.
func TestWAMPClientChromium(t *testing.T) {
	requireTool(t, "Chromium", hintChromium, chromiumBinary, "--version")
	requireTool(t, "playwright-core in e2e/node_modules", hintNodeWS, "node", "-e", "require('playwright-core')")

	page, err := os.ReadFile("clients/wamp1_page.html")
	if err != nil {
		t.Fatal(err)
	}
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
		w.Write(page)
	})}}
	web.Start()
	t.Cleanup(web.Close)

	s := startServer(t, fmt.Sprintf("origins: [%q]\n", web.URL))
	const user = "42"
	tok := s.token(user, "news")
	topic := seed("news", user, tok) // what JSON.stringify({topic, userId, token}) gives
	// The same page from http://localhost:PORT is another origin.
	foreign := strings.Replace(web.URL, "127.0.0.1", "localhost", 1) + "/"
	c := startStepClient(t, "chromium", "node", "clients/wamp1_browser.js", web.URL+"/", foreign, s.wsURL, "news", user, tok, "15000")

	w := c.next("welcome")
	if w["protocol"] != "wamp" {
		t.Fatalf("negotiated subprotocol %v, want wamp", w["protocol"])
	}
	msg, _ := w["msg"].([]any)
	if len(msg) != 4 || msg[0] != 0.0 || msg[2] != 1.0 || !strings.HasPrefix(fmt.Sprint(msg[3]), "portcullis/") {
		t.Fatalf("WELCOME %v", w["msg"])
	}
	if sess, ok := msg[1].(string); !ok || sess == "" {
		t.Fatalf("WELCOME session id %v is not a string", msg[1])
	}
	if sent := c.next("subscribe_sent"); sent["topic"] != topic {
		t.Fatalf("page subscribed with %q, want %q", sent["topic"], topic)
	}
	// v1 SUBSCRIBE has no reply: the audit line says the gateway took it.
	s.waitAudit(map[string]any{"event": "subscribe", "topic": "news", "userId": user, "proto": "wamp", "token_fp": fp(tok)})
	if n := s.publish("news", `{"headline":"from chromium"}`); n != 1 {
		t.Fatalf("delivered %d, want 1", n)
	}
	checkV1Event := func(which string) {
		t.Helper()
		ev := c.next(which)
		m, _ := ev["msg"].([]any)
		if len(m) != 3 || m[0] != 8.0 || m[1] != topic {
			t.Fatalf("EVENT %v does not echo the exact seed string %q", ev["msg"], topic)
		}
		if d, _ := m[2].(map[string]any); d["headline"] != "from chromium" {
			t.Fatalf("EVENT data %v", m[2])
		}
	}
	checkV1Event("event")

	// A second page replays the token: closed cleanly with 1008.
	r := c.next("replay_close")
	if r["code"] != 1008.0 || r["wasClean"] != true {
		t.Fatalf("replay close %v, want a clean 1008", r)
	}
	if r["welcomed"] != true {
		t.Fatalf("the second page got no WELCOME before its close: %v", r)
	}
	rep := s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_replayed", "proto": "wamp", "code": 1008})
	if rep["token_fp"] != fp(tok) || rep["topic"] != "news" {
		t.Fatalf("replay audit %v", rep)
	}
	// The replay did not disturb the first page.
	if n := s.publish("news", `{"headline":"from chromium"}`); n != 1 {
		t.Fatalf("delivered %d after the replay, want 1", n)
	}
	checkV1Event("event2")

	// The allow-list holds: a page from another origin gets no WELCOME.
	f := c.next("foreign")
	if f["origin"] != strings.TrimSuffix(foreign, "/") || f["welcomed"] != false {
		t.Fatalf("foreign-origin page: %v, want no WELCOME", f)
	}
	if cl, _ := f["close"].(map[string]any); cl["code"] != 1006.0 {
		t.Fatalf("foreign-origin page closed with %v, want 1006 (handshake refused)", f["close"])
	}
	s.waitAudit(map[string]any{"event": "conn_rejected", "reason": "bad_origin", "code": 403})
	c.wait()
	for _, e := range s.auditLines() {
		b, _ := json.Marshal(e)
		if strings.Contains(string(b), tok) {
			t.Fatalf("audit line holds the token: %s", b)
		}
	}
}
