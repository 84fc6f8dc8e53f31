package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/gobwas/ws"
)

var testKey = [4]byte{0x12, 0x34, 0x56, 0x78}

// clientFrame builds a client frame with the shortest length encoding.
func clientFrame(fin bool, rsv byte, op ws.OpCode, payload []byte, masked bool) []byte {
	n := len(payload)
	var hdr []byte
	switch {
	case n <= 125:
		hdr = []byte{byte(n)}
	case n <= 0xffff:
		hdr = []byte{126, byte(n >> 8), byte(n)}
	default:
		hdr = binary.BigEndian.AppendUint64([]byte{127}, uint64(n))
	}
	return rawFrame(fin, rsv, op, hdr, payload, masked)
}

// rawFrame builds a client frame with the given length bytes (the 7-bit
// field followed by any extended length), so tests can write non-minimal or
// lying lengths.
func rawFrame(fin bool, rsv byte, op ws.OpCode, length []byte, payload []byte, masked bool) []byte {
	b0 := byte(op) | rsv<<4
	if fin {
		b0 |= 0x80
	}
	out := append([]byte{b0}, length...)
	if !masked {
		return append(out, payload...)
	}
	out[1] |= 0x80
	out = append(out, testKey[:]...)
	p := slices.Clone(payload)
	ws.Cipher(p, testKey, 0)
	return append(out, p...)
}

func text(s string) []byte     { return clientFrame(true, 0, ws.OpText, []byte(s), true) }
func binFrame(s string) []byte { return clientFrame(true, 0, ws.OpBinary, []byte(s), true) }
func first(op ws.OpCode, s string) []byte {
	return clientFrame(false, 0, op, []byte(s), true)
}
func cont(fin bool, s string) []byte {
	return clientFrame(fin, 0, ws.OpContinuation, []byte(s), true)
}
func ctl(op ws.OpCode, s string) []byte { return clientFrame(true, 0, op, []byte(s), true) }
func closeFrame(code uint16, r string) []byte {
	return ctl(ws.OpClose, string(binary.BigEndian.AppendUint16(nil, code))+r)
}
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// record is a Handler that keeps every event as a string.
type record struct{ events []string }

func (r *record) OnMessage(op ws.OpCode, p []byte) error {
	r.events = append(r.events, fmt.Sprintf("msg %d %q", op, p))
	return nil
}

func (r *record) OnControl(op ws.OpCode, p []byte) error {
	r.events = append(r.events, fmt.Sprintf("ctl %d %q", op, p))
	return nil
}

// outcome is everything observable from feeding one input; the parser state
// fields are kept only when no error stopped it.
type outcome struct {
	events   []string
	err      error
	buffered int
	idle     bool
	holds    bool // a pooled buffer is still referenced
}

func (o outcome) String() string {
	return fmt.Sprintf("events=%q err=%v buffered=%d idle=%v holds=%v", o.events, o.err, o.buffered, o.idle, o.holds)
}

// feedSplit feeds a copy of in cut at the given offsets (ascending).
func feedSplit(in []byte, lim *Limits, cuts ...int) outcome {
	var p Parser
	var r record
	data := slices.Clone(in)
	var err error
	prev := 0
	for _, c := range append(cuts, len(data)) {
		if err = p.Feed(data[prev:c], lim, &r); err != nil {
			break
		}
		prev = c
	}
	o := outcome{events: r.events, err: err}
	if err == nil { // after an error the parser is dead: its state is moot
		o.buffered, o.idle, o.holds = p.Buffered(), p.Idle(), p.frame != nil || p.msg != nil
	}
	p.Release()
	return o
}

// feedChunks feeds a copy of in in pieces of n bytes (n <= 0: one piece).
func feedChunks(in []byte, lim *Limits, n int) outcome {
	var cuts []int
	if n > 0 {
		for c := n; c < len(in); c += n {
			cuts = append(cuts, c)
		}
	}
	return feedSplit(in, lim, cuts...)
}

func sameOutcome(a, b outcome) bool { return a.String() == b.String() }

func closeErr(err error) *CloseError {
	var ce *CloseError
	if errors.As(err, &ce) {
		return ce
	}
	return nil
}

type ruleCase struct {
	name   string
	in     []byte
	lim    *Limits
	want   []string // events, also before an error
	code   ws.StatusCode
	reason string
}

