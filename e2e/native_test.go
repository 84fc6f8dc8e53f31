package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Subscribe with a token and receive a publication, with each third-party
// client.
func TestSubscribeReceive(t *testing.T) {
	s := startServer(t, "")
	for _, kind := range []string{"node", "python"} {
		t.Run(kind, func(t *testing.T) {
			user := "u-" + kind
			tok := s.token(user, "news")
			requireClient(t, kind)
			res := make(chan []clientEvent, 1)
			go func() {
				res <- runClient(t, kind, s.wsURL, "portcullis.v1", "",
					[]any{map[string]any{"op": "subscribe", "id": 1, "topic": "news", "userId": user, "token": tok}}, 3, 15*time.Second)
			}()
			s.waitAudit(map[string]any{"event": "subscribe", "userId": user, "topic": "news"})
			if n := s.publish("news", `{"headline":"hello from `+kind+`"}`); n < 1 {
				t.Fatalf("delivered %d", n)
			}
			evs := <-res
			got := received(evs)
			if len(got) != 3 || got[0]["op"] != "welcome" || got[1]["op"] != "subscribed" || got[1]["id"] != 1.0 ||
				got[2]["op"] != "event" || got[2]["topic"] != "news" ||
				got[2]["data"].(map[string]any)["headline"] != "hello from "+kind {
				t.Fatalf("received %v", got)
			}
			if *evs[0].Open != "portcullis.v1" {
				t.Fatalf("subprotocol %q", *evs[0].Open)
			}
			s.waitAudit(map[string]any{"event": "auth_ok", "userId": user, "token_fp": fp(tok)})
		})
	}
}

