package gateway

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/wamp"
	"github.com/portcullis-gw/portcullis/policy/origin"
	"github.com/portcullis-gw/portcullis/policy/ratelimit"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// startLimitedServer is startWAMPServer with the given limits.
func startLimitedServer(t *testing.T, lim Limits) (*Server, *recSink) {
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
	s, err := Start(Options{Listen: "127.0.0.1:0", Origins: chk, Topics: set, Tokens: tokens.NewStore(tokens.Options{}),
		Schema: val, Version: "test", Audit: rec, Loops: 2, Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(t.Context()) })
	return s, rec
}

// writeFrame writes one masked client frame.
func (w *wsClient) writeFrame(fin bool, op ws.OpCode, payload []byte) {
	w.t.Helper()
	f := ws.NewFrame(op, fin, append([]byte(nil), payload...))
	f = ws.MaskFrameInPlace(f)
	if err := ws.WriteFrame(w.c, f); err != nil {
		w.t.Fatal(err)
	}
}

// readFrames reads frames until the close frame or EOF and returns the
// number of pongs and the close code (0 for none).
func (w *wsClient) readFrames() (pongs, code int) {
	for {
		h, err := ws.ReadHeader(w.r)
		if err != nil {
			return pongs, code
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(w.r, p); err != nil {
			return pongs, code
		}
		switch h.OpCode {
		case ws.OpPong:
			pongs++
		case ws.OpClose:
			if len(p) >= 2 {
				code = int(p[0])<<8 | int(p[1])
			}
			return pongs, code
		}
	}
}

// refusalsOf returns the refusal events recorded after before.
func refusalsOf(rec *recSink, before int) []audit.Event {
	var out []audit.Event
	for _, e := range rec.all()[before:] {
		if e.Event.Refusal() {
			out = append(out, e)
		}
	}
	return out
}

// A message whose first fragment arrived is closed once
// Limits.MessageTimeout passes, although pings keep arriving between
// fragments, and what it held is released.
func TestMessageTimeout(t *testing.T) {
	s, rec := startLimitedServer(t, Limits{MessageTimeout: 300 * time.Millisecond})
	w := dialProto(t, s, "wamp")
	w.recv()
	start := time.Now()
	w.writeFrame(false, ws.OpText, []byte(`[5,"op`))
	stop := make(chan struct{})
	go func() {
		for i := 0; i < 20; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			f := ws.MaskFrameInPlace(ws.NewPingFrame(nil))
			if ws.WriteFrame(w.c, f) != nil {
				return
			}
		}
	}()
	_, code := w.readFrames()
	close(stop)
	if code != 1008 {
		t.Fatalf("close %d, want 1008", code)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("closed after %v, before the message timeout", d)
	}
	e := rec.find(t, audit.KindMessageRejected, "message_timeout")
	if e.Code != 1008 || e.Proto != "wamp" {
		t.Fatalf("event %+v", e)
	}
	checkFor(t, func() bool { return s.inbound.HeldTotal() == 0 })

	// A message that completes in time is not affected.
	w = dialProto(t, s, "wamp")
	w.recv()
	w.writeFrame(false, ws.OpText, []byte(`[5,"op`))
	time.Sleep(100 * time.Millisecond)
	w.writeFrame(true, ws.OpContinuation, []byte(`en"]`))
	rec.find(t, audit.KindSubscribe, "")
	time.Sleep(400 * time.Millisecond)
	checkFor(t, func() bool { return s.inbound.HeldTotal() == 0 })
	n := 0
	for _, e := range refusalsOf(rec, 0) {
		if e.Reason.String() == "message_timeout" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d message_timeout refusals, want 1 (the first connection's)", n)
	}
}

// Unfinished messages of one address count against its budget across
// connections: the connection that would exceed it is closed 1008
// inbound_budget, and the others keep theirs.
func TestInboundBudgetPerAddress(t *testing.T) {
	s, rec := startLimitedServer(t, Limits{InboundBufferPerIP: 100 << 10, InboundBufferTotal: 1 << 20})
	part := bytes.Repeat([]byte("a"), 40<<10)
	var ws3 []*wsClient
	for i := 0; i < 3; i++ {
		w := dialProto(t, s, "wamp")
		w.recv()
		w.writeFrame(false, ws.OpText, part)
		ws3 = append(ws3, w)
		if i < 2 {
			checkFor(t, func() bool { return s.inbound.HeldTotal() == int64(i+1)*int64(len(part)) })
		}
	}
	if _, code := ws3[2].readFrames(); code != 1008 {
		t.Fatalf("third connection closed %d, want 1008", code)
	}
	e := rec.find(t, audit.KindMessageRejected, "inbound_budget")
	if e.Code != 1008 || !strings.Contains(e.Detail, "inbound_buffer_per_ip") {
		t.Fatalf("event %+v", e)
	}
	if held := s.inbound.HeldTotal(); held != 2*int64(len(part)) {
		t.Fatalf("held %d after the refusal, want %d", held, 2*len(part))
	}
	ws3[0].c.Close()
	ws3[1].c.Close()
	checkFor(t, func() bool { return s.inbound.HeldTotal() == 0 })
}

// The global budget holds across addresses.
func TestInboundBudgetTotal(t *testing.T) {
	s, rec := startLimitedServer(t, Limits{InboundBufferPerIP: 100 << 10, InboundBufferTotal: 100 << 10})
	part := bytes.Repeat([]byte("a"), 60<<10)
	w := dialProto(t, s, "wamp")
	w.recv()
	w.writeFrame(false, ws.OpText, part)
	checkFor(t, func() bool { return s.inbound.HeldTotal() > 0 })
	v := dialProto(t, s, "wamp")
	v.recv()
	v.writeFrame(false, ws.OpText, part)
	if _, code := v.readFrames(); code != 1008 {
		t.Fatalf("closed %d, want 1008", code)
	}
	if e := rec.find(t, audit.KindMessageRejected, "global_inbound_budget"); !strings.Contains(e.Detail, "inbound_buffer_total") {
		t.Fatalf("event %+v", e)
	}
}

// A WAMP v1 PREFIX table and kept seed topic strings count against the
// budget.
func TestInboundBudgetWAMP1Tables(t *testing.T) {
	s, rec := startLimitedServer(t, Limits{InboundBufferPerIP: 4000, InboundBufferTotal: 1 << 20})
	w := dialProto(t, s, "wamp")
	w.recv()
	uri := "http://example.com/" + strings.Repeat("x", 480)
	for i := 0; i < 7; i++ {
		w.send(wampFrame(1, "p"+strings.Repeat("q", i), uri))
	}
	checkFor(t, func() bool { return s.inbound.HeldTotal() >= int64(7*(len(uri)+wamp.PrefixEntryBytes)) })
	w.send(wampFrame(1, "last", uri))
	if code := w.closed(); code != 1008 {
		t.Fatalf("closed %d, want 1008", code)
	}
	rec.find(t, audit.KindMessageRejected, "inbound_budget")
	checkFor(t, func() bool { return s.inbound.HeldTotal() == 0 })
}

// Pings take from the message rate: beyond it there is no pong, and a
// client that keeps pinging is closed 1008, audited once.
func TestPingBudget(t *testing.T) {
	s, rec := startLimitedServer(t, Limits{MsgRate: ratelimit.Rate{PerSecond: 10, Burst: 5}})
	w := dialProto(t, s, "wamp")
	w.recv()
	var buf bytes.Buffer
	for i := 0; i < 500; i++ {
		_ = ws.WriteFrame(&buf, ws.MaskFrameInPlace(ws.NewPingFrame([]byte("x"))))
	}
	if _, err := w.c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	pongs, code := w.readFrames()
	if code != 1008 {
		t.Fatalf("closed %d, want 1008", code)
	}
	if pongs > 10 {
		t.Fatalf("%d pongs to 500 pings at once, want at most the burst (6) and a little refill", pongs)
	}
	e := rec.find(t, audit.KindMessageRejected, "msg_rate")
	if e.Code != 1008 || !strings.Contains(e.Detail, "pinging") {
		t.Fatalf("event %+v", e)
	}
	n := 0
	for _, e := range refusalsOf(rec, 0) {
		if e.Reason.String() == "msg_rate" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d msg_rate refusals, want 1", n)
	}
}

// WAMP messages are refused by type before their body is parsed: a CALL
// over its cap closes 1009, small ones get CALLERROR until too many in a
// row close 1008; each is a strike-bearing refusal.
func TestWAMPRefusedByType(t *testing.T) {
	s, rec := startLimitedServer(t, Limits{})
	w := dialProto(t, s, "wamp")
	w.recv()
	big := []byte(`[2,"c1","http://example.com/rpc","` + strings.Repeat("A", 1<<20-100) + `"]`)
	for i := 0; i < len(big); i += 60 << 10 {
		op := ws.OpText
		if i > 0 {
			op = ws.OpContinuation
		}
		w.writeFrame(i+60<<10 >= len(big), op, big[i:min(i+60<<10, len(big))])
	}
	if code := w.closed(); code != 1009 {
		t.Fatalf("big CALL closed %d, want 1009", code)
	}
	if e := rec.find(t, audit.KindMessageRejected, "message_too_large"); e.Code != 1009 || !strings.Contains(e.Detail, "2048") {
		t.Fatalf("event %+v", e)
	}

	before := len(rec.all())
	w = dialProto(t, s, "wamp")
	w.recv()
	for i := 0; i < maxUnsupported; i++ {
		w.send(`[2,"c1","http://example.com/rpc"]`)
		if a := w.recvArray(); a[0] != 4.0 || a[1] != "c1" {
			t.Fatalf("reply %v, want CALLERROR", a)
		}
	}
	w.send(`[2,"c2","http://example.com/rpc"]`)
	if code := w.closed(); code != 1008 {
		t.Fatalf("closed %d, want 1008", code)
	}
	checkFor(t, func() bool { return len(refusalsOf(rec, before)) == maxUnsupported+1 })
	for _, e := range refusalsOf(rec, before) {
		if e.Reason.String() != "unsupported" {
			t.Fatalf("refusal %+v, want unsupported", e)
		}
	}

	// A supported message between resets the count.
	before = len(rec.all())
	w = dialProto(t, s, "wamp")
	w.recv()
	for i := 0; i < 2*maxUnsupported; i++ {
		w.send(`[2,"c1","http://example.com/rpc"]`)
		w.recvArray()
		w.send(`[1,"p","http://example.com/"]`)
	}
	w.send(`[5,"open"]`)
	rec.find(t, audit.KindSubscribe, "")

	// v2: an UNSUBSCRIBE over its cap closes before it is parsed; a
	// server-only type is refused by its code.
	for _, c := range []struct {
		msg  string
		code int
	}{
		{`[34,1,` + strings.Repeat(" ", 2000) + `2]`, 1009},
		{`[36,1,2,{},["x"]]`, 1007},
	} {
		v := dialProto(t, s, "wamp.2.json")
		v.send(c.msg)
		if code := v.closed(); code != c.code {
			t.Fatalf("%.20s: closed %d, want %d", c.msg, code, c.code)
		}
	}
}

// The per-address byte rate closes a connection pushing valid messages
// faster than it allows.
func TestBytesRate(t *testing.T) {
	s, rec := startLimitedServer(t, Limits{MaxMessageBytes: 64 << 10, MaxFrameBytes: 64 << 10,
		BytesRate: ratelimit.Rate{PerSecond: 32 << 10, Burst: 128 << 10}})
	w := dialProto(t, s, "wamp")
	w.recv()
	msg := []byte(wampFrame(1, "p", "http://example.com/"+strings.Repeat("x", 400)))
	var buf bytes.Buffer
	for buf.Len() < 512<<10 {
		_ = ws.WriteFrame(&buf, ws.MaskFrameInPlace(ws.NewTextFrame(append([]byte(nil), msg...))))
	}
	go func() { _, _ = w.c.Write(buf.Bytes()) }()
	if _, code := w.readFrames(); code != 1008 {
		t.Fatalf("closed %d, want 1008; refusals %+v", code, refusalsOf(rec, 0))
	}
	if e := rec.find(t, audit.KindMessageRejected, "bytes_rate"); e.Code != 1008 {
		t.Fatalf("event %+v", e)
	}
}