func ruleCases() []ruleCase {
	big := strings.Repeat("a", DefaultMaxFrame)
	hdr64 := func(n uint64) []byte { return binary.BigEndian.AppendUint64([]byte{127}, n) }
	// 16 frames of 64 KiB fill the default 1 MiB message; one more byte is
	// refused at the header of the 17th.
	chunk := strings.Repeat("m", DefaultMaxFrame)
	fullMsg := first(ws.OpBinary, chunk)
	for range 15 {
		fullMsg = append(fullMsg, cont(false, chunk)...)
	}
	cases := []ruleCase{
		// Valid input.
		{name: "text", in: text("hello"), want: []string{`msg 1 "hello"`}},
		{name: "empty text", in: text(""), want: []string{`msg 1 ""`}},
		{name: "binary", in: binFrame("\x00\xff"), want: []string{`msg 2 "\x00\xff"`}},
		{name: "two frames in one read", in: cat(text("a"), binFrame("b")), want: []string{`msg 1 "a"`, `msg 2 "b"`}},
		{name: "16-bit length", in: text(strings.Repeat("é", 100)), want: []string{fmt.Sprintf("msg 1 %q", strings.Repeat("é", 100))}},
		{name: "non-minimal 64-bit length", in: rawFrame(true, 0, ws.OpText, hdr64(2), []byte("hi"), true), want: []string{`msg 1 "hi"`}},
		{name: "frame at default limit", in: binFrame(big), want: []string{fmt.Sprintf("msg 2 %q", big)}},
		{name: "fragmented text", in: cat(first(ws.OpText, "he"), cont(false, "l"), cont(true, "lo")), want: []string{`msg 1 "hello"`}},
		{name: "fragmented binary", in: cat(first(ws.OpBinary, "\xff"), cont(true, "\xfe")), want: []string{`msg 2 "\xff\xfe"`}},
		{name: "empty fragments", in: cat(first(ws.OpText, ""), cont(false, ""), cont(true, "")), want: []string{`msg 1 ""`}},
		{name: "ping between fragments",
			in:   cat(first(ws.OpText, "he"), ctl(ws.OpPing, "p"), cont(true, "llo")),
			want: []string{`ctl 9 "p"`, `msg 1 "hello"`}},
		{name: "pong and close between fragments",
			in:   cat(first(ws.OpBinary, "a"), ctl(ws.OpPong, ""), closeFrame(1000, ""), cont(true, "b")),
			want: []string{`ctl 10 ""`, `ctl 8 "\x03\xe8"`, `msg 2 "ab"`}},
		{name: "ping of 125 bytes", in: ctl(ws.OpPing, strings.Repeat("p", 125)), want: []string{fmt.Sprintf("ctl 9 %q", strings.Repeat("p", 125))}},
		{name: "utf8 split across fragments", in: cat(first(ws.OpText, "\xe2\x82"), cont(false, "\xac"), cont(true, "!")), want: []string{`msg 1 "€!"`}},
		{name: "4-byte code point over three fragments", in: cat(first(ws.OpText, "\xf0"), cont(false, "\x9d\x84"), cont(true, "\x9e")), want: []string{`msg 1 "𝄞"`}},
		{name: "binary is not utf8 checked", in: binFrame("\xed\xa0\x80"), want: []string{`msg 2 "\xed\xa0\x80"`}},
		{name: "close empty", in: ctl(ws.OpClose, ""), want: []string{`ctl 8 ""`}},
		{name: "close with reason", in: closeFrame(1000, "bye"), want: []string{`ctl 8 "\x03\xe8bye"`}},
		{name: "message at custom limit", lim: &Limits{MaxFrame: 4, MaxMessage: 8},
			in: cat(first(ws.OpText, "1234"), cont(true, "5678")), want: []string{`msg 1 "12345678"`}},
		{name: "negative limits mean defaults", lim: &Limits{MaxFrame: -1, MaxMessage: -1},
			in: binFrame("x"), want: []string{`msg 2 "x"`}},

		// Violations, in the order of the rules.
		{name: "unmasked", in: clientFrame(true, 0, ws.OpText, []byte("x"), false), code: 1002, reason: ReasonUnmasked},
		{name: "unmasked control", in: clientFrame(true, 0, ws.OpPing, nil, false), code: 1002, reason: ReasonUnmasked},
		{name: "events before a violation are kept", in: cat(text("ok"), clientFrame(true, 0, ws.OpText, []byte("x"), false)),
			want: []string{`msg 1 "ok"`}, code: 1002, reason: ReasonUnmasked},
		{name: "rsv1", in: clientFrame(true, 4, ws.OpText, []byte("x"), true), code: 1002, reason: ReasonRSV},
		{name: "rsv2", in: clientFrame(true, 2, ws.OpBinary, []byte("x"), true), code: 1002, reason: ReasonRSV},
		{name: "rsv3", in: clientFrame(true, 1, ws.OpPing, nil, true), code: 1002, reason: ReasonRSV},
		{name: "rsv on continuation", in: cat(first(ws.OpText, "a"), clientFrame(true, 4, ws.OpContinuation, []byte("b"), true)), code: 1002, reason: ReasonRSV},
		{name: "ping too long", in: ctl(ws.OpPing, strings.Repeat("x", 126)), code: 1002, reason: ReasonControlTooLong},
		{name: "close too long", in: closeFrame(1000, strings.Repeat("x", 124)), code: 1002, reason: ReasonControlTooLong},
		{name: "pong with 64-bit length", in: rawFrame(true, 0, ws.OpPong, hdr64(1), []byte("x"), true), code: 1002, reason: ReasonControlTooLong},
		{name: "fragmented ping", in: clientFrame(false, 0, ws.OpPing, nil, true), code: 1002, reason: ReasonControlFragmented},
		{name: "fragmented pong", in: clientFrame(false, 0, ws.OpPong, nil, true), code: 1002, reason: ReasonControlFragmented},
		{name: "fragmented close", in: clientFrame(false, 0, ws.OpClose, nil, true), code: 1002, reason: ReasonControlFragmented},
		{name: "continuation first", in: cont(true, "x"), code: 1002, reason: ReasonUnexpectedContinuation},
		{name: "continuation after a whole message", in: cat(text("a"), cont(true, "b")),
			want: []string{`msg 1 "a"`}, code: 1002, reason: ReasonUnexpectedContinuation},
		{name: "continuation after the last fragment", in: cat(first(ws.OpText, "a"), cont(true, "b"), cont(true, "c")),
			want: []string{`msg 1 "ab"`}, code: 1002, reason: ReasonUnexpectedContinuation},
		{name: "text inside fragmented", in: cat(first(ws.OpText, "a"), text("b")), code: 1002, reason: ReasonExpectedContinuation},
		{name: "binary inside fragmented", in: cat(first(ws.OpText, "a"), first(ws.OpBinary, "b")), code: 1002, reason: ReasonExpectedContinuation},
		{name: "64-bit length msb", in: rawFrame(true, 0, ws.OpBinary, hdr64(1<<63), nil, true), code: 1002, reason: ReasonBadLength},
		{name: "64-bit length all ones", in: rawFrame(true, 0, ws.OpBinary, hdr64(^uint64(0)), nil, true), code: 1002, reason: ReasonBadLength},
		{name: "frame over default limit (header only)", in: rawFrame(true, 0, ws.OpBinary, hdr64(DefaultMaxFrame+1), nil, true),
			code: 1009, reason: ReasonFrameTooLarge},
		{name: "frame over custom limit", lim: &Limits{MaxFrame: 5}, in: text("123456"), code: 1009, reason: ReasonFrameTooLarge},
		{name: "huge 64-bit length", in: rawFrame(true, 0, ws.OpText, hdr64(1<<62), nil, true), code: 1009, reason: ReasonFrameTooLarge},
		{name: "message over limit at continuation header", lim: &Limits{MaxFrame: 4, MaxMessage: 6},
			in:   cat(first(ws.OpText, "1234"), cont(true, "567")),
			code: 1009, reason: ReasonMessageTooLarge},
		{name: "single frame over message limit", lim: &Limits{MaxFrame: 100, MaxMessage: 3}, in: binFrame("1234"),
			code: 1009, reason: ReasonMessageTooLarge},
		{name: "message over default limit", in: cat(fullMsg, rawFrame(true, 0, ws.OpContinuation, []byte{1}, nil, true)),
			code: 1009, reason: ReasonMessageTooLarge},
		{name: "message at default limit", in: cat(fullMsg, cont(true, "")),
			want: []string{fmt.Sprintf("msg 2 %q", strings.Repeat("m", DefaultMaxMessage))}},
		{name: "invalid utf8 byte", in: text("a\xffb"), code: 1007, reason: ReasonInvalidUTF8},
		{name: "utf8 surrogate", in: text("\xed\xa0\x80"), code: 1007, reason: ReasonInvalidUTF8},
		{name: "utf8 overlong", in: text("\xc0\xaf"), code: 1007, reason: ReasonInvalidUTF8},
		{name: "utf8 above U+10FFFF", in: text("\xf4\x90\x80\x80"), code: 1007, reason: ReasonInvalidUTF8},
		{name: "utf8 truncated at end of frame", in: text("a\xe2\x82"), code: 1007, reason: ReasonInvalidUTF8},
		{name: "utf8 bad across fragments", in: cat(first(ws.OpText, "\xe2\x82"), cont(true, "a")), code: 1007, reason: ReasonInvalidUTF8},
		{name: "utf8 truncated at end of message", in: cat(first(ws.OpText, "a"), cont(true, "\xe2\x82")), code: 1007, reason: ReasonInvalidUTF8},
		{name: "utf8 truncated before empty last fragment", in: cat(first(ws.OpText, "\xe2\x82"), cont(true, "")), code: 1007, reason: ReasonInvalidUTF8},
		{name: "utf8 invalid prefix fails at its fragment", in: cat(first(ws.OpText, "\xed\xa0"), ctl(ws.OpPing, "never")),
			code: 1007, reason: ReasonInvalidUTF8},
		{name: "close of one byte", in: ctl(ws.OpClose, "\x03"), code: 1002, reason: ReasonBadClosePayload},
		{name: "close reason not utf8", in: closeFrame(1000, "\xff"), code: 1007, reason: ReasonInvalidUTF8},
		{name: "close reason truncated utf8", in: closeFrame(1000, "\xe2\x82"), code: 1007, reason: ReasonInvalidUTF8},
	}
	for _, op := range []ws.OpCode{3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF} {
		cases = append(cases, ruleCase{name: fmt.Sprintf("reserved opcode %#x", byte(op)),
			in: clientFrame(true, 0, op, []byte("x"), true), code: 1002, reason: ReasonBadOpcode})
	}
	for _, c := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		cases = append(cases, ruleCase{name: fmt.Sprintf("close code %d allowed", c), in: closeFrame(c, "r"),
			want: []string{fmt.Sprintf("ctl 8 %q", string(binary.BigEndian.AppendUint16(nil, c))+"r")}})
	}
	for _, c := range []uint16{0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		cases = append(cases, ruleCase{name: fmt.Sprintf("close code %d refused", c), in: closeFrame(c, ""),
			code: 1002, reason: ReasonBadCloseCode})
	}
	return cases
}

