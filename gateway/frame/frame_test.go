package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/gobwas/ws"
)

// clientFrame builds a masked client frame.
func clientFrame(fin bool, rsv byte, op ws.OpCode, payload []byte, masked bool) []byte {
	b0 := byte(op) | rsv<<4
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	mbit := byte(0)
	if masked {
		mbit = 0x80
	}
	n := len(payload)
	switch {
	case n <= 125:
		out = append(out, mbit|byte(n))
	case n <= 0xffff:
		out = append(out, mbit|126, byte(n>>8), byte(n))
	default:
		out = append(out, mbit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !masked {
		return append(out, payload...)
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	out = append(out, key[:]...)
	p := append([]byte(nil), payload...)
	ws.Cipher(p, key, 0)
	return append(out, p...)
}

func text(s string) []byte { return clientFrame(true, 0, ws.OpText, []byte(s), true) }
func closeFrame(code uint16, r string) []byte {
	p := binary.BigEndian.AppendUint16(nil, code)
	return clientFrame(true, 0, ws.OpClose, append(p, r...), true)
}

type record struct {
	events []string
}

func (r *record) OnMessage(op ws.OpCode, p []byte) error {
	r.events = append(r.events, fmt.Sprintf("msg %d %q", op, p))
	return nil
}

func (r *record) OnControl(op ws.OpCode, p []byte) error {
	r.events = append(r.events, fmt.Sprintf("ctl %d %q", op, p))
	return nil
}

func run(t *testing.T, in []byte, chunk int, lim Limits) ([]string, error) {
	t.Helper()
	p := Parser{Limits: &lim}
	var r record
	data := append([]byte(nil), in...)
	var err error
	if chunk <= 0 {
		err = p.Feed(data, &r)
	} else {
		for i := 0; i < len(data) && err == nil; i += chunk {
			j := min(i+chunk, len(data))
			err = p.Feed(data[i:j], &r)
		}
	}
	if err == nil && p.Buffered() != 0 && bytes.Equal(in, data) {
		t.Logf("buffered %d after input", p.Buffered())
	}
	p.Release()
	return r.events, err
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestRules(t *testing.T) {
	big := bytes.Repeat([]byte("a"), 70000)
	cases := []struct {
		name   string
		in     []byte
		lim    Limits
		want   []string
		code   ws.StatusCode
		reason string
	}{
		{name: "text", in: text("hello"), want: []string{`msg 1 "hello"`}},
		{name: "two frames", in: cat(text("a"), text("b")), want: []string{`msg 1 "a"`, `msg 1 "b"`}},
		{name: "binary", in: clientFrame(true, 0, ws.OpBinary, []byte{0, 1}, true), want: []string{`msg 2 "\x00\x01"`}},
		{name: "fragmented with ping between",
			in: cat(clientFrame(false, 0, ws.OpText, []byte("he"), true), clientFrame(true, 0, ws.OpPing, []byte("p"), true),
				clientFrame(true, 0, ws.OpContinuation, []byte("llo"), true)),
			want: []string{`ctl 9 "p"`, `msg 1 "hello"`}},
		{name: "unmasked", in: clientFrame(true, 0, ws.OpText, []byte("x"), false), code: 1002, reason: "unmasked_frame"},
		{name: "rsv1", in: clientFrame(true, 4, ws.OpText, []byte("x"), true), code: 1002, reason: "rsv_set"},
		{name: "rsv3", in: clientFrame(true, 1, ws.OpText, []byte("x"), true), code: 1002, reason: "rsv_set"},
		{name: "reserved opcode 3", in: clientFrame(true, 0, 3, nil, true), code: 1002, reason: "bad_opcode"},
		{name: "reserved opcode 0xB", in: clientFrame(true, 0, 0xB, nil, true), code: 1002, reason: "bad_opcode"},
		{name: "ping too long", in: clientFrame(true, 0, ws.OpPing, bytes.Repeat([]byte("x"), 126), true), code: 1002, reason: "control_too_long"},
		{name: "fragmented ping", in: clientFrame(false, 0, ws.OpPing, nil, true), code: 1002, reason: "control_fragmented"},
		{name: "continuation first", in: clientFrame(true, 0, ws.OpContinuation, []byte("x"), true), code: 1002, reason: "unexpected_continuation"},
		{name: "text inside fragmented", in: cat(clientFrame(false, 0, ws.OpText, []byte("a"), true), text("b")), code: 1002, reason: "expected_continuation"},
		{name: "frame too large", in: clientFrame(true, 0, ws.OpBinary, big, true), code: 1009, reason: "frame_too_large"},
		{name: "frame over custom limit", in: text("123456"), lim: Limits{MaxFrame: 5}, code: 1009, reason: "frame_too_large"},
		{name: "message too large", lim: Limits{MaxFrame: 4, MaxMessage: 6},
			in:   cat(clientFrame(false, 0, ws.OpText, []byte("1234"), true), clientFrame(true, 0, ws.OpContinuation, []byte("567"), true)),
			code: 1009, reason: "message_too_large"},
		{name: "invalid utf8", in: text("a\xffb"), code: 1007, reason: "invalid_utf8"},
		{name: "utf8 split across fragments ok",
			in:   cat(clientFrame(false, 0, ws.OpText, []byte("\xe2\x82"), true), clientFrame(true, 0, ws.OpContinuation, []byte("\xac!"), true)),
			want: []string{`msg 1 "€!"`}},
		{name: "utf8 bad across fragments",
			in:   cat(clientFrame(false, 0, ws.OpText, []byte("\xe2\x82"), true), clientFrame(true, 0, ws.OpContinuation, []byte("a"), true)),
			code: 1007, reason: "invalid_utf8"},
		{name: "utf8 truncated at end", in: cat(clientFrame(false, 0, ws.OpText, []byte("a"), true), clientFrame(true, 0, ws.OpContinuation, []byte("\xe2\x82"), true)),
			code: 1007, reason: "invalid_utf8"},
		{name: "utf8 surrogate prefix fails early", in: clientFrame(false, 0, ws.OpText, []byte("\xed\xa0"), true), code: 1007, reason: "invalid_utf8"},
		{name: "binary not utf8 checked", in: clientFrame(true, 0, ws.OpBinary, []byte{0xff}, true), want: []string{`msg 2 "\xff"`}},
		{name: "close ok", in: closeFrame(1000, "bye"), want: []string{`ctl 8 "\x03\xe8bye"`}},
		{name: "close empty", in: clientFrame(true, 0, ws.OpClose, nil, true), want: []string{`ctl 8 ""`}},
		{name: "close one byte", in: clientFrame(true, 0, ws.OpClose, []byte{3}, true), code: 1002, reason: "bad_close_payload"},
		{name: "close code 1005", in: closeFrame(1005, ""), code: 1002, reason: "bad_close_code"},
		{name: "close code 999", in: closeFrame(999, ""), code: 1002, reason: "bad_close_code"},
		{name: "close code 2000", in: closeFrame(2000, ""), code: 1002, reason: "bad_close_code"},
		{name: "close code 4000 ok", in: closeFrame(4000, ""), want: []string{`ctl 8 "\x0f\xa0"`}},
		{name: "close reason not utf8", in: closeFrame(1000, "\xff"), code: 1007, reason: "invalid_utf8"},
		{name: "64-bit length msb", in: []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, code: 1002, reason: "bad_length"},
	}
	for _, c := range cases {
		for _, chunk := range []int{0, 1, 3} {
			t.Run(fmt.Sprintf("%s/chunk%d", c.name, chunk), func(t *testing.T) {
				got, err := run(t, c.in, chunk, c.lim)
				if c.code != 0 {
					var ce *CloseError
					if !errors.As(err, &ce) || ce.Code != c.code || ce.Reason != c.reason {
						t.Fatalf("err %v, want close %d %s", err, c.code, c.reason)
					}
					return
				}
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if fmt.Sprint(got) != fmt.Sprint(c.want) {
					t.Fatalf("got %q, want %q", got, c.want)
				}
			})
		}
	}
}

// A frame over the limit is refused from its header alone, before its
// payload arrives.
func TestLimitFromHeader(t *testing.T) {
	var p Parser
	hdr := clientFrame(true, 0, ws.OpBinary, make([]byte, 1<<20), true)[:14]
	err := p.Feed(hdr[:10], &record{})
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != 1009 {
		t.Fatalf("err %v, want 1009 from the first 10 header bytes", err)
	}
}

func TestFragmentsAtEveryBoundary(t *testing.T) {
	in := cat(clientFrame(false, 0, ws.OpText, []byte("h€"), true), clientFrame(false, 0, ws.OpContinuation, []byte("l"), true),
		clientFrame(true, 0, ws.OpContinuation, []byte("lo"), true), text("x"))
	for cut := 0; cut <= len(in); cut++ {
		p := Parser{}
		var r record
		data := append([]byte(nil), in...)
		if err := p.Feed(data[:cut], &r); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if err := p.Feed(data[cut:], &r); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if want := `[msg 1 "h€llo" msg 1 "x"]`; fmt.Sprint(r.events) != want {
			t.Fatalf("cut %d: %q", cut, r.events)
		}
		if p.Buffered() != 0 || p.partial != nil || p.msg != nil {
			t.Fatalf("cut %d: parser still holds %d bytes", cut, p.Buffered())
		}
	}
}

type nop struct{}

func (nop) OnMessage(ws.OpCode, []byte) error { return nil }
func (nop) OnControl(ws.OpCode, []byte) error { return nil }

func TestFeedNoAllocs(t *testing.T) {
	f := text(`{"op":"ping","id":1}`)
	buf := make([]byte, len(f))
	var p Parser
	var h nop
	allocs := testing.AllocsPerRun(1000, func() {
		copy(buf, f)
		if err := p.Feed(buf, h); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per complete frame, want 0", allocs)
	}
}

func TestAppendFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		f := AppendFrame(nil, ws.OpBinary, bytes.Repeat([]byte("z"), n))
		h, err := ws.ReadHeader(bytes.NewReader(f))
		if err != nil || h.Length != int64(n) || !h.Fin || h.Masked || h.OpCode != ws.OpBinary {
			t.Fatalf("n=%d header %+v err %v", n, h, err)
		}
	}
	c := AppendClose(nil, 1008, string(bytes.Repeat([]byte("é"), 100)))
	if len(c) > 127 || !bytes.Equal(c[2:4], []byte{0x03, 0xf0}) {
		t.Fatalf("close frame %d bytes %x", len(c), c[:4])
	}
}

func BenchmarkFeedText64(b *testing.B) {
	f := text(string(bytes.Repeat([]byte("x"), 64)))
	buf := make([]byte, len(f))
	var p Parser
	b.ReportAllocs()
	b.SetBytes(int64(len(f)))
	for i := 0; i < b.N; i++ {
		copy(buf, f)
		_ = p.Feed(buf, nop{})
	}
}

func BenchmarkFeedBinary16K(b *testing.B) {
	f := clientFrame(true, 0, ws.OpBinary, make([]byte, 16<<10), true)
	buf := make([]byte, len(f))
	var p Parser
	b.ReportAllocs()
	b.SetBytes(int64(len(f)))
	for i := 0; i < b.N; i++ {
		copy(buf, f)
		_ = p.Feed(buf, nop{})
	}
}
