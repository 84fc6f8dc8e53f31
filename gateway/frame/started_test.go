package frame

import (
	"testing"
	"unsafe"

	"github.com/gobwas/ws"
)

// The start mark fills padding: the parser stays 56 bytes (conn's size
// depends on it), keeps the mark across Feeds and drops it on Release.
func TestParserStartMark(t *testing.T) {
	if n := unsafe.Sizeof(Parser{}); n != 56 {
		t.Fatalf("sizeof(Parser) = %d, want 56", n)
	}
	var p Parser
	var h recorder
	first := maskedFrame(t, false, ws.OpText, []byte("hel"))
	if err := p.Feed(first, nil, &h); err != nil {
		t.Fatal(err)
	}
	if p.Idle() || p.Buffered() != 3 {
		t.Fatalf("idle %v buffered %d after an open fragment", p.Idle(), p.Buffered())
	}
	p.MarkStarted(42)
	ping := maskedFrame(t, true, ws.OpPing, nil)
	if err := p.Feed(ping, nil, &h); err != nil {
		t.Fatal(err)
	}
	if p.Started() != 42 || p.Idle() {
		t.Fatalf("mark %d idle %v after a ping between fragments", p.Started(), p.Idle())
	}
	if err := p.Feed(maskedFrame(t, true, ws.OpContinuation, []byte("lo")), nil, &h); err != nil {
		t.Fatal(err)
	}
	if !p.Idle() || p.Buffered() != 0 {
		t.Fatalf("idle %v buffered %d after the last fragment", p.Idle(), p.Buffered())
	}
	p.Release()
	if p.Started() != 0 {
		t.Fatal("mark kept after Release")
	}
}

type recorder struct{ msgs, controls int }

func (r *recorder) OnMessage(ws.OpCode, []byte) error { r.msgs++; return nil }
func (r *recorder) OnControl(ws.OpCode, []byte) error { r.controls++; return nil }

func maskedFrame(t *testing.T, fin bool, op ws.OpCode, p []byte) []byte {
	t.Helper()
	f := ws.MaskFrameInPlace(ws.NewFrame(op, fin, append([]byte(nil), p...)))
	b, err := ws.CompileFrame(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