// TestRules checks every rule with the input fed whole, byte by byte, in
// small chunks and (for short inputs) cut at every offset: the outcome must
// be the expected one and identical whatever the split.
func TestRules(t *testing.T) {
	for _, c := range ruleCases() {
		t.Run(c.name, func(t *testing.T) {
			whole := feedChunks(c.in, c.lim, 0)
			if c.code != 0 {
				ce := closeErr(whole.err)
				if ce == nil || ce.Code != c.code || ce.Reason != c.reason {
					t.Fatalf("err %v, want close %d %s", whole.err, c.code, c.reason)
				}
			} else {
				if whole.err != nil {
					t.Fatalf("unexpected error %v", whole.err)
				}
				if whole.buffered != 0 || !whole.idle || whole.holds {
					t.Fatalf("after complete input: %v", whole)
				}
			}
			if !slices.Equal(whole.events, c.want) {
				t.Fatalf("events %q, want %q", whole.events, c.want)
			}
			if len(c.in) > 1<<16 {
				// Long inputs: a few chunkings only (every cut would be slow).
				for _, n := range []int{1, 1448, 4096} {
					if got := feedChunks(c.in, c.lim, n); !sameOutcome(got, whole) {
						t.Fatalf("chunks of %d: %v\nwhole: %v", n, got, whole)
					}
				}
				return
			}
			for _, n := range []int{1, 2, 3, 5, 7} {
				if got := feedChunks(c.in, c.lim, n); !sameOutcome(got, whole) {
					t.Fatalf("chunks of %d: %v\nwhole: %v", n, got, whole)
				}
			}
			for cut := 0; cut <= len(c.in); cut++ {
				if got := feedSplit(c.in, c.lim, cut); !sameOutcome(got, whole) {
					t.Fatalf("cut at %d: %v\nwhole: %v", cut, got, whole)
				}
			}
		})
	}
}

