package frame

import (
	"encoding/binary"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// reasonCodes maps every reason to the only close code it may carry.
var reasonCodes = map[string]ws.StatusCode{
	ReasonUnmasked: 1002, ReasonRSV: 1002, ReasonBadOpcode: 1002, ReasonControlTooLong: 1002,
	ReasonControlFragmented: 1002, ReasonUnexpectedContinuation: 1002, ReasonExpectedContinuation: 1002,
	ReasonBadLength: 1002, ReasonFrameTooLarge: 1009, ReasonMessageTooLarge: 1009, ReasonInvalidUTF8: 1007,
	ReasonBadCloseCode: 1002, ReasonBadClosePayload: 1002,
}

// checker is a Handler that checks what the parser promises about each
// event, and records the events.
type checker struct {
	t   *testing.T
	lim *Limits
	record
}

func (c *checker) OnMessage(op ws.OpCode, p []byte) error {
	if op != ws.OpText && op != ws.OpBinary {
		c.t.Fatalf("OnMessage with opcode %d", op)
	}
	if op == ws.OpText && !utf8.Valid(p) {
		c.t.Fatalf("invalid UTF-8 text delivered: %q", p)
	}
	if len(p) > c.lim.maxMessage() {
		c.t.Fatalf("message of %d bytes over the limit %d", len(p), c.lim.maxMessage())
	}
	return c.record.OnMessage(op, p)
}

func (c *checker) OnControl(op ws.OpCode, p []byte) error {
	switch op {
	case ws.OpPing, ws.OpPong:
	case ws.OpClose:
		if len(p) == 1 || len(p) >= 2 && !ValidCloseCode(ws.StatusCode(binary.BigEndian.Uint16(p))) ||
			len(p) >= 2 && !utf8.Valid(p[2:]) {
			c.t.Fatalf("bad close payload delivered: %q", p)
		}
	default:
		c.t.Fatalf("OnControl with opcode %d", op)
	}
	if len(p) > maxControl {
		c.t.Fatalf("control payload of %d bytes", len(p))
	}
	return c.record.OnControl(op, p)
}

// fuzzFeed feeds a copy of in cut by sizes (cycled; nil: one piece) and
// checks the parser's state invariants.
func fuzzFeed(t *testing.T, in []byte, lim *Limits, sizes []int) outcome {
	var p Parser
	h := &checker{t: t, lim: lim}
	data := slices.Clone(in)
	var err error
	for i := 0; len(data) > 0 && err == nil; i++ {
		k := len(data)
		if len(sizes) > 0 {
			k = min(k, sizes[i%len(sizes)])
		}
		err = p.Feed(data[:k], lim, h)
		data = data[k:]
		if err == nil && p.Buffered() > len(in) {
			t.Fatalf("Buffered %d after %d input bytes", p.Buffered(), len(in))
		}
		if err == nil && p.Idle() && (p.Buffered() != 0 || p.frame != nil || p.msg != nil) {
			t.Fatalf("idle parser holds memory: buffered %d", p.Buffered())
		}
	}
	if err != nil {
		ce := closeErr(err)
		if ce == nil {
			t.Fatalf("error %v is not a *CloseError", err)
		}
		if code, ok := reasonCodes[ce.Reason]; !ok || code != ce.Code {
			t.Fatalf("close %d with reason %q", ce.Code, ce.Reason)
		}
	}
	o := outcome{events: h.events, err: err}
	if err == nil {
		o.buffered, o.idle, o.holds = p.Buffered(), p.Idle(), p.frame != nil || p.msg != nil
	}
	p.Release()
	if p.Buffered() != 0 || !p.Idle() || p.frame != nil || p.msg != nil {
		t.Fatalf("Release left state behind")
	}
	return o
}

// FuzzFeed checks that the parser never panics, that every delivered event
// keeps the package's promises, and that feeding the input whole, byte by
// byte, or in pieces whose sizes come from seed gives the same outcome.
func FuzzFeed(f *testing.F) {
	f.Add(text("hello"), uint64(0))
	f.Add(closeFrame(1000, "bye"), uint64(3))
	f.Add(cat(first(ws.OpText, "h\xe2"), ctl(ws.OpPing, "p"), cont(true, "\x82\xacllo")), uint64(0x0102030405))
	f.Fuzz(func(t *testing.T, in []byte, seed uint64) {
		lim := &Limits{MaxFrame: 300, MaxMessage: 700}
		whole := fuzzFeed(t, in, lim, nil)
		bytewise := fuzzFeed(t, in, lim, []int{1})
		var sizes []int
		for s := seed; s != 0; s >>= 4 {
			sizes = append(sizes, int(s&0xf)+1)
		}
		chunked := fuzzFeed(t, in, lim, sizes)
		if !sameOutcome(whole, bytewise) || !sameOutcome(whole, chunked) {
			t.Fatalf("outcomes differ\nwhole:   %v\nbytes:   %v\nchunked: %v (sizes %v)", whole, bytewise, chunked, sizes)
		}
	})
}
