package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// WAMP clients written from the protocol (docs/PROTOCOL.md) (no installable WAMP v1 client
// exists; the v2 one is a plain spec-conformant client), driving the
// built binary over raw sockets.

// dialWAMP upgrades with Sec-WebSocket-Protocol proto and checks the echo.
func dialWAMP(t *testing.T, s *server, proto string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", s.wsAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Protocol: %s\r\n\r\n", s.wsAddr, proto)
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	status, _ := rc.r.ReadString('\n')
	if !strings.Contains(status, "101") {
		t.Fatalf("handshake: %q", status)
	}
	echoed := ""
	for {
		l, err := rc.r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "Sec-WebSocket-Protocol") {
			echoed = strings.TrimSpace(v)
		}
	}
	if echoed != proto {
		t.Fatalf("server echoed subprotocol %q, want %q", echoed, proto)
	}
	return rc
}

// readArray returns the next WAMP message (a JSON array), skipping pings.
func (rc *rawConn) readArray() []any {
	rc.t.Helper()
	p := rc.readData()
	var a []any
	if err := json.Unmarshal(p, &a); err != nil || len(a) == 0 {
		rc.t.Fatalf("frame %q is not a WAMP message: %v", p, err)
	}
	return a
}

func wampMsg(v ...any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// v1Open connects a WAMP v1 client and checks WELCOME.
func v1Open(t *testing.T, s *server) (*rawConn, string) {
	t.Helper()
	rc := dialWAMP(t, s, "wamp")
	w := rc.readArray()
	if len(w) != 4 || w[0] != 0.0 || w[2] != 1.0 || !strings.HasPrefix(fmt.Sprint(w[3]), "portcullis/") {
		t.Fatalf("WELCOME %v", w)
	}
	sess, ok := w[1].(string)
	if !ok {
		t.Fatalf("WELCOME session id %v is not a string", w[1])
	}
	return rc, sess
}

// seed is the seed pattern's topic: JSON.stringify({topic, userId, token}).
func seed(topic, user, token string) string {
	return fmt.Sprintf(`{"topic":%q,"userId":%q,"token":%q}`, topic, user, token)
}

// v2Open runs HELLO → CHALLENGE → AUTHENTICATE and returns the reply.
func v2Open(t *testing.T, s *server, user, ticket string) (*rawConn, []any) {
	t.Helper()
	rc := dialWAMP(t, s, "wamp.2.json")
	rc.sendJSON(wampMsg(1, "realm1", map[string]any{
		"roles":       map[string]any{"subscriber": map[string]any{}, "publisher": map[string]any{}},
		"authmethods": []string{"ticket"}, "authid": user}))
	ch := rc.readArray()
	if ch[0] == 3.0 {
		return rc, ch
	}
	if len(ch) != 3 || ch[0] != 4.0 || ch[1] != "ticket" {
		t.Fatalf("CHALLENGE %v", ch)
	}
	rc.sendJSON(wampMsg(5, ticket, map[string]any{}))
	return rc, rc.readArray()
}

func TestWAMP1SeedPattern(t *testing.T) {
	s := startServer(t, "")
	tok := s.token("42", "news")
	rc, _ := v1Open(t, s)
	topic := seed("news", "42", tok)
	rc.sendJSON(wampMsg(5, topic))
	s.waitAudit(map[string]any{"event": "subscribe", "topic": "news", "userId": "42", "proto": "wamp", "token_fp": fp(tok)})
	if n := s.publish("news", `{"headline":"seeded"}`); n != 1 {
		t.Fatalf("delivered %d", n)
	}
	ev := rc.readArray()
	if len(ev) != 3 || ev[0] != 8.0 || ev[1] != topic {
		t.Fatalf("EVENT %v does not echo the exact subscribed string", ev)
	}
	if ev[2].(map[string]any)["headline"] != "seeded" {
		t.Fatalf("EVENT data %v", ev[2])
	}
	// CALL → CALLERROR unsupported.
	rc.sendJSON(wampMsg(2, "call-1", "http://example.com/rpc#add", 1, 2))
	if ce := rc.readArray(); ce[0] != 4.0 || ce[1] != "call-1" || ce[2] != "http://portcullis.dev/error#unsupported" {
		t.Fatalf("CALLERROR %v", ce)
	}
	// The raw subscribed string (and the token in it) is in no file.
	checkFor(t, 5*time.Second, func() error {
		return filepath.Walk(s.data, func(p string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return err
			}
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), tok) || strings.Contains(string(b), `{\"topic\"`) {
				return fmt.Errorf("%s holds the seed topic or its token", p)
			}
			return nil
		})
	})
	if strings.Contains(s.stderr.String(), tok) {
		t.Fatal("the token reached the operational log")
	}
}

