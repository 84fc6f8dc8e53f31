package gateway

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/origin"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// gatedSource is a token source that redeems off the loop: each Redeem
// waits until the test lets it through, then answers from a store (or
// with fail, when set).
type gatedSource struct {
	store   *tokens.Store
	gate    chan struct{}
	started chan struct{}
	fail    atomic.Bool
	calls   atomic.Int32
}

func newGatedSource() *gatedSource {
	return &gatedSource{store: tokens.NewStore(tokens.Options{}), gate: make(chan struct{}, 100), started: make(chan struct{}, 100)}
}

func (g *gatedSource) RedeemsRemotely() bool { return true }

func (g *gatedSource) Redeem(token string, p tokens.Presenter, now time.Time) tokens.Result {
	g.calls.Add(1)
	g.started <- struct{}{}
	<-g.gate
	if g.fail.Load() {
		return tokens.Result{Reason: reason.TokenSourceUnavailable, Detail: "token store (Redis) unavailable: test"}
	}
	return g.store.Redeem(token, p, now)
}

func startAsyncServer(t *testing.T, src *gatedSource) (*Server, *recSink) {
	t.Helper()
	return startAsyncServerWith(t, src, src)
}

// startAsyncServerWith starts the server of startAsyncServer with tokens
// from src, a source whose redemptions g gates.
func startAsyncServerWith(t *testing.T, g *gatedSource, src TokenSource) (*Server, *recSink) {
	t.Helper()
	chk, _ := origin.NewChecker(nil, true)
	set, err := topics.Compile([]topics.Rule{{Match: "news"}, {Match: "open", Subscribe: topics.Public}}, topics.Deny)
	if err != nil {
		t.Fatal(err)
	}
	val, err := schema.New(schema.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recSink{}
	// One loop: a redemption that blocked it would stall every
	// connection of the test.
	s, err := Start(Options{Listen: "127.0.0.1:0", Origins: chk, Topics: set, Tokens: src, Schema: val,
		Version: "test", Audit: rec, Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(g.gate) // let any redemption still waiting finish
		_ = s.Shutdown(t.Context())
	})
	return s, rec
}

// recvJSON reads the next native message into a map.
func (w *wsClient) recvJSON() map[string]any {
	w.t.Helper()
	var m map[string]any
	b := w.recv()
	if err := json.Unmarshal(b, &m); err != nil {
		w.t.Fatalf("%q: %v", b, err)
	}
	return m
}

func nativeClient(t *testing.T, s *Server) *wsClient {
	t.Helper()
	w := dialProto(t, s, "portcullis.v1")
	if m := w.recvJSON(); m["op"] != "welcome" {
		t.Fatalf("first message %v", m)
	}
	return w
}

// While a token is redeemed off the loop, the loop serves other
// connections, the redeeming connection's later messages wait, and they
// are answered in the order they were sent once the answer is back.
func TestAsyncRedeemKeepsOrderAndLoopFree(t *testing.T) {
	src := newGatedSource()
	s, rec := startAsyncServer(t, src)
	w, tok := subscribeMinted(t, s, src.store, "u1")
	<-src.started
	w.send(`{"op":"ping","id":2}`)
	w.send(`{"op":"subscribe","id":3,"topic":"open","userId":"u1"}`)

	// The same loop answers another connection meanwhile.
	other := nativeClient(t, s)
	other.send(`{"op":"ping","id":9}`)
	if m := other.recvJSON(); m["op"] != "pong" || m["id"] != 9.0 {
		t.Fatalf("other connection: %v", m)
	}

	src.gate <- struct{}{}
	for i, want := range []struct {
		op string
		id float64
	}{{"subscribed", 1}, {"pong", 2}, {"subscribed", 3}} {
		if m := w.recvJSON(); m["op"] != want.op || m["id"] != want.id {
			t.Fatalf("reply %d: %v, want %s %v", i, m, want.op, want.id)
		}
	}
	ok := rec.find(t, audit.KindAuthOK, "")
	if ok.UserID != "u1" || ok.Topic != "news" || ok.TokenFP != audit.TokenFP(tok) {
		t.Fatalf("auth_ok %+v", ok)
	}
	rec.find(t, audit.KindSubscribe, "")
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("%d redemptions, want 1", n)
	}

	// The token is this connection's now: presenting it again redeems
	// (again off the loop) and is accepted.
	w.send(`{"op":"unsubscribe","id":4,"topic":"news"}`)
	if m := w.recvJSON(); m["op"] != "unsubscribed" {
		t.Fatalf("unsubscribe: %v", m)
	}
	w.send(fmt.Sprintf(`{"op":"subscribe","id":5,"topic":"news","userId":"u1","token":%q}`, tok))
	<-src.started
	src.gate <- struct{}{}
	if m := w.recvJSON(); m["op"] != "subscribed" || m["id"] != 5.0 {
		t.Fatalf("second subscribe: %v", m)
	}
}

