package e2e

// What the gateway relays and what it accepts at the edge: admin-published
// and feed data must be UTF-8 JSON no deeper than client data (a byte that
// is not UTF-8 in a text frame makes browsers drop the connection), admin
// bodies are decoded strictly, and the upgrade request must obey HTTP/1.1
// field syntax.

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

const edgeTopics = "topics:\n  - match: news\n    subscribe: public\n"

// edgeSubscriber upgrades from the allow-listed address and subscribes to
// topic.
func edgeSubscriber(t *testing.T, s *server, topic string) *rawConn {
	t.Helper()
	rc := upgradeFrom(t, s, "127.0.0.1")
	rc.sendJSON(map[string]any{"op": "subscribe", "id": 1, "topic": topic})
	if m := rc.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("subscribe %s: %v", topic, m)
	}
	return rc
}

// Publishing data that is not UTF-8, or nests deeper than a client may, is
// refused with 400 and audited; the subscribers stay connected and get the
// next valid publication. Admin JSON keys are exact: a duplicate or a
// case variant of "userId" is 400 naming the key, and nothing is minted.
func TestEdgeAdminPublishAndStrictKeys(t *testing.T) {
	s := startServer(t, edgeTopics)
	subs := []*rawConn{edgeSubscriber(t, s, "news"), edgeSubscriber(t, s, "news")}

	bad := []struct{ name, body, message string }{
		{"0xff in a string", "{\"topic\":\"news\",\"data\":{\"t\":\"caf\xff\"}}",
			"body is not valid UTF-8 JSON: byte 0xff at offset 32"},
		{"too deep", `{"topic":"news","data":` + strings.Repeat("[", 32) + strings.Repeat("]", 32) + `}`,
			"data nests deeper than 31 levels of arrays and objects"},
		{"duplicate key", `{"topic":"news","data":1,"topic":"other"}`, `duplicate key "topic"`},
	}
	for _, c := range bad {
		code, out := s.api("POST", "/v1/publish", c.body)
		if code != 400 || out["error"] != "bad_request" || out["message"] != c.message {
			t.Fatalf("%s: %d %v", c.name, code, out)
		}
	}
	for _, c := range bad {
		e := s.waitAudit(map[string]any{"event": "admin", "reason": "bad_request", "code": 400,
			"detail": "POST /v1/publish: " + c.message})
		if e["stage"] != "admin" || e["ip"] != "127.0.0.1" {
			t.Fatalf("%s: audit %v", c.name, e)
		}
	}

	// The deepest data a client may publish goes through, and every
	// subscriber is still there to get it: nothing above was relayed.
	deepest := strings.Repeat("[", 31) + "1" + strings.Repeat("]", 31)
	if n := s.publish("news", deepest); n != 2 {
		t.Fatalf("delivered %d, want 2", n)
	}
	if n := s.publish("news", `{"t":"café"}`); n != 2 {
		t.Fatalf("delivered %d, want 2", n)
	}
	for i, rc := range subs {
		if m := rc.readMsg(); m["op"] != "event" || fmt.Sprint(m["data"]) != fmt.Sprint(nest(31)) {
			t.Fatalf("subscriber %d: first event %v, want the deepest valid data", i, m)
		}
		if m := rc.readMsg(); m["op"] != "event" || fmt.Sprint(m["data"]) != "map[t:café]" {
			t.Fatalf("subscriber %d: second event %v", i, m)
		}
	}

	keys := []struct{ body, message string }{
		{`{"userId":"a","userid":"b"}`, `unknown key "userid": keys are case-sensitive, did you mean "userId"?`},
		{`{"userId":"a","userId":"b"}`, `duplicate key "userId"`},
		{`{"UserID":"b","topics":["news"]}`, `unknown key "UserID": keys are case-sensitive, did you mean "userId"?`},
	}
	for _, c := range keys {
		code, out := s.api("POST", "/v1/tokens", c.body)
		if code != 400 || out["error"] != "bad_request" || out["message"] != c.message {
			t.Fatalf("%s: %d %v", c.body, code, out)
		}
		s.waitAudit(map[string]any{"event": "admin", "reason": "bad_request", "code": 400,
			"detail": "POST /v1/tokens: " + c.message})
	}
	// Bans are decoded by the same rules.
	code, out := s.api("POST", "/v1/bans", `{"prefix":"127.0.0.99","Prefix":"127.0.0.98"}`)
	if code != 400 || !strings.Contains(fmt.Sprint(out["message"]), `unknown key "Prefix"`) {
		t.Fatalf("ban with a case variant: %d %v", code, out)
	}
	if len(s.bans()) != 0 {
		t.Fatalf("bans %v", s.bans())
	}
	// No token was ever issued, for a or b; a well-formed request still mints.
	if n := s.auditCount(map[string]any{"event": "admin", "detail": "token issued"}); n != 0 {
		t.Fatalf("%d tokens issued by refused requests", n)
	}
	s.token("b", "news")
	s.waitAudit(map[string]any{"event": "admin", "detail": "token issued", "userId": "b"})
}