func TestWAMP1Refusals(t *testing.T) {
	s := startServer(t, "")
	tok := s.token("42", "news")
	first, _ := v1Open(t, s)
	first.sendJSON(wampMsg(5, seed("news", "42", tok)))
	s.waitAudit(map[string]any{"event": "subscribe", "proto": "wamp", "token_fp": fp(tok)})

	cases := []struct {
		name, msg, event, reason string
		code                     int
	}{
		{"replayed token", wampMsg(5, seed("news", "42", tok)), "auth_failed", "token_replayed", 1008},
		{"no token", wampMsg(5, "news"), "auth_failed", "token_missing", 1008},
		{"seed over its cap", wampMsg(5, seed("news", "42", strings.Repeat("A", 4096))), "message_rejected", "schema_violation", 1008},
		{"malformed JSON", `[5,"news"`, "message_rejected", "bad_json", 1007},
		{"not an array", `{"op":"subscribe"}`, "message_rejected", "schema_violation", 1007},
		{"unknown type", `[42,"x"]`, "message_rejected", "unknown_op", 1007},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(s.auditLines())
			rc, _ := v1Open(t, s)
			rc.sendJSON(c.msg)
			if code := rc.closeCode(); code != c.code {
				t.Fatalf("close %d, want %d", code, c.code)
			}
			s.waitAudit(map[string]any{"event": c.event, "reason": c.reason, "proto": "wamp", "code": c.code})
			n := 0
			for _, e := range s.auditLines()[before:] {
				switch e["event"] {
				case "auth_failed", "message_rejected", "subscribe_denied":
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%d refusal events, want exactly 1", n)
			}
		})
	}
	if e := s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_replayed"}); e["token_fp"] != fp(tok) || e["topic"] != "news" {
		t.Fatalf("replay audit %v", e)
	}
}

func TestWAMP2Broker(t *testing.T) {
	s := startServer(t, "")
	tok := s.token("7", "news")
	rc, w := v2Open(t, s, "7", tok)
	if len(w) != 3 || w[0] != 2.0 {
		t.Fatalf("WELCOME %v", w)
	}
	if id := w[1].(float64); id < 1 || id > 1<<53 {
		t.Fatalf("session id %v", id)
	}
	det := w[2].(map[string]any)
	if _, ok := det["roles"].(map[string]any)["broker"]; !ok || det["authid"] != "7" || det["authmethod"] != "ticket" {
		t.Fatalf("WELCOME details %v", det)
	}
	s.waitAudit(map[string]any{"event": "auth_ok", "userId": "7", "proto": "wamp.2.json", "token_fp": fp(tok)})

	rc.sendJSON(`[32,4711,{},"news"]`)
	sub := rc.readArray()
	if sub[0] != 33.0 || sub[1] != 4711.0 {
		t.Fatalf("SUBSCRIBED %v", sub)
	}
	subID := sub[2].(float64)
	if subID < 1 || subID > 1<<53 {
		t.Fatalf("subscription id %v", subID)
	}
	rc.sendJSON(`[32,4712,{},"sport"]`) // the token is for news only
	if e := rc.readArray(); e[0] != 8.0 || e[1] != 32.0 || e[2] != 4712.0 || e[4] != "wamp.error.not_authorized" {
		t.Fatalf("ERROR %v", e)
	}
	s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_topic_mismatch", "topic": "sport", "proto": "wamp.2.json"})
	if n := s.publish("news", `{"v":2}`); n != 1 {
		t.Fatalf("delivered %d", n)
	}
	ev := rc.readArray()
	if ev[0] != 36.0 || ev[1] != subID || ev[2].(float64) < 1 || fmt.Sprint(ev[4]) != "[map[v:2]]" {
		t.Fatalf("EVENT %v", ev)
	}
	rc.sendJSON(wampMsg(34, 4713, subID))
	if u := rc.readArray(); u[0] != 35.0 || u[1] != 4713.0 {
		t.Fatalf("UNSUBSCRIBED %v", u)
	}
	s.publish("news", `{"v":3}`) // no EVENT after UNSUBSCRIBED
	rc.sendJSON(`[6,{},"wamp.close.close_realm"]`)
	if g := rc.readArray(); g[0] != 6.0 || g[2] != "wamp.close.goodbye_and_out" {
		t.Fatalf("after UNSUBSCRIBED and GOODBYE got %v", g)
	}
	if code := rc.closeCode(); code != 1000 {
		t.Fatalf("close %d", code)
	}
}