// A token source that cannot answer refuses the token (fail closed): the
// client gets an error, the trail auth_failed token_source_unavailable,
// and the connection stays open without a strike.
func TestAsyncRedeemUnavailableFailsClosed(t *testing.T) {
	src := newGatedSource()
	src.fail.Store(true)
	s, rec := startAsyncServer(t, src)
	w, tok := subscribeMinted(t, s, src.store, "u1")
	<-src.started
	src.gate <- struct{}{}
	m := w.recvJSON()
	if m["op"] != "error" || m["id"] != 1.0 || m["code"] != "internal" || m["message"] != "token service unavailable, try again" {
		t.Fatalf("reply %v", m)
	}
	e := rec.find(t, audit.KindAuthFailed, "token_source_unavailable")
	if e.Severity != audit.Warning || e.Topic != "news" || e.TokenFP != audit.TokenFP(tok) || e.Detail != "token store (Redis) unavailable: test" {
		t.Fatalf("auth_failed %+v", e)
	}
	w.send(`{"op":"ping","id":2}`)
	if m := w.recvJSON(); m["op"] != "pong" {
		t.Fatalf("after the refusal: %v", m)
	}
}

// A client that keeps sending while its token is being redeemed is
// closed with 1008 after maxHeldMessages messages, audited msg_rate.
func TestAsyncRedeemHeldMessagesBounded(t *testing.T) {
	src := newGatedSource()
	s, rec := startAsyncServer(t, src)
	w := nativeClient(t, s)
	w.send(`{"op":"subscribe","id":1,"topic":"news","userId":"u1","token":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`)
	<-src.started
	for i := 0; i < maxHeldMessages; i++ {
		w.send(`{"op":"ping"}`)
	}
	if code := w.closed(); code != 1008 {
		t.Fatalf("close code %d, want 1008", code)
	}
	e := rec.find(t, audit.KindMessageRejected, "msg_rate")
	if e.Detail != "more than 15 messages sent while a token was being redeemed" {
		t.Fatalf("event %+v", e)
	}
	// The answer that comes after the close finds nothing to do.
	src.gate <- struct{}{}
	rec.find(t, audit.KindConnClose, "")
}

// The WAMP v2 ticket is redeemed off the loop too.
func TestAsyncRedeemWAMP2Ticket(t *testing.T) {
	src := newGatedSource()
	s, rec := startAsyncServer(t, src)
	tok, _, err := src.store.Mint("42", nil, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	src.gate <- struct{}{} // let it through at once
	_, welcome := wamp2Session(t, s, "42", tok)
	if welcome[0] != 2.0 {
		t.Fatalf("WELCOME %v", welcome)
	}
	rec.find(t, audit.KindAuthOK, "")

	src.fail.Store(true)
	tok2, _, err := src.store.Mint("43", nil, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	src.gate <- struct{}{}
	_, abort := wamp2Session(t, s, "43", tok2)
	if abort[0] != 3.0 || abort[2] != "wamp.error.authentication_failed" {
		t.Fatalf("ABORT %v", abort)
	}
	rec.find(t, audit.KindAuthFailed, "token_source_unavailable")
}

// A burst of logins larger than the redemptions a loop runs at once waits
// its turn instead of being refused: the first maxRedeemsPerLoop run, the
// rest queue, and every one is answered once the source answers.
func TestAsyncRedeemBurstQueues(t *testing.T) {
	src := newGatedSource()
	s, rec := startAsyncServer(t, src)
	const n = maxRedeemsPerLoop + 20
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i], _ = subscribeMinted(t, s, src.store, fmt.Sprintf("u%d", i))
	}
	for range maxRedeemsPerLoop {
		<-src.started
	}
	// The loop still answers while its slots are full and others queue.
	probe := nativeClient(t, s)
	probe.send(`{"op":"ping","id":9}`)
	if m := probe.recvJSON(); m["op"] != "pong" {
		t.Fatalf("probe: %v", m)
	}
	if got := src.calls.Load(); got != maxRedeemsPerLoop {
		t.Fatalf("%d redemptions running, want %d (the rest queued)", got, maxRedeemsPerLoop)
	}
	for range n {
		src.gate <- struct{}{}
	}
	for i, c := range clients {
		if m := c.recvJSON(); m["op"] != "subscribed" {
			t.Fatalf("client %d: %v, want subscribed", i, m)
		}
	}
	if got := src.calls.Load(); got != n {
		t.Fatalf("%d redemptions, want %d", got, n)
	}
	for _, e := range rec.all() {
		if e.Event == audit.KindAuthFailed {
			t.Fatalf("a queued login was refused: %+v", e)
		}
	}
}