// Each bad message gets its exact error reply and its audit line.
func TestBadMessages(t *testing.T) {
	s := startServer(t, "tokens: {ttl: 60s}\n")
	expired := func() string {
		code, out := s.api("POST", "/v1/tokens", `{"userId":"x","ttl":"1s"}`)
		if code != 201 {
			t.Fatal(out)
		}
		time.Sleep(1500 * time.Millisecond) // let it expire
		return out["token"].(string)
	}()
	otherUser := s.token("someone-else")
	wrongTopic := s.token("u1", "sport")
	cases := []struct {
		name   string
		msg    any
		code   string
		event  string
		reason string
	}{
		{"bad JSON", `{"op":`, "bad_request", "message_rejected", "bad_json"},
		{"unknown op", map[string]any{"op": "dance", "id": 7}, "unsupported", "message_rejected", "unknown_op"},
		{"extra field", map[string]any{"op": "ping", "id": 7, "x": 1}, "bad_request", "message_rejected", "schema_violation"},
		{"missing token", map[string]any{"op": "subscribe", "id": 7, "topic": "news", "userId": "u1"}, "auth_failed", "auth_failed", "token_missing"},
		{"wrong token", map[string]any{"op": "subscribe", "id": 7, "topic": "news", "userId": "u1", "token": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, "auth_failed", "auth_failed", "token_unknown"},
		{"expired token", map[string]any{"op": "subscribe", "id": 7, "topic": "news", "userId": "x", "token": expired}, "auth_failed", "auth_failed", "token_expired"},
		{"token of another user", map[string]any{"op": "subscribe", "id": 7, "topic": "news", "userId": "u1", "token": otherUser}, "auth_failed", "auth_failed", "token_user_mismatch"},
		{"token for another topic", map[string]any{"op": "subscribe", "id": 7, "topic": "news", "userId": "u1", "token": wrongTopic}, "auth_failed", "auth_failed", "token_topic_mismatch"},
		{"client publish denied", map[string]any{"op": "publish", "id": 7, "topic": "news", "data": 1}, "forbidden", "message_rejected", "publish_denied"},
		{"unsubscribe unknown", map[string]any{"op": "unsubscribe", "id": 7, "topic": "news"}, "bad_request", "message_rejected", "not_subscribed"},
	}
	for i, c := range cases {
		kind := []string{"node", "python"}[i%2]
		t.Run(c.name+"/"+kind, func(t *testing.T) {
			before := len(s.auditLines())
			evs := runClient(t, kind, s.wsURL, "portcullis.v1", "", []any{c.msg}, 2, 10*time.Second)
			got := received(evs)
			if len(got) != 2 || got[1]["op"] != "error" || got[1]["code"] != c.code {
				t.Fatalf("received %v, want error %s", got, c.code)
			}
			if c.code == "auth_failed" && got[1]["message"] != "authentication failed" {
				t.Fatalf("auth error reveals detail: %v", got[1]["message"])
			}
			e := s.waitAudit(map[string]any{"event": c.event, "reason": c.reason})
			if e["seq"].(float64) <= float64(before) && before > 0 {
				t.Logf("matched an older line: %v", e)
			}
		})
	}
}

// A token redeemed by one connection is refused to any other: a replay.
func TestTokenReplay(t *testing.T) {
	s := startServer(t, "")
	tok := s.token("42", "news")
	sub := map[string]any{"op": "subscribe", "id": 1, "topic": "news", "userId": "42", "token": tok}
	first := received(runClient(t, "node", s.wsURL, "portcullis.v1", "", []any{sub}, 2, 10*time.Second))
	if len(first) != 2 || first[1]["op"] != "subscribed" {
		t.Fatalf("first connection: %v", first)
	}
	second := received(runClient(t, "python", s.wsURL, "portcullis.v1", "", []any{sub}, 2, 10*time.Second))
	if len(second) != 2 || second[1]["code"] != "auth_failed" {
		t.Fatalf("second connection: %v", second)
	}
	s.waitAudit(map[string]any{"event": "auth_failed", "reason": "token_replayed", "token_fp": fp(tok)})
}

// Bad Origin → 403 before the upgrade, audited.
func TestBadOrigin(t *testing.T) {
	s := startServer(t, "")
	evs := runClient(t, "node", s.wsURL, "portcullis.v1", "https://evil.example", nil, 1, 10*time.Second)
	if len(evs) == 0 || evs[0].HTTP != 403 {
		t.Fatalf("client saw %+v, want HTTP 403", evs)
	}
	s.waitAudit(map[string]any{"event": "conn_rejected", "reason": "bad_origin", "code": 403})
	// Same host is fine.
	ok := runClient(t, "python", s.wsURL, "portcullis.v1", "http://"+s.wsAddr, nil, 1, 10*time.Second)
	if len(received(ok)) != 1 {
		t.Fatalf("same-origin client: %+v", ok)
	}
}

// An offered subprotocol that is not ours → 400.
func TestBadSubprotocol(t *testing.T) {
	s := startServer(t, "")
	evs := runClient(t, "node", s.wsURL, "mqtt", "", nil, 1, 10*time.Second)
	if len(evs) == 0 || evs[0].HTTP != 400 {
		t.Fatalf("client saw %+v, want HTTP 400", evs)
	}
	s.waitAudit(map[string]any{"event": "conn_rejected", "reason": "bad_subprotocol", "code": 400})
}

// Frame-level violations close with their RFC 6455 code and are audited.
func TestFrameViolations(t *testing.T) {
	s := startServer(t, "")
	cases := []struct {
		name   string
		send   func(rc *rawConn)
		code   int
		reason string
		detail string
	}{
		{"oversize frame", func(rc *rawConn) { rc.frame(true, 2, make([]byte, 70000), true) }, 1009, "frame_too_large", "frame_too_large"},
		{"invalid UTF-8", func(rc *rawConn) { rc.frame(true, 1, []byte{'a', 0xff}, true) }, 1007, "invalid_utf8", "invalid_utf8"},
		{"unmasked frame", func(rc *rawConn) { rc.frame(true, 1, []byte(`{"op":"ping"}`), false) }, 1002, "protocol_error", "unmasked_frame"},
		{"reserved opcode", func(rc *rawConn) { rc.frame(true, 3, nil, true) }, 1002, "protocol_error", "bad_opcode"},
		{"fragmented ping", func(rc *rawConn) { rc.frame(false, 9, nil, true) }, 1002, "protocol_error", "control_fragmented"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc := dialRaw(t, s)
			c.send(rc)
			if got := rc.expectClose(); got != c.code {
				t.Fatalf("close code %d, want %d", got, c.code)
			}
			s.waitAudit(map[string]any{"event": "message_rejected", "reason": c.reason, "detail": c.detail, "code": c.code})
		})
	}
}

