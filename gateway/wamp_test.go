package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/policy/origin"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// recSink records audit events for tests.
type recSink struct {
	mu  sync.Mutex
	evs []audit.Event
}

func (r *recSink) Emit(e audit.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
}

func (r *recSink) all() []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]audit.Event(nil), r.evs...)
}

// find waits for an event with the given name and reason ("" matches any).
func (r *recSink) find(t *testing.T, event audit.Kind, why string) audit.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range r.all() {
			if e.Event == event && (why == "" || e.Reason.String() == why) {
				return e
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no audit event %s %s in %+v", event, why, r.all())
	return audit.Event{}
}

func startWAMPServer(t *testing.T) (*Server, *tokens.Store, *recSink) {
	t.Helper()
	chk, _ := origin.NewChecker(nil, true)
	set, err := topics.Compile([]topics.Rule{
		{Match: "news"},
		{Match: "chat", Publish: topics.Token},
		{Match: "open", Subscribe: topics.Public},
	}, topics.Deny)
	if err != nil {
		t.Fatal(err)
	}
	store := tokens.NewStore(tokens.Options{})
	val, err := schema.New(schema.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recSink{}
	s, err := Start(Options{Listen: "127.0.0.1:0", Origins: chk, Topics: set, Tokens: store, Schema: val,
		Version: "test", Audit: rec, Loops: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(t.Context()) })
	return s, store, rec
}

// wsClient is a minimal test client over gobwas/ws.
type wsClient struct {
	t     *testing.T
	c     net.Conn
	r     io.Reader
	proto string
}

func dialProto(t *testing.T, s *Server, proto string) *wsClient {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	u, _ := url.Parse("ws://" + s.Addr().String() + "/ws")
	br, hs, err := (ws.Dialer{Protocols: []string{proto}}).Upgrade(c, u)
	if err != nil {
		t.Fatal(err)
	}
	if hs.Protocol != proto {
		t.Fatalf("server chose %q, want %q", hs.Protocol, proto)
	}
	var rd io.Reader = c
	if br != nil {
		rd = io.MultiReader(br, c)
	}
	return &wsClient{t: t, c: c, r: rd, proto: proto}
}

func (w *wsClient) send(msg string) {
	w.t.Helper()
	if err := wsutil.WriteClientText(w.c, []byte(msg)); err != nil {
		w.t.Fatal(err)
	}
}

// recv returns the next text message, or fails the test.
func (w *wsClient) recv() []byte {
	w.t.Helper()
	b, op, err := wsutil.ReadServerData(struct {
		io.Reader
		io.Writer
	}{w.r, w.c})
	if err != nil {
		w.t.Fatalf("read: %v", err)
	}
	if op != ws.OpText {
		w.t.Fatalf("op %v", op)
	}
	return b
}

func (w *wsClient) recvArray() []any {
	w.t.Helper()
	var a []any
	b := w.recv()
	if err := json.Unmarshal(b, &a); err != nil {
		w.t.Fatalf("%q: %v", b, err)
	}
	return a
}

// closed reads until the close frame and returns its code.
func (w *wsClient) closed() int {
	w.t.Helper()
	for {
		h, err := ws.ReadHeader(w.r)
		if err != nil {
			w.t.Fatalf("read: %v", err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(w.r, p); err != nil {
			w.t.Fatal(err)
		}
		if h.OpCode == ws.OpClose {
			if len(p) < 2 {
				return 1005
			}
			return int(p[0])<<8 | int(p[1])
		}
	}
}

func mint(t *testing.T, store *tokens.Store, user string, topics ...string) string {
	t.Helper()
	tok, _, err := store.Mint(user, topics, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func seedTopic(topic, user, token string) string {
	b, _ := json.Marshal(map[string]string{"topic": topic, "userId": user, "token": token})
	return string(b)
}

func wampFrame(v ...any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// An idle connection stays small: WAMP state, older grants and the write
// backlog live outside conn.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > connSize {
		t.Fatalf("conn is %d bytes, want at most %d", n, connSize)
	}
	if n := unsafe.Sizeof(subscription{}); n > 24 {
		t.Fatalf("subscription is %d bytes, want at most 24", n)
	}
}

func TestWAMP1SeedSubscribeAndEvent(t *testing.T) {
	s, store, rec := startWAMPServer(t)
	w := dialProto(t, s, "wamp")
	welcome := w.recvArray()
	if len(welcome) != 4 || welcome[0] != 0.0 || welcome[2] != 1.0 || welcome[3] != "portcullis/test" {
		t.Fatalf("WELCOME %v", welcome)
	}
	if _, ok := welcome[1].(string); !ok {
		t.Fatalf("session id not a string: %v", welcome)
	}
	tok := mint(t, store, "42", "news")
	seed := seedTopic("news", "42", tok)
	w.send(wampFrame(5, seed))
	w.send(wampFrame(1, "o", "op"))
	w.send(wampFrame(5, "o:en")) // CURIE → "open", a public topic
	rec.find(t, audit.KindSubscribe, "")
	checkFor(t, func() bool { return s.Stats().Subscriptions == 2 })
	if n, err := s.Publish("news", []byte(`{"h":1}`)); err != nil || n != 1 {
		t.Fatalf("delivered %d", n)
	}
	ev := w.recvArray()
	if len(ev) != 3 || ev[0] != 8.0 || ev[1] != seed {
		t.Fatalf("EVENT %v does not echo the subscribed string", ev)
	}
	s.Publish("open", []byte(`2`))
	if ev := w.recvArray(); ev[1] != "o:en" || ev[2] != 2.0 {
		t.Fatalf("EVENT %v, want the CURIE echoed", ev)
	}
	// CALL → CALLERROR
	w.send(wampFrame(2, "c1", "o:add", 1, 2))
	if ce := w.recvArray(); ce[0] != 4.0 || ce[1] != "c1" || ce[2] != "http://portcullis.dev/error#unsupported" {
		t.Fatalf("CALLERROR %v", ce)
	}
	// UNSUBSCRIBE with the exact string: no more events.
	w.send(wampFrame(6, seed))
	rec.find(t, audit.KindUnsubscribe, "")
	s.Publish("news", []byte(`3`))
	s.Publish("open", []byte(`4`))
	if ev := w.recvArray(); ev[1] != "o:en" || ev[2] != 4.0 {
		t.Fatalf("after unsubscribe got %v", ev)
	}
	for _, e := range rec.all() {
		if e.Proto == "" && e.Event != audit.KindConnRejected {
			t.Fatalf("event without proto: %+v", e)
		}
		if e.Conn != 0 && e.Proto != "wamp" {
			t.Fatalf("proto %q", e.Proto)
		}
		b, _ := json.Marshal(e)
		if bytes.Contains(b, []byte(tok)) || bytes.Contains(b, []byte(`{\"topic`)) {
			t.Fatalf("raw seed or token in the audit trail: %s", b)
		}
	}
	if e := rec.find(t, audit.KindAuthOK, ""); e.Topic != "news" || e.UserID != "42" || e.TokenFP != audit.TokenFP(tok) {
		t.Fatalf("auth_ok %+v", e)
	}
}

func TestWAMP1Refusals(t *testing.T) {
	s, store, rec := startWAMPServer(t)
	tok := mint(t, store, "42", "news")
	first := dialProto(t, s, "wamp")
	first.recv()
	first.send(wampFrame(5, seedTopic("news", "42", tok)))
	rec.find(t, audit.KindSubscribe, "")

	cases := []struct {
		name, msg string
		code      int
		event     audit.Kind
		reason    string
	}{
		{"replayed token", wampFrame(5, seedTopic("news", "42", tok)), 1008, audit.KindAuthFailed, "token_replayed"},
		{"no token", wampFrame(5, "news"), 1008, audit.KindAuthFailed, "token_missing"},
		{"denied topic", wampFrame(5, "secret"), 1008, audit.KindSubscribeDenied, "topic_denied"},
		{"bad topic name", wampFrame(5, "http://example.com/x"), 1008, audit.KindMessageRejected, "schema_violation"},
		{"seed not JSON", wampFrame(5, `{"topic":`), 1008, audit.KindMessageRejected, "bad_json"},
		{"seed too long", wampFrame(5, seedTopic("news", "42", strings.Repeat("A", 3000))), 1008, audit.KindMessageRejected, "schema_violation"},
		{"seed extra key", wampFrame(5, `{"topic":"news","op":"publish"}`), 1008, audit.KindMessageRejected, "schema_violation"},
		{"publish denied", wampFrame(7, "news", 1), 1008, audit.KindMessageRejected, "publish_denied"},
		{"not JSON", `[5,"news"`, 1007, audit.KindMessageRejected, "bad_json"},
		{"not an array", `{"op":"subscribe"}`, 1007, audit.KindMessageRejected, "schema_violation"},
		{"unknown type", `[99,"x"]`, 1007, audit.KindMessageRejected, "unknown_op"},
		{"topic not a string", `[5,{}]`, 1007, audit.KindMessageRejected, "schema_violation"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(rec.all())
			w := dialProto(t, s, "wamp")
			w.recv()
			w.send(c.msg)
			if code := w.closed(); code != c.code {
				t.Fatalf("close %d, want %d", code, c.code)
			}
			var refusals []audit.Event
			checkFor(t, func() bool {
				refusals = refusals[:0]
				for _, e := range rec.all()[before:] {
					if e.Event.Refusal() {
						refusals = append(refusals, e)
					}
				}
				return len(refusals) >= 1
			})
			if len(refusals) != 1 || refusals[0].Event != c.event || refusals[0].Reason.String() != c.reason ||
				refusals[0].Proto != "wamp" || refusals[0].Code != c.code {
				t.Fatalf("refusals %+v, want one %s %s", refusals, c.event, c.reason)
			}
			b, _ := json.Marshal(refusals[0])
			if bytes.Contains(b, []byte(tok)) || bytes.Contains(b, []byte("AAAAAAAA")) {
				t.Fatalf("token in the audit event: %s", b)
			}
		})
	}
}

// checkFor polls f for up to 5 seconds.
func checkFor(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wamp2Session dials, says HELLO and authenticates with ticket.
func wamp2Session(t *testing.T, s *Server, user, ticket string) (*wsClient, []any) {
	t.Helper()
	w := dialProto(t, s, "wamp.2.json")
	w.send(wampFrame(1, "realm1", map[string]any{"roles": map[string]any{"subscriber": map[string]any{}, "publisher": map[string]any{}},
		"authmethods": []string{"ticket"}, "authid": user}))
	if ch := w.recvArray(); ch[0] != 4.0 || ch[1] != "ticket" {
		t.Fatalf("CHALLENGE %v", ch)
	}
	w.send(wampFrame(5, ticket, map[string]any{}))
	return w, w.recvArray()
}

func TestWAMP2Broker(t *testing.T) {
	s, store, rec := startWAMPServer(t)
	tok := mint(t, store, "42")
	w, welcome := wamp2Session(t, s, "42", tok)
	if welcome[0] != 2.0 {
		t.Fatalf("WELCOME %v", welcome)
	}
	sess := welcome[1].(float64)
	if sess < 1 || sess > 1<<53 {
		t.Fatalf("session id %v", sess)
	}
	det := welcome[2].(map[string]any)
	if _, ok := det["roles"].(map[string]any)["broker"]; !ok || det["authid"] != "42" || det["authmethod"] != "ticket" {
		t.Fatalf("WELCOME details %v", det)
	}
	w.send(`[32,713845233,{},"news"]`)
	sub := w.recvArray()
	if sub[0] != 33.0 || sub[1] != 713845233.0 {
		t.Fatalf("SUBSCRIBED %v", sub)
	}
	// A second subscriber of the topic gets the same subscription id,
	// and the very same EVENT bytes.
	w2, _ := wamp2Session(t, s, "43", mint(t, store, "43"))
	w2.send(`[32,1,{},"news"]`)
	if sub2 := w2.recvArray(); sub2[2] != sub[2] {
		t.Fatalf("subscription ids %v and %v differ", sub[2], sub2[2])
	}
	w.send(`[32,2,{},"secret"]`)
	if e := w.recvArray(); e[0] != 8.0 || e[1] != 32.0 || e[2] != 2.0 || e[4] != "wamp.error.not_authorized" {
		t.Fatalf("ERROR %v", e)
	}
	rec.find(t, audit.KindSubscribeDenied, "topic_denied")
	if n, err := s.Publish("news", []byte(`{"h":1}`)); err != nil || n != 2 {
		t.Fatalf("delivered %d", n)
	}
	b1, b2 := w.recv(), w2.recv()
	if !bytes.Equal(b1, b2) {
		t.Fatalf("EVENT frames differ: %s %s", b1, b2)
	}
	var ev []any
	_ = json.Unmarshal(b1, &ev)
	if ev[0] != 36.0 || ev[1] != sub[2] || ev[3] == nil || fmt.Sprint(ev[4]) != "[map[h:1]]" {
		t.Fatalf("EVENT %v", ev)
	}
	// PUBLISH where the rule allows it, acknowledged; the publisher is
	// excluded by default.
	w.send(`[32,3,{},"chat"]`)
	w.recvArray()
	w2.send(`[32,3,{},"chat"]`)
	w2.recvArray()
	w.send(`[16,4,{"acknowledge":true},"chat",[{"m":"hi"}]]`)
	if p := w.recvArray(); p[0] != 17.0 || p[1] != 4.0 {
		t.Fatalf("PUBLISHED %v", p)
	}
	if ev := w2.recvArray(); ev[0] != 36.0 || fmt.Sprint(ev[4]) != "[map[m:hi]]" {
		t.Fatalf("EVENT %v", ev)
	}
	w.send(`[16,5,{"acknowledge":true},"news",[1]]`)
	if e := w.recvArray(); e[0] != 8.0 || e[1] != 16.0 || e[4] != "wamp.error.not_authorized" {
		t.Fatalf("publish to news: %v", e)
	}
	// UNSUBSCRIBE, then no EVENT for it.
	w.send(wampFrame(34, 6, sub[2]))
	if u := w.recvArray(); u[0] != 35.0 || u[1] != 6.0 {
		t.Fatalf("UNSUBSCRIBED %v", u)
	}
	w.send(wampFrame(34, 7, sub[2]))
	if e := w.recvArray(); e[4] != "wamp.error.no_such_subscription" {
		t.Fatalf("ERROR %v", e)
	}
	s.Publish("news", []byte(`2`))
	w2.recv()
	// GOODBYE is echoed.
	w.send(`[6,{},"wamp.close.close_realm"]`)
	if g := w.recvArray(); g[0] != 6.0 || g[2] != "wamp.close.goodbye_and_out" {
		t.Fatalf("GOODBYE %v", g)
	}
	if code := w.closed(); code != 1000 {
		t.Fatalf("close %d", code)
	}
	if e := rec.find(t, audit.KindAuthOK, ""); e.Proto != "wamp.2.json" || e.UserID != "42" || e.TokenFP != audit.TokenFP(tok) {
		t.Fatalf("auth_ok %+v", e)
	}
}

func TestWAMP2Refusals(t *testing.T) {
	s, store, rec := startWAMPServer(t)
	used := mint(t, store, "42")
	wamp2Session(t, s, "42", used)
	hello := func(extra map[string]any) string {
		d := map[string]any{"roles": map[string]any{"subscriber": map[string]any{}}}
		for k, v := range extra {
			d[k] = v
		}
		return wampFrame(1, "realm1", d)
	}
	cases := []struct {
		name  string
		msgs  []string
		abort string
		code  int
		event audit.Kind
		why   string
	}{
		{"replayed ticket", []string{hello(map[string]any{"authmethods": []string{"ticket"}, "authid": "42"}), wampFrame(5, used, map[string]any{})},
			"wamp.error.authentication_failed", 1008, audit.KindAuthFailed, "token_replayed"},
		{"unknown ticket", []string{hello(map[string]any{"authmethods": []string{"ticket"}, "authid": "42"}), wampFrame(5, "AAAAAAAAAAAAAAAAAAAAAA", map[string]any{})},
			"wamp.error.authentication_failed", 1008, audit.KindAuthFailed, "token_unknown"},
		{"other user's ticket", []string{hello(map[string]any{"authmethods": []string{"ticket"}, "authid": "43"}), wampFrame(5, mint(t, store, "42"), map[string]any{})},
			"wamp.error.authentication_failed", 1008, audit.KindAuthFailed, "token_user_mismatch"},
		{"no ticket offered", []string{hello(map[string]any{"authmethods": []string{"anonymous"}})},
			"wamp.error.no_matching_auth_method", 1008, audit.KindAuthFailed, "token_missing"},
		{"no client role", []string{wampFrame(1, "realm1", map[string]any{"roles": map[string]any{"broker": map[string]any{}}})},
			"wamp.error.protocol_violation", 1007, audit.KindMessageRejected, "schema_violation"},
		{"subscribe before welcome", []string{`[32,1,{},"news"]`}, "wamp.error.protocol_violation", 1007, audit.KindMessageRejected, "protocol_error"},
		{"not JSON", []string{`[1,`}, "wamp.error.protocol_violation", 1007, audit.KindMessageRejected, "bad_json"},
		{"unknown type", []string{`[99]`}, "wamp.error.protocol_violation", 1007, audit.KindMessageRejected, "unknown_op"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(rec.all())
			w := dialProto(t, s, "wamp.2.json")
			for _, m := range c.msgs {
				w.send(m)
			}
			var a []any
			for {
				a = w.recvArray()
				if a[0] != 4.0 {
					break
				}
			}
			if a[0] != 3.0 || a[2] != c.abort {
				t.Fatalf("got %v, want ABORT %s", a, c.abort)
			}
			if code := w.closed(); code != c.code {
				t.Fatalf("close %d, want %d", code, c.code)
			}
			var refusals []audit.Event
			checkFor(t, func() bool {
				refusals = refusals[:0]
				for _, e := range rec.all()[before:] {
					if e.Event.Refusal() {
						refusals = append(refusals, e)
					}
				}
				return len(refusals) >= 1
			})
			if len(refusals) != 1 || refusals[0].Event != c.event || refusals[0].Reason.String() != c.why || refusals[0].Proto != "wamp.2.json" {
				t.Fatalf("refusals %+v, want one %s %s", refusals, c.event, c.why)
			}
		})
	}
}

// One publication reaches native, v1 and v2 subscribers of a topic; each
// protocol's shared frame is encoded once.
func TestOnePublicationThreeProtocols(t *testing.T) {
	s, store, _ := startWAMPServer(t)
	nat := dialSubscribed(t, s, store, "n", "news")
	v1 := dialProto(t, s, "wamp")
	v1.recv()
	v1.send(wampFrame(5, seedTopic("news", "v1", mint(t, store, "v1", "news"))))
	v2, _ := wamp2Session(t, s, "v2", mint(t, store, "v2"))
	v2.send(`[32,1,{},"news"]`)
	v2.recvArray()
	checkFor(t, func() bool { return s.Stats().Subscriptions == 3 })

	p := newPublication("news", []byte(`{"x":1}`))
	if n, err := s.broker.Publish(p); err != nil || n != 3 {
		t.Fatalf("delivered %d", n)
	}
	_ = nat.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := wsutil.ReadServerText(nat)
	if err != nil || !strings.Contains(string(b), `"op":"event"`) {
		t.Fatalf("native %q %v", b, err)
	}
	if ev := v1.recvArray(); ev[0] != 8.0 || !wampIsSeed(ev[1]) {
		t.Fatalf("v1 %v", ev)
	}
	if ev := v2.recvArray(); ev[0] != 36.0 {
		t.Fatalf("v2 %v", ev)
	}
	// The shared frames were encoded (native, v2); the v1 seed subscriber
	// had its own, so the shared v1 frame never was. Publish returns
	// before the writes: the loops' delivered count orders their encoding
	// before the check.
	checkFor(t, func() bool { return s.Stats().Delivered == 3 })
	if p.enc[protoNative] == nil || p.enc[protoWAMP2] == nil || p.enc[protoWAMP1] != nil {
		t.Fatalf("encoded frames: native %v v1 %v v2 %v", p.enc[protoNative] != nil, p.enc[protoWAMP1] != nil, p.enc[protoWAMP2] != nil)
	}
}

func wampIsSeed(v any) bool {
	s, ok := v.(string)
	return ok && strings.HasPrefix(s, `{"`)
}

// A v1 publication honours excludeMe and the eligible list.
func TestWAMP1PublishLists(t *testing.T) {
	s, store, _ := startWAMPServer(t)
	type sess struct {
		w  *wsClient
		id string
	}
	var ss []sess
	for i := 0; i < 3; i++ {
		w := dialProto(t, s, "wamp")
		id := w.recvArray()[1].(string)
		user := fmt.Sprint("u", i)
		w.send(wampFrame(5, seedTopic("chat", user, mint(t, store, user, "chat"))))
		ss = append(ss, sess{w, id})
	}
	checkFor(t, func() bool { return s.Stats().Subscriptions == 3 })
	// excludeMe: the others get it.
	ss[0].w.send(wampFrame(7, "chat", "a", true))
	for _, x := range ss[1:] {
		if ev := x.w.recvArray(); ev[2] != "a" {
			t.Fatalf("EVENT %v", ev)
		}
	}
	// eligible: only session 2, even though 1 is not excluded.
	ss[0].w.send(wampFrame(7, "chat", "b", []string{}, []string{ss[2].id}))
	if ev := ss[2].w.recvArray(); ev[2] != "b" {
		t.Fatalf("EVENT %v", ev)
	}
	// exclude: all but session 1; the publisher gets its own event.
	ss[0].w.send(wampFrame(7, "chat", "c", []string{ss[1].id}))
	for _, i := range []int{0, 2} {
		if ev := ss[i].w.recvArray(); ev[2] != "c" {
			t.Fatalf("session %d EVENT %v", i, ev)
		}
	}
	// session 1 got nothing after "a": the next it sees is "d".
	s.Publish("chat", []byte(`"d"`))
	if ev := ss[1].w.recvArray(); ev[2] != "d" {
		t.Fatalf("session 1 got %v, want d", ev)
	}
}