// boundedSource is a gatedSource that serves at most conc redemptions at
// once and bounds each call by wait, like the SQL source's pool.
type boundedSource struct {
	*gatedSource
	conc int
	wait time.Duration
}

func (b boundedSource) MaxConcurrent() int          { return b.conc }
func (b boundedSource) QueueTimeout() time.Duration { return b.wait }

// A source with a bounded pool gets no more redemptions at once than its
// pool serves, and a redemption that waited in the queue longer than the
// source's timeout is refused without being started (fail closed), so a
// burst never leaves clients waiting far beyond the timeout.
func TestAsyncRedeemBoundedBySource(t *testing.T) {
	g := newGatedSource()
	src := boundedSource{gatedSource: g, conc: 2, wait: 30 * time.Millisecond}
	s, rec := startAsyncServerWith(t, g, src)
	clients := make([]*wsClient, 4)
	for i := range clients {
		clients[i], _ = subscribeMinted(t, s, g.store, fmt.Sprintf("u%d", i))
		if i < 2 {
			<-g.started // the first two run, in order
		}
	}
	probe := nativeClient(t, s)
	probe.send(`{"op":"ping","id":9}`)
	if m := probe.recvJSON(); m["op"] != "pong" {
		t.Fatalf("probe: %v", m)
	}
	if got := g.calls.Load(); got != 2 {
		t.Fatalf("%d redemptions running, want 2 (the pool's size; the rest queued)", got)
	}
	time.Sleep(2 * src.wait) // the queued two now waited longer than the source's timeout
	g.gate <- struct{}{}
	if m := clients[0].recvJSON(); m["op"] != "subscribed" {
		t.Fatalf("client 0: %v, want subscribed", m)
	}
	for _, c := range clients[2:] {
		if m := c.recvJSON(); m["op"] != "error" || m["code"] == "" {
			t.Fatalf("queued past the timeout: %v, want an error", m)
		}
	}
	g.gate <- struct{}{}
	if m := clients[1].recvJSON(); m["op"] != "subscribed" {
		t.Fatalf("client 1: %v, want subscribed", m)
	}
	if got := g.calls.Load(); got != 2 {
		t.Fatalf("%d redemptions started, want 2: the late ones are refused unstarted", got)
	}
	n := 0
	for _, e := range rec.all() {
		if e.Event == audit.KindAuthFailed && e.Reason == reason.TokenSourceUnavailable && strings.Contains(e.Detail, "refused unstarted") {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d auth_failed token_source_unavailable lines for the late redemptions, want 2", n)
	}
}

// subscribeMinted mints user a token in store, connects a native client
// and sends its subscribe to "news" with it (id 1), without waiting for
// the answer; it returns the client and the token.
func subscribeMinted(t *testing.T, s *Server, store *tokens.Store, user string) (*wsClient, string) {
	t.Helper()
	tok, _, err := store.Mint(user, nil, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := nativeClient(t, s)
	c.send(fmt.Sprintf(`{"op":"subscribe","id":1,"topic":"news","userId":%q,"token":%q}`, user, tok))
	return c, tok
}