// stream is a conversation touching every parser path: fragments with a
// code point split between them, interleaved control frames, 16-bit lengths,
// a single-frame message and a close.
func stream() []byte {
	return cat(
		first(ws.OpText, "h\xe2"), ctl(ws.OpPing, "p1"), cont(false, "\x82\xac"), cont(false, ""), cont(true, "llo"),
		binFrame(strings.Repeat("\x00\x01", 100)),
		first(ws.OpBinary, "b"), ctl(ws.OpPong, ""), cont(true, strings.Repeat("z", 130)),
		text("κόσμε"),
		closeFrame(1001, "going"),
	)
}

func streamEvents() []string {
	return []string{
		`ctl 9 "p1"`, `msg 1 "h€llo"`,
		fmt.Sprintf("msg 2 %q", strings.Repeat("\x00\x01", 100)),
		`ctl 10 ""`, fmt.Sprintf("msg 2 %q", "b"+strings.Repeat("z", 130)),
		`msg 1 "κόσμε"`,
		`ctl 8 "\x03\xe9going"`,
	}
}

// TestEveryBoundary splits a conversation at every offset, and a shorter one
// at every pair of offsets: the messages, and the parser's state at the end
// (nothing buffered, idle, no pooled buffer), must not depend on the split.
func TestEveryBoundary(t *testing.T) {
	in, want := stream(), streamEvents()
	check := func(t *testing.T, o outcome, how string) {
		t.Helper()
		if o.err != nil || !slices.Equal(o.events, want) || o.buffered != 0 || !o.idle || o.holds {
			t.Fatalf("%s: %v", how, o)
		}
	}
	check(t, feedChunks(in, nil, 0), "whole")
	check(t, feedChunks(in, nil, 1), "byte by byte")
	for cut := 0; cut <= len(in); cut++ {
		check(t, feedSplit(in, nil, cut), fmt.Sprintf("cut %d", cut))
	}
	short := cat(first(ws.OpText, "a\xf0\x9d"), ctl(ws.OpPing, ""), cont(false, "\x84"), cont(true, "\x9eb"), text("é"))
	want = []string{`ctl 9 ""`, `msg 1 "a𝄞b"`, `msg 1 "é"`}
	for i := 0; i <= len(short); i++ {
		for j := i; j <= len(short); j++ {
			check(t, feedSplit(short, nil, i, j), fmt.Sprintf("cuts %d,%d", i, j))
		}
	}
}

