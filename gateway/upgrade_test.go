package gateway

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/clientip"
	"github.com/portcullis-gw/portcullis/policy/decision"
	"github.com/portcullis-gw/portcullis/policy/origin"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

func testUpgrader(t testing.TB) (*upgrader, *conn) {
	chk, err := origin.NewChecker(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	set, err := topics.Compile(nil, topics.Token)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Path: "/ws", Origins: chk, Topics: set}
	o.Limits.setDefaults()
	o.Guard = openGuard{}
	o.ClientIP, _ = clientip.NewResolver(nil, "")
	ls := &loopState{srv: &Server{opts: o}}
	if err := ls.srv.initRules(&o); err != nil {
		t.Fatal(err)
	}
	ls.upgrader.init(ls)
	c := &conn{}
	c.setPeer(netip.MustParseAddr("127.0.0.1"))
	return &ls.upgrader, c
}

const goodReq = "GET /ws?x=1 HTTP/1.1\r\nHost: gw.example:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

func TestUpgrade(t *testing.T) {
	cases := []struct {
		name   string
		extra  string
		path   string
		reject reason.Reason
		status int
		proto  string
	}{
		{name: "no subprotocol", reject: reason.None},
		{name: "native", extra: "Sec-WebSocket-Protocol: portcullis.v1\r\n", proto: "portcullis.v1"},
		{name: "ours among others", extra: "Sec-WebSocket-Protocol: mqtt, portcullis.v1\r\n", proto: "portcullis.v1"},
		{name: "only others", extra: "Sec-WebSocket-Protocol: mqtt\r\n", reject: reason.BadSubprotocol, status: 400},
		{name: "same origin", extra: "Origin: http://gw.example:8080\r\n"},
		{name: "cross origin", extra: "Origin: http://evil.example\r\n", reject: reason.BadOrigin, status: 403},
		{name: "two origins", extra: "Origin: http://gw.example:8080\r\nOrigin: http://evil.example\r\n", reject: reason.BadHeader, status: 400},
		{name: "wrong path", path: "/other", reject: reason.BadPath, status: 404},
	}
	for _, c := range cases {
		up, cn := testUpgrader(t)
		req := goodReq + c.extra + "\r\n"
		if c.path != "" {
			req = strings.Replace(req, "/ws?x=1", c.path, 1)
		}
		res := up.upgrade(cn, up.ls.rules(), []byte(req), time.Now())
		if res.decision.Why() != c.reject || (c.reject != reason.None && res.decision.Status != c.status) {
			t.Errorf("%s: reject %v %d, want %v %d", c.name, res.decision.Why(), res.decision.Status, c.reject, c.status)
			continue
		}
		if c.reject == reason.None {
			if !bytes.HasPrefix(res.response, []byte("HTTP/1.1 101")) ||
				!bytes.Contains(res.response, []byte("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")) {
				t.Errorf("%s: response %q", c.name, res.response)
			}
			if c.proto != "" && !bytes.Contains(res.response, []byte("Sec-Websocket-Protocol: "+c.proto)) &&
				!bytes.Contains(res.response, []byte("Sec-WebSocket-Protocol: "+c.proto)) {
				t.Errorf("%s: protocol not echoed: %q", c.name, res.response)
			}
		}
	}
}

func TestHTTPRejectIsJSON(t *testing.T) {
	b := httpReject(decision.Deny(reason.BadOrigin))
	if !bytes.HasPrefix(b, []byte("HTTP/1.1 403 Forbidden\r\n")) || !bytes.Contains(b, []byte("Connection: close")) ||
		!bytes.HasSuffix(b, []byte(`{"error":"bad_origin","message":"origin not allowed"}`)) {
		t.Fatalf("%q", b)
	}
}

// FuzzUpgrade runs the handshake over arbitrary complete requests: it must
// never panic and must either refuse with a status or answer 101.
func FuzzUpgrade(f *testing.F) {
	f.Add([]byte(goodReq + "\r\n"))
	f.Add([]byte(goodReq + "Sec-WebSocket-Protocol: portcullis.v1, wamp\r\nOrigin: null\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Add([]byte(goodReq + "Host: evil.example\r\nX-A: a\x00\n b\r\n\r\n"))
	f.Add([]byte(goodReq + "X-A: a\r\n\tb\r\nOrigin : x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		up, cn := testUpgrader(t)
		res := up.upgrade(cn, up.ls.rules(), append(in, "\r\n\r\n"...), time.Now())
		if res.decision.Why() == reason.None {
			if !bytes.HasPrefix(res.response, []byte("HTTP/1.1 101")) {
				t.Fatalf("accepted with %q", res.response)
			}
		} else if res.decision.Status < 400 || res.decision.Status > 599 {
			t.Fatalf("refusal with status %d", res.decision.Status)
		}
	})
}

func TestCapStringKeepsCharacters(t *testing.T) {
	s := strings.Repeat("é", 10) // 2 bytes each
	if got := capString(s, 5); got != "éé" {
		t.Fatalf("capString cut a character: %q", got)
	}
	if got := capString("abc", 5); got != "abc" {
		t.Fatalf("short string changed: %q", got)
	}
}