// nest is n nested arrays around 1, as encoding/json decodes them.
func nest(n int) any {
	var v any = 1.0
	for i := 0; i < n; i++ {
		v = []any{v}
	}
	return v
}

// A feed answering with bytes that are not UTF-8 publishes nothing and is
// audited feed_failed; its subscriber stays connected and gets the next
// good answer.
func TestEdgeFeedInvalidUTF8(t *testing.T) {
	var good atomic.Bool
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if good.Load() {
			_, _ = w.Write([]byte(`{"t":"ok"}`))
			return
		}
		_, _ = w.Write([]byte("{\"t\":\"\xc3\x28\"}"))
	}))
	defer up.Close()
	s := startServer(t, fmt.Sprintf("topics:\n  - match: ticker\n    subscribe: public\n    feed: {url: %q, every: 1s}\n", up.URL))
	rc := edgeSubscriber(t, s, "ticker")
	e := s.waitAudit(map[string]any{"event": "feed_failed", "topic": "ticker", "reason": "feed_bad_utf8"})
	if e["severity"] != "warning" || !strings.Contains(fmt.Sprint(e["detail"]), "response is not valid UTF-8") {
		t.Fatalf("audit %v", e)
	}
	good.Store(true)
	if m := rc.readMsg(); m["op"] != "event" || fmt.Sprint(m["data"]) != "map[t:ok]" {
		t.Fatalf("first event %v, want the first good answer", m)
	}
}

// Upgrade requests an HTTP/1.1 server must refuse got 101. Each is now
// 400 bad_header, audited conn_rejected with a detail naming the fault,
// and a strike of weight 1: with maxretry 4, the fourth bans.
func TestEdgeUpgradeBadHeaders(t *testing.T) {
	s := startServer(t, "bans: {allow: [\"127.0.0.1\"], maxretry: 4}\n")
	cases := []struct {
		name   string
		header []string
		detail string
	}{
		{"two Host", []string{"Host: evil.example"}, "header field Host appears more than once"},
		{"two Sec-WebSocket-Key", []string{"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="},
			"header field Sec-WebSocket-Key appears more than once"},
		{"NUL in a value", []string{"User-Agent: a\x00b"}, "control character NUL (0x00) in the value of header field User-Agent"},
		{"two Origin", []string{"Origin: http://" + s.wsAddr, "Origin: http://evil.example"},
			"header field Origin appears more than once"},
	}
	for i, c := range cases {
		if i > 0 && len(s.bans()) != 0 {
			t.Fatalf("banned after %d strikes of weight 1: %v", i, s.bans())
		}
		rep := refusedFrom(t, s, "127.0.0.7", c.header...)
		if rep.status != 400 || rep.body["error"] != "bad_header" || rep.body["message"] != c.detail {
			t.Fatalf("%s: %d %q", c.name, rep.status, rep.raw)
		}
		e := s.waitAudit(map[string]any{"event": "conn_rejected", "ip": "127.0.0.7", "reason": "bad_header", "detail": c.detail})
		if e["stage"] != "handshake" || e["code"] != 400.0 || e["severity"] != "warning" {
			t.Fatalf("%s: audit %v", c.name, e)
		}
	}
	ban := s.waitAudit(map[string]any{"event": "ban", "counted_prefix": "127.0.0.7/32"})
	if ban["reason"] != "bad_header" || ban["actor"] != "auto" {
		t.Fatalf("ban audit %v", ban)
	}
	if b := s.bans()["127.0.0.7/32"]; b == nil || b["reason"] != "bad_header" {
		t.Fatalf("GET /v1/bans: %v", s.bans())
	}

	// Line folding and a bare LF from another address: refused the same
	// way; a well-formed request from it still upgrades.
	for _, c := range []struct {
		header []string
		detail string
	}{
		{[]string{"X-A: a", " b"}, "a header line starts with whitespace (obsolete line folding is not accepted)"},
		{[]string{"X-A: a\nHost: evil.example"}, "control character bare LF (0x0a) in the value of header field X-A"},
	} {
		rep := refusedFrom(t, s, "127.0.0.8", c.header...)
		if rep.status != 400 || rep.body["error"] != "bad_header" || rep.body["message"] != c.detail {
			t.Fatalf("%q: %d %q", c.header, rep.status, rep.raw)
		}
		s.waitAudit(map[string]any{"event": "conn_rejected", "ip": "127.0.0.8", "reason": "bad_header", "detail": c.detail})
	}
	upgradeFrom(t, s, "127.0.0.8", "Origin: http://"+s.wsAddr, "User-Agent: a\tb")
}