// TestDecidedEarly feeds only a prefix of a bad input: each violation must be
// reported as soon as the bytes that make it certain arrived, before the rest
// of the frame (or message). Prefixes that are not yet wrong must not fail.
func TestDecidedEarly(t *testing.T) {
	bigHdr := rawFrame(true, 0, ws.OpBinary, binary.BigEndian.AppendUint64([]byte{127}, 1<<20), nil, true)
	cases := []struct {
		name   string
		in     []byte
		lim    *Limits
		code   ws.StatusCode
		reason string
	}{
		{name: "rsv from the first byte", in: []byte{0xC1}, code: 1002, reason: ReasonRSV},
		{name: "bad opcode from the first byte", in: []byte{0x83}, code: 1002, reason: ReasonBadOpcode},
		{name: "continuation from the first byte", in: []byte{0x80}, code: 1002, reason: ReasonUnexpectedContinuation},
		{name: "fragmented control from the first byte", in: []byte{0x09}, code: 1002, reason: ReasonControlFragmented},
		{name: "unmasked from the second byte", in: []byte{0x81, 0x05}, code: 1002, reason: ReasonUnmasked},
		{name: "control length from the second byte", in: []byte{0x89, 0xFE}, code: 1002, reason: ReasonControlTooLong},
		{name: "bad length before the mask key", in: []byte{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0}, code: 1002, reason: ReasonBadLength},
		{name: "frame size before the mask key", in: bigHdr[:10], code: 1009, reason: ReasonFrameTooLarge},
		{name: "frame size before the payload", in: bigHdr, code: 1009, reason: ReasonFrameTooLarge},
		{name: "message size at the continuation header", lim: &Limits{MaxFrame: 10, MaxMessage: 12},
			in:   cat(first(ws.OpBinary, "0123456789"), []byte{0x00, 0x83}),
			code: 1009, reason: ReasonMessageTooLarge},
		{name: "invalid utf8 inside a partial frame", in: text("ok\xff" + strings.Repeat("a", 500))[:4+4+3],
			code: 1007, reason: ReasonInvalidUTF8},
		{name: "invalid prefix at the end of a fragment", in: first(ws.OpText, "ok\xe0\x80"), code: 1007, reason: ReasonInvalidUTF8},
		{name: "invalid continuation of a carried code point",
			in: cat(first(ws.OpText, "\xf0\x90"), cont(false, "\x80a"+strings.Repeat("b", 300))[:8+2]), code: 1007, reason: ReasonInvalidUTF8},
		{name: "not yet: valid prefix at the end of a fragment", in: first(ws.OpText, "ok\xe2\x82")},
		{name: "not yet: partial 64-bit length", in: bigHdr[:9]},
		{name: "not yet: header of a frame at the limit", in: rawFrame(true, 0, ws.OpBinary, []byte{126, 0xff, 0xff}, nil, true)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, n := range []int{0, 1} {
				o := feedChunks(c.in, c.lim, n)
				ce := closeErr(o.err)
				if c.code == 0 {
					if o.err != nil || o.idle {
						t.Fatalf("chunks %d: %v, want no verdict yet", n, o)
					}
					continue
				}
				if ce == nil || ce.Code != c.code || ce.Reason != c.reason {
					t.Fatalf("chunks %d: err %v, want close %d %s", n, o.err, c.code, c.reason)
				}
			}
		})
	}
}