// A handshake dribbled a byte at a time is cut off by handshake_timeout.
func TestDribbledHandshake(t *testing.T) {
	s := startServer(t, "limits: {handshake_timeout: 2s}\n")
	c, err := net.Dial("tcp", s.wsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
	closed := make(chan string, 1)
	go func() {
		b := make([]byte, 512)
		n, _ := c.Read(b) // returns when the server answers or closes
		closed <- string(b[:n])
	}()
	for i := 0; ; i++ {
		select {
		case resp := <-closed:
			if !strings.Contains(resp, "408") {
				t.Fatalf("server sent %q, want 408", resp)
			}
			s.waitAudit(map[string]any{"event": "conn_rejected", "reason": "handshake_timeout"})
			return
		case <-time.After(200 * time.Millisecond):
			if i > 100 {
				t.Fatal("server never cut the dribbling client off")
			}
			_, _ = c.Write([]byte{req[i%len(req)]})
		}
	}
}

// A client that never reads is dropped by the slow-consumer policy and the
// server's memory stays bounded.
func TestSlowConsumer(t *testing.T) {
	s := startServer(t, "limits: {write_queue_bytes: 1048576, write_stall_timeout: 3s}\n")
	tok := s.token("slow", "firehose")
	rc := dialRaw(t, s)
	payload := fmt.Sprintf(`{"op":"subscribe","id":1,"topic":"firehose","userId":"slow","token":%q}`, tok)
	rc.frame(true, 1, []byte(payload), true)
	if _, p := rc.read(); !strings.Contains(string(p), "subscribed") {
		t.Fatalf("subscribe: %q", p)
	}
	// Stop reading; shrink our receive window so the kernel holds little.
	if tc, ok := rc.c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	blob := `"` + strings.Repeat("x", 60000) + `"`
	for i := 0; i < 200; i++ {
		req, _ := http.NewRequest("POST", s.adminURL+"/v1/publish", strings.NewReader(`{"topic":"firehose","data":`+blob+`}`))
		req.Header.Set("Authorization", "Bearer "+s.key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	e := s.waitAudit(map[string]any{"event": "message_rejected", "reason": "slow_consumer"})
	if e["code"] != 1008.0 {
		t.Fatalf("slow consumer audit %v", e)
	}
	s.waitAudit(map[string]any{"event": "conn_close", "reason": "slow_consumer"})
	// 200 × 60 KB were published; the server kept at most a queue's worth.
	st := rssKB(t, s.cmd.Process.Pid)
	if st > 200*1024 {
		t.Fatalf("server RSS %d KiB after a slow consumer", st)
	}
}

// SIGTERM: every client gets 1001 and the server exits 0.
func TestSigterm(t *testing.T) {
	s := startServer(t, "")
	requireClient(t, "node")
	requireClient(t, "python")
	res := make(chan []clientEvent, 2)
	for _, kind := range []string{"node", "python"} {
		go func(kind string) {
			res <- runClient(t, kind, s.wsURL, "portcullis.v1", "", nil, 99, 15*time.Second)
		}(kind)
	}
	checkFor(t, 10*time.Second, func() error {
		n := 0
		for _, e := range s.auditLines() {
			if e["event"] == "conn_open" {
				n++
			}
		}
		if n < 2 {
			return fmt.Errorf("%d connections open", n)
		}
		return nil
	})
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		select {
		case evs := <-res:
			if code := closeCode(evs); code != 1001 {
				t.Fatalf("client close code %d, want 1001 (%+v)", code, evs)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a client never saw the server close")
		}
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("server exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not exit within 10 s")
	}
	lines := s.auditLines()
	if last := lines[len(lines)-1]; last["detail"] != "gateway stopped on terminated" {
		t.Fatalf("last audit line %v", last)
	}
}

// Admin API without the key → 401 JSON and an audit line.
func TestAdminAuth(t *testing.T) {
	s := startServer(t, "")
	resp, err := http.Post(s.adminURL+"/v1/publish", "application/json", strings.NewReader(`{"topic":"news","data":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	s.waitAudit(map[string]any{"event": "auth_failed", "stage": "admin", "reason": "admin_key_missing"})
	if code, out := s.api("POST", "/v1/publish", `{"topic":"bad topic","data":1}`); code != 400 || out["error"] != "bad_request" {
		t.Fatalf("bad topic: %d %v", code, out)
	}
	if code, out := s.api("POST", "/v1/tokens", `{"userId":"a","ttl":"2h"}`); code != 400 || out["error"] != "bad_request" {
		t.Fatalf("ttl over max: %d %v", code, out)
	}
}
