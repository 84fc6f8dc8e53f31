package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// The floor server speaks as much of the gateway's protocol as the stall
// bench's clients need: the upgrade with the welcome, the subscribe's
// answer, a pong for each ping, a close frame for a close; and it closes a
// connection that ends its stream or sends a request without a key.
func TestFloorServer(t *testing.T) {
	s, err := startFloorServer(0, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	j := &job{Proto: "portcullis", URL: "ws://127.0.0.1:" + strconv.Itoa(s.port) + "/ws", Src: "127.0.0.", Topic: "t", Tokens: []string{"a", "b"}}
	var conns []net.Conn
	for i := range j.Tokens {
		c, err := dial(j, i)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		if err := subscribe(c, j, i); err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		conns = append(conns, c)
	}
	c := conns[0]
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	for _, payload := range []string{"12345678", "second"} {
		if err := wsutil.WriteClientMessage(c, ws.OpPing, []byte(payload)); err != nil {
			t.Fatal(err)
		}
		op, got := readControl(t, c)
		if op != ws.OpPong || string(got) != payload {
			t.Fatalf("ping %q answered with op %d %q", payload, op, got)
		}
	}
	// A close frame is answered with one, then end of stream.
	if err := wsutil.WriteClientMessage(c, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "")); err != nil {
		t.Fatal(err)
	}
	if op, _ := readControl(t, c); op != ws.OpClose {
		t.Fatalf("close answered with op %d", op)
	}
	expectEOF(t, c)
	// The other connection ends its stream: the server closes its side.
	other := conns[1]
	tcp := other
	if p, ok := other.(*prefixedConn); ok {
		tcp = p.Conn
	}
	if err := tcp.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = other.SetDeadline(time.Now().Add(10 * time.Second))
	expectEOF(t, other)
	// An upgrade request without a key is closed without an answer.
	raw, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(s.port))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(raw, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	expectEOF(t, raw)

	// Every turn above did work (accepts, upgrades, pings, closes) and is
	// counted, in the form the stall bench parses.
	lt := s.loopTurns()
	h, ok, err := parseLoopTurns(&lt)
	if err != nil || !ok {
		t.Fatalf("floor turns %+v: %v", lt, err)
	}
	if h.total() < 6 || h.total() != lt.Count || h.max <= 0 {
		t.Fatalf("floor turns: %d counted (%d reported), longest %s, want at least the 6 exchanges above", h.total(), lt.Count, h.max)
	}
	if len(h.bounds) != len(floorTurnBounds)+1 || h.bounds[len(floorTurnBounds)] != infBound {
		t.Fatalf("floor turn bounds %v", h.bounds)
	}
}

// The floor's turn buckets are the gateway's, so that the stall bench's
// turn rows (quantiles are bucket bounds, "over 20 ms" a bucket sum) read
// the same in both columns.
func TestFloorTurnBoundsAreTheGateways(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gateway")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	b, err := locateGateway("", "", wd, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer b.remove()
	defer func(old string) { gatewayExe = old }(gatewayExe)
	gatewayExe = b.path
	g, err := startGateway()
	if err != nil {
		t.Fatal(err)
	}
	defer g.stop()
	st, err := g.turnStats()
	if err != nil {
		t.Fatal(err)
	}
	gw, ok, err := parseLoopTurns(st.LoopTurns)
	if err != nil || !ok {
		t.Fatalf("gateway loop_turns %+v: %v", st.LoopTurns, err)
	}
	var floor floorServer
	lt := floor.loopTurns()
	fl, _, err := parseLoopTurns(&lt)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gw.bounds, fl.bounds) {
		t.Fatalf("bucket bounds: gateway %v, floor %v", gw.bounds, fl.bounds)
	}
}

// readControl reads one unmasked frame of at most 125 bytes from c: the
// floor server's control frames.
func readControl(t *testing.T, c net.Conn) (ws.OpCode, []byte) {
	t.Helper()
	h, err := ws.ReadHeader(c)
	if err != nil {
		t.Fatal(err)
	}
	if h.Masked || h.Length > 125 {
		t.Fatalf("frame header %+v: a server's control frame is unmasked and at most 125 bytes", h)
	}
	b := make([]byte, h.Length)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	return h.OpCode, b
}

// expectEOF reads c to its end and fails on anything but a clean one.
func expectEOF(t *testing.T, c net.Conn) {
	t.Helper()
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("read to the end: %v", err)
	}
	if len(b) != 0 {
		t.Fatalf("%d bytes before the end: %q", len(b), bytes.TrimSpace(b))
	}
}