// TestBufferedAndRelease follows Buffered through a split frame and an open
// message, then checks that Release drops everything and leaves a parser
// that accepts a new conversation.
func TestBufferedAndRelease(t *testing.T) {
	var p Parser
	var r record
	f := text("hello world") // 6-byte header, 11-byte payload
	if err := p.Feed(slices.Clone(f[:4]), nil, &r); err != nil || p.Buffered() != 4 || p.Idle() {
		t.Fatalf("partial header: err %v buffered %d idle %v", err, p.Buffered(), p.Idle())
	}
	if err := p.Feed(slices.Clone(f[4:6]), nil, &r); err != nil || p.Buffered() != 0 || p.Idle() {
		t.Fatalf("header only: err %v buffered %d idle %v", err, p.Buffered(), p.Idle())
	}
	if err := p.Feed(slices.Clone(f[6:10]), nil, &r); err != nil || p.Buffered() != 4 || p.frame == nil {
		t.Fatalf("partial payload: err %v buffered %d", err, p.Buffered())
	}
	if err := p.Feed(slices.Clone(f[10:]), nil, &r); err != nil || p.Buffered() != 0 || !p.Idle() || p.frame != nil {
		t.Fatalf("complete: err %v buffered %d idle %v", err, p.Buffered(), p.Idle())
	}
	if err := p.Feed(cat(first(ws.OpText, "abc"), cont(false, "de")), nil, &r); err != nil || p.Buffered() != 5 || p.Idle() {
		t.Fatalf("open message: err %v buffered %d idle %v", err, p.Buffered(), p.Idle())
	}
	if err := p.Feed(cat(first(ws.OpBinary, "x")[:3]), nil, &r); err == nil {
		t.Fatalf("a new message inside an open one was accepted")
	}
	p.Release()
	if p.Buffered() != 0 || !p.Idle() || p.frame != nil || p.msg != nil {
		t.Fatalf("after Release: buffered %d idle %v", p.Buffered(), p.Idle())
	}
	r.events = nil
	if err := p.Feed(text("again"), nil, &r); err != nil || !slices.Equal(r.events, []string{`msg 1 "again"`}) {
		t.Fatalf("after Release: err %v events %q", err, r.events)
	}
}