func TestWAMP2BadTicket(t *testing.T) {
	s := startServer(t, "")
	tok := s.token("7", "news")
	used, _ := v2Open(t, s, "7", tok)
	_ = used
	for _, c := range []struct{ name, ticket, reason string }{
		{"unknown", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "token_unknown"},
		{"replayed", tok, "token_replayed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc, a := v2Open(t, s, "7", c.ticket)
			if a[0] != 3.0 || a[2] != "wamp.error.authentication_failed" {
				t.Fatalf("got %v, want ABORT authentication_failed", a)
			}
			if code := rc.closeCode(); code != 1008 {
				t.Fatalf("close %d", code)
			}
			s.waitAudit(map[string]any{"event": "auth_failed", "reason": c.reason, "proto": "wamp.2.json", "userId": "7"})
		})
	}
}

// One POST /v1/publish reaches a native, a WAMP v1 and a WAMP v2
// subscriber of the same topic.
func TestWAMPMixedProtocols(t *testing.T) {
	s := startServer(t, "")
	nat := dialRaw(t, s)
	ntok := s.token("n", "news")
	nat.sendJSON(map[string]any{"op": "subscribe", "id": 1, "topic": "news", "userId": "n", "token": ntok})
	if m := nat.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("native %v", m)
	}
	v1, _ := v1Open(t, s)
	v1topic := seed("news", "one", s.token("one", "news"))
	v1.sendJSON(wampMsg(5, v1topic))
	v2, _ := v2Open(t, s, "two", s.token("two", "news"))
	v2.sendJSON(`[32,1,{},"news"]`)
	if a := v2.readArray(); a[0] != 33.0 {
		t.Fatalf("v2 %v", a)
	}
	s.waitAll(
		map[string]any{"event": "subscribe", "userId": "n", "proto": "portcullis.v1"},
		map[string]any{"event": "subscribe", "userId": "one", "proto": "wamp"},
		map[string]any{"event": "subscribe", "userId": "two", "proto": "wamp.2.json"},
	)
	if n := s.publish("news", `{"all":3}`); n != 3 {
		t.Fatalf("delivered %d, want 3", n)
	}
	if m := nat.readMsg(); m["op"] != "event" || m["data"].(map[string]any)["all"] != 3.0 {
		t.Fatalf("native %v", m)
	}
	if a := v1.readArray(); a[0] != 8.0 || a[1] != v1topic || a[2].(map[string]any)["all"] != 3.0 {
		t.Fatalf("v1 %v", a)
	}
	if a := v2.readArray(); a[0] != 36.0 || fmt.Sprint(a[4]) != "[map[all:3]]" {
		t.Fatalf("v2 %v", a)
	}
}
