package main

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestServerFrame(t *testing.T) {
	frame := func(f ws.Frame) []byte {
		var b bytes.Buffer
		if err := ws.WriteFrame(&b, f); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	long := bytes.Repeat([]byte("x"), 300)
	huge := bytes.Repeat([]byte("y"), 70000)
	for _, c := range []struct {
		name string
		b    []byte
		op   ws.OpCode
		want []byte
	}{
		{"pong", frame(ws.NewPongFrame([]byte("12345678"))), ws.OpPong, []byte("12345678")},
		{"16-bit length", frame(ws.NewTextFrame(long)), ws.OpText, long},
		{"64-bit length", frame(ws.NewTextFrame(huge)), ws.OpText, huge},
		{"masked", frame(ws.MaskFrame(ws.NewPingFrame([]byte("abc")))), ws.OpPing, []byte("abc")},
	} {
		whole := append(append([]byte(nil), c.b...), 0x8a) // the next frame's first byte
		op, payload, size, ok := serverFrame(whole)
		if !ok || op != c.op || size != len(c.b) || !bytes.Equal(payload, c.want) {
			t.Errorf("%s: op %v size %d/%d ok %v, payload equal %v", c.name, op, size, len(c.b), ok, bytes.Equal(payload, c.want))
		}
		for cut := 0; cut < len(c.b); cut += max(1, len(c.b)/7) {
			if _, _, _, ok := serverFrame(c.b[:cut]); ok {
				t.Errorf("%s: a frame cut at %d of %d parsed", c.name, cut, len(c.b))
			}
		}
	}
}

// pingServer accepts WebSocket-framed connections (no handshake: the
// pinger only needs frames), answers pings with pongs, pings each client
// once and counts the pongs that come back.
func pingServer(t *testing.T) (addr string, clientPongs *atomic.Int64, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	clientPongs = new(atomic.Int64)
	acc := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			acc <- c
			go func() {
				defer c.Close()
				if err := ws.WriteFrame(c, ws.NewPingFrame([]byte("srv"))); err != nil {
					return
				}
				for {
					h, err := ws.ReadHeader(c)
					if err != nil || h.Length > 125 {
						return // the pinger sends control frames and {} only
					}
					payload := make([]byte, h.Length)
					if _, err := io.ReadFull(c, payload); err != nil {
						return
					}
					if h.Masked {
						ws.Cipher(payload, h.Mask, 0)
					}
					switch h.OpCode {
					case ws.OpPing:
						if ws.WriteFrame(c, ws.NewPongFrame(payload)) != nil {
							return
						}
					case ws.OpPong:
						if string(payload) == "srv" {
							clientPongs.Add(1)
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), clientPongs, acc
}

// The pinger times pongs on every connection, answers the server's ping,
// and retires a connection the server closes while the others go on.
func TestPinger(t *testing.T) {
	addr, clientPongs, accepted := pingServer(t)
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	rec := newRTTRecorder(5*time.Millisecond, 1000, 1)
	p, err := newPinger(conns, rec, 5*time.Millisecond, false)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	go p.run()
	p.start()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && (clientPongs.Load() < 3 || rec.take().Pongs == 0) {
		time.Sleep(50 * time.Millisecond)
	}
	if clientPongs.Load() != 3 {
		t.Fatalf("the server's pings answered on %d of 3 connections", clientPongs.Load())
	}
	time.Sleep(100 * time.Millisecond)
	rep := rec.take()
	// 3 connections pinging every 5 ms for 100 ms: about 60.
	if rep.Pongs < 15 || rep.Missing != 0 || len(rep.Samples) != int(rep.Pongs) || rep.MaxUS <= 0 {
		t.Fatalf("%d pongs, %d missing, %d samples, max %.0f µs", rep.Pongs, rep.Missing, len(rep.Samples), rep.MaxUS)
	}
	(<-accepted).Close()
	time.Sleep(200 * time.Millisecond)
	rec.take()
	time.Sleep(100 * time.Millisecond)
	rep = rec.take()
	p.halt()
	dead := 0
	for _, c := range p.conns {
		if c.dead {
			dead++
		}
	}
	if dead != 1 || rep.Pongs < 10 {
		t.Fatalf("after the server closed one: %d retired, %d pongs from the others", dead, rep.Pongs)
	}
}