// A frame split across reads costs memory in proportion to what arrived,
// not to the length its header announced.
func TestPartialFrameMemoryFollowsInput(t *testing.T) {
	var p Parser
	f := binFrame(strings.Repeat("x", DefaultMaxFrame))
	if err := p.Feed(slices.Clone(f[:14+100]), nil, &record{}); err != nil {
		t.Fatal(err)
	}
	if p.frame == nil || cap(*p.frame) > 1024 {
		t.Fatalf("100 payload bytes of a 64 KiB frame hold a %d-byte buffer", cap(*p.frame))
	}
	p.Release()
}

type failing struct{ err error }

func (f failing) OnMessage(ws.OpCode, []byte) error { return f.err }
func (f failing) OnControl(ws.OpCode, []byte) error { return f.err }

// A handler error stops Feed and comes back unchanged, whatever the path.
func TestHandlerErrorStops(t *testing.T) {
	stop := errors.New("stop")
	for name, in := range map[string][]byte{
		"whole message":      cat(text("a"), text("b")),
		"split message":      cat(text(strings.Repeat("a", 300)), text("b")),
		"fragmented message": cat(first(ws.OpText, "a"), cont(true, "b"), text("c")),
		"control":            cat(ctl(ws.OpPing, ""), text("c")),
	} {
		for _, n := range []int{0, 1} {
			p := Parser{}
			data := slices.Clone(in)
			var err error
			for len(data) > 0 && err == nil {
				k := len(data)
				if n > 0 {
					k = n
				}
				err = p.Feed(data[:k], nil, failing{stop})
				data = data[k:]
			}
			if err != stop {
				t.Fatalf("%s, chunks %d: err %v, want the handler's error as is", name, n, err)
			}
			p.Release()
		}
	}
}

func TestValidCloseCode(t *testing.T) {
	valid := map[ws.StatusCode]bool{}
	for c := ws.StatusCode(1000); c <= 1003; c++ {
		valid[c] = true
	}
	for c := ws.StatusCode(1007); c <= 1014; c++ {
		valid[c] = true
	}
	for c := ws.StatusCode(3000); c <= 4999; c++ {
		valid[c] = true
	}
	for c := 0; c <= 0xffff; c++ {
		if got := ValidCloseCode(ws.StatusCode(c)); got != valid[ws.StatusCode(c)] {
			t.Fatalf("ValidCloseCode(%d) = %v", c, got)
		}
	}
}

func TestCloseErrorMessage(t *testing.T) {
	e := &CloseError{Code: 1009, Reason: ReasonFrameTooLarge}
	if got, want := e.Error(), "websocket: frame_too_large (close 1009)"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}

// maskServerFrame turns a server frame (as AppendFrame writes it) into the
// client frame carrying the same payload.
func maskServerFrame(f []byte) []byte {
	hlen := 2
	switch f[1] {
	case 126:
		hlen = 4
	case 127:
		hlen = 10
	}
	out := append(slices.Clone(f[:hlen]), testKey[:]...)
	out[1] |= 0x80
	p := slices.Clone(f[hlen:])
	ws.Cipher(p, testKey, 0)
	return append(out, p...)
}

func TestAppendFrame(t *testing.T) {
	for _, c := range []struct {
		n   int
		hdr []byte
	}{
		{0, []byte{0x82, 0}},
		{125, []byte{0x82, 125}},
		{126, []byte{0x82, 126, 0, 126}},
		{65535, []byte{0x82, 126, 0xff, 0xff}},
		{65536, []byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		payload := bytes.Repeat([]byte("z"), c.n)
		f := AppendFrame([]byte("prefix"), ws.OpBinary, payload)
		if !bytes.HasPrefix(f, []byte("prefix")) {
			t.Fatalf("n=%d: dst not kept", c.n)
		}
		f = f[len("prefix"):]
		if !bytes.Equal(f[:len(c.hdr)], c.hdr) || !bytes.Equal(f[len(c.hdr):], payload) {
			t.Fatalf("n=%d: header %x, want %x", c.n, f[:len(c.hdr)], c.hdr)
		}
		// Cross-check with gobwas/ws's decoder (in memory, test only).
		h, err := ws.ReadHeader(bytes.NewReader(f))
		if err != nil || h.Length != int64(c.n) || !h.Fin || h.Masked || h.Rsv != 0 || h.OpCode != ws.OpBinary {
			t.Fatalf("n=%d: header %+v err %v", c.n, h, err)
		}
		// Our own parser reads it back once masked.
		o := feedChunks(maskServerFrame(f), &Limits{MaxFrame: 1 << 17}, 0)
		if o.err != nil || len(o.events) != 1 || o.events[0] != fmt.Sprintf("msg 2 %q", payload) {
			t.Fatalf("n=%d: round trip %v", c.n, o)
		}
	}
}

func TestAppendClose(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes: cut to 122, on a code point boundary
	cases := []struct {
		name string
		code ws.StatusCode
		why  string
		want string
	}{
		{name: "code and reason", code: 1008, why: "policy", want: "\x03\xf0policy"},
		{name: "code only", code: 1000, want: "\x03\xe8"},
		{name: "no status gives an empty payload", code: ws.StatusNoStatusRcvd, why: "x", want: ""},
		{name: "zero gives an empty payload", code: 0, want: ""},
		{name: "long reason cut on a utf8 boundary", code: 1009, why: long, want: "\x03\xf1" + strings.Repeat("é", 61)},
		{name: "ascii reason cut at 123 bytes", code: 1011, why: strings.Repeat("r", 200), want: "\x03\xf3" + strings.Repeat("r", 123)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := AppendClose(nil, c.code, c.why)
			if f[0] != 0x88 || int(f[1]) != len(f)-2 || string(f[2:]) != c.want {
				t.Fatalf("frame %q, want payload %q", f, c.want)
			}
			if len(f)-2 > maxControl {
				t.Fatalf("payload of %d bytes", len(f)-2)
			}
			o := feedChunks(maskServerFrame(f), nil, 0)
			if o.err != nil || !slices.Equal(o.events, []string{fmt.Sprintf("ctl 8 %q", c.want)}) {
				t.Fatalf("our parser refuses our close frame: %v", o)
			}
		})
	}
}

type nop struct{}

func (nop) OnMessage(ws.OpCode, []byte) error { return nil }
func (nop) OnControl(ws.OpCode, []byte) error { return nil }

// TestFeedNoAllocs proves the hot path: a complete single-frame masked text
// message is parsed, unmasked, validated and dispatched without allocating.
func TestFeedNoAllocs(t *testing.T) {
	for _, s := range []string{`{"op":"ping","id":1}`, strings.Repeat("é", 1000), ""} {
		f := text(s)
		buf := make([]byte, len(f))
		var p Parser
		var h nop
		allocs := testing.AllocsPerRun(1000, func() {
			copy(buf, f)
			if err := p.Feed(buf, nil, h); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Fatalf("%d-byte text: %v allocations per complete frame, want 0", len(s), allocs)
		}
	}
}

// TestParserSize keeps the per-connection struct small: it is held by every
// idle connection.
func TestParserSize(t *testing.T) {
	size := unsafe.Sizeof(Parser{})
	t.Logf("sizeof(Parser) = %d bytes", size)
	if size > 80 {
		t.Fatalf("sizeof(Parser) = %d bytes, want at most 80", size)
	}
}

func TestPoolClasses(t *testing.T) {
	for _, c := range []struct{ n, class int }{
		{0, 0}, {1, 0}, {256, 0}, {257, 1}, {512, 1}, {513, 2}, {64 << 10, 8}, {4 << 20, 14}, {4<<20 + 1, -1},
	} {
		if got := classOf(c.n); got != c.class {
			t.Fatalf("classOf(%d) = %d, want %d", c.n, got, c.class)
		}
		b := getBuf(c.n)
		if len(*b) != 0 || cap(*b) < c.n {
			t.Fatalf("getBuf(%d): len %d cap %d", c.n, len(*b), cap(*b))
		}
		putBuf(b)
	}
	// A buffer beyond the largest class is not pooled, and growth past it
	// still doubles.
	b := appendBuf(nil, make([]byte, 5<<20))
	b = appendBuf(b, []byte("x"))
	if len(*b) != 5<<20+1 || cap(*b) < 5<<20+1 {
		t.Fatalf("large growth: len %d cap %d", len(*b), cap(*b))
	}
	putBuf(b)
	putBuf(nil)
}
