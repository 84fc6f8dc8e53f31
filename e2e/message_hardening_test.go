package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Issue 11, items 3 and 4: unfinished messages cannot park memory, and
// expensive refusals are cheap or counted. Each test asserts what the
// client sees, the audit line, the strike or ban, and for the resource
// classes a bound measured on the running binary.

// wampFrom dials from ip and upgrades to the subprotocol proto; for "wamp"
// it reads the WELCOME.
func wampFrom(t *testing.T, s *server, ip, proto string) *rawConn {
	t.Helper()
	c := dialFrom(t, s, ip)
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Protocol: %s\r\n\r\n", s.wsAddr, proto)
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	status, _ := rc.r.ReadString('\n')
	if !strings.Contains(status, "101") {
		t.Fatalf("handshake from %s: %q", ip, status)
	}
	for {
		l, err := rc.r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
	}
	if proto == "wamp" {
		if op, p := rc.read(); op != 1 || !strings.HasPrefix(string(p), "[0,") {
			t.Fatalf("first frame %d %q", op, p)
		}
	}
	return rc
}

// A fragmented message never completed is closed 1008 once
// limits.message_timeout passes, although pings keep the connection busy:
// audited message_timeout, and a strike (maxretry 1 here: it bans).
func TestMessageHardeningTimeout(t *testing.T) {
	s := startServer(t, "limits: {message_timeout: 1s}\nbans: {allow: [], maxretry: 1}\n")
	const ip = "127.0.0.21"
	rc := wampFrom(t, s, ip, "wamp")
	start := time.Now()
	_, _ = rc.c.Write(maskedFrame(false, 1, []byte(`[5,"ne`)))
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
				if _, err := rc.c.Write(maskedFrame(true, 9, nil)); err != nil {
					return
				}
			}
		}
	}()
	_, code := rc.pongsAndClose()
	close(done)
	if code != 1008 {
		t.Fatalf("close %d, want 1008", code)
	}
	if d := time.Since(start); d < time.Second || d > 6*time.Second {
		t.Fatalf("closed after %v, want about the 1 s message timeout", d)
	}
	s.waitAll(map[string]any{"event": "message_rejected", "reason": "message_timeout", "code": 1008,
		"ip": ip, "proto": "wamp", "severity": "warning"})
	checkFor(t, 10*time.Second, func() error {
		if _, ok := s.bans()[ip+"/32"]; !ok {
			return fmt.Errorf("no ban of %s after its message_timeout strike: %v", ip, s.bans())
		}
		return nil
	})
	checkFor(t, 10*time.Second, func() error {
		if n := s.statNumber("inbound_held_bytes"); n != 0 {
			return fmt.Errorf("%v inbound bytes still held", n)
		}
		return nil
	})
}

// Many connections of one address parking fragments of nearly
// max_message_bytes: beyond limits.inbound_buffer_per_ip each is closed
// 1008 inbound_budget, audited, and the server's heap stays bounded (the
// attack run parked 34 MiB with 36 connections).
func TestMessageHardeningInboundBudget(t *testing.T) {
	s := startServer(t, "limits: {inbound_buffer_per_ip: 4194304, conn_rate: {rate: 1000, burst: 1000},\n  bytes_rate: {rate: 1073741824, burst: 1073741824}}\nbans: {allow: [], maxretry: 1000}\n")
	const ip = "127.0.0.22"
	heap0 := s.statNumber("heap_live_bytes")
	part := fragmented(bytes.Repeat([]byte("a"), 950<<10), 60<<10, false)
	const conns = 36
	codes := make([]int, conns)
	rcs := make([]*rawConn, conns)
	for i := range rcs {
		rcs[i] = wampFrom(t, s, ip, "wamp")
	}
	var wg sync.WaitGroup
	for _, rc := range rcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = rc.c.Write(part)
		}()
	}
	wg.Wait()
	// Every connection's fragments are in; the refused ones were closed.
	var refused []int
	for i, rc := range rcs {
		_ = rc.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, codes[i] = rc.pongsAndClose()
		if codes[i] == 1008 {
			refused = append(refused, i)
		}
	}
	held := s.statNumber("inbound_held_bytes")
	heap := s.statNumber("heap_live_bytes")
	if held > 4<<20 {
		t.Fatalf("%v bytes held for one address, over its 4 MiB budget", held)
	}
	if len(refused) < conns-5 {
		t.Fatalf("%d of %d connections refused (codes %v), want all but the 4 that fit", len(refused), conns, codes)
	}
	if grown := heap - heap0; grown > 24<<20 {
		t.Fatalf("heap grew by %.1f MiB while one address parked messages, want under 24 MiB (36 parked messages are 34 MiB; held %v)", grown/(1<<20), held)
	}
	t.Logf("held %.1f MiB, heap +%.1f MiB, %d/%d refused", held/(1<<20), (heap-heap0)/(1<<20), len(refused), conns)
	s.waitAll(map[string]any{"event": "message_rejected", "reason": "inbound_budget", "code": 1008, "ip": ip,
		"proto": "wamp", "counted_prefix": ip + "/32"})
	// Identical refusals beyond the first few a second are folded into a
	// summary line that counts them.
	checkFor(t, 10*time.Second, func() error {
		if n := s.auditTotal(map[string]any{"event": "message_rejected", "reason": "inbound_budget"}); n != len(refused) {
			return fmt.Errorf("%d inbound_budget audit events for %d refused connections", n, len(refused))
		}
		return nil
	})
	for _, rc := range rcs {
		rc.c.Close()
	}
	checkFor(t, 10*time.Second, func() error {
		if n := s.statNumber("inbound_held_bytes"); n != 0 {
			return fmt.Errorf("%v inbound bytes still held after every connection closed", n)
		}
		return nil
	})
}

// 1 MB WAMP v1 CALLs from an unauthenticated client are refused by their
// type code before parsing (close 1009, audited message_too_large) at a
// fraction of the CPU a full parse cost (31–37 ms each), and strike: the
// address is banned after a few. Small CALLs get CALLERROR, and a few in
// a row close 1008 unsupported.
func TestMessageHardeningWAMPCall(t *testing.T) {
	s := startServer(t, "")
	call := fragmented([]byte(`[2,"c1","http://example.com/rpc","`+strings.Repeat("A", 1000000)+`"]`), 60<<10, true)
	pid := s.cmd.Process.Pid

	// 20 such CALLs from 20 addresses (one each: each is a strike of 2).
	cpu0 := procCPU(t, pid)
	for i := 0; i < 20; i++ {
		ip := fmt.Sprintf("127.0.1.%d", 10+i)
		rc := wampFrom(t, s, ip, "wamp")
		_, _ = rc.c.Write(call)
		if _, code := rc.pongsAndClose(); code != 1009 {
			t.Fatalf("CALL from %s: close %d, want 1009", ip, code)
		}
	}
	cpu := procCPU(t, pid) - cpu0
	t.Logf("server CPU for 20 connections with a 1 MB CALL each: %v", cpu)
	if cpu > 300*time.Millisecond {
		t.Fatalf("server used %v of CPU for 20 refused 1 MB CALLs; a full parse cost 620–740 ms, want under 300 ms", cpu)
	}
	s.waitAll(map[string]any{"event": "message_rejected", "reason": "message_too_large", "code": 1009,
		"ip": "127.0.1.10", "proto": "wamp"})

	// The same address keeps sending them: banned (weight 2, maxretry 5).
	const ip = "127.0.0.23"
	for i := 0; i < 3; i++ {
		rc := wampFrom(t, s, ip, "wamp")
		_, _ = rc.c.Write(call)
		if _, code := rc.pongsAndClose(); code != 1009 && code != 1008 {
			t.Fatalf("CALL %d: close %d, want 1009 (or 1008 banned)", i, code)
		}
	}
	checkFor(t, 10*time.Second, func() error {
		if _, ok := s.bans()[ip+"/32"]; !ok {
			return fmt.Errorf("%s not banned after three 1 MB CALLs", ip)
		}
		return nil
	})
	resetFrom(t, s, ip)

	// Small CALLs: CALLERROR while few, then 1008; each one a strike.
	const ip2 = "127.0.0.24"
	rc := wampFrom(t, s, ip2, "wamp")
	for i := 0; i < 3; i++ {
		rc.sendJSON(`[2,"c1","http://example.com/rpc",1]`)
		op, p := rc.read()
		if op != 1 || !strings.HasPrefix(string(p), `[4,"c1"`) {
			t.Fatalf("reply %d %q, want CALLERROR", op, p)
		}
	}
	rc.sendJSON(`[2,"c2","http://example.com/rpc",1]`)
	if _, code := rc.pongsAndClose(); code != 1008 {
		t.Fatalf("fourth CALL in a row: close %d, want 1008", code)
	}
	s.waitTotal(map[string]any{"event": "message_rejected", "reason": "unsupported", "ip": ip2}, 4)
	s.waitAll(map[string]any{"event": "message_rejected", "reason": "unsupported", "ip": ip2, "code": 1008})
}

// A ping flood is not answered beyond the message rate, and a client that
// keeps pinging is closed 1008, audited once.
func TestMessageHardeningPingFlood(t *testing.T) {
	s := startServer(t, "")
	const ip = "127.0.0.25"
	rc := upgradeFrom(t, s, ip)
	var flood []byte
	for i := 0; i < 3000; i++ {
		flood = append(flood, maskedFrame(true, 9, []byte("p"))...)
	}
	go func() { _, _ = rc.c.Write(flood) }()
	pongs, code := rc.pongsAndClose()
	if code != 1008 {
		t.Fatalf("close %d, want 1008", code)
	}
	if pongs > 100 {
		t.Fatalf("%d pongs to 3,000 pings, want about the msg_rate burst (41)", pongs)
	}
	t.Logf("%d pongs to 3000 pings", pongs)
	e := s.waitAll(map[string]any{"event": "message_rejected", "reason": "msg_rate", "code": 1008, "ip": ip})[0]
	if !strings.Contains(fmt.Sprint(e["detail"]), "ping") {
		t.Fatalf("audit detail %v, want it to name the pings", e["detail"])
	}
	if n := s.auditTotal(map[string]any{"event": "message_rejected", "reason": "msg_rate", "ip": ip}); n != 1 {
		t.Fatalf("%d msg_rate events, want 1", n)
	}
}

// One address pushing valid messages faster than limits.bytes_rate is
// closed 1008 bytes_rate, audited, a strike.
func TestMessageHardeningBytesRate(t *testing.T) {
	s := startServer(t, "limits: {bytes_rate: {rate: 262144, burst: 1048576}, msg_rate: {rate: 100000, burst: 100000}}\n")
	const ip = "127.0.0.26"
	rc := wampFrom(t, s, ip, "wamp")
	msg := maskedFrame(true, 1, []byte(`[1,"p","http://example.com/`+strings.Repeat("x", 400)+`"]`))
	var flood []byte
	for len(flood) < 8<<20 {
		flood = append(flood, msg...)
	}
	go func() { _, _ = rc.c.Write(flood) }()
	if _, code := rc.pongsAndClose(); code != 1008 {
		t.Fatalf("close %d, want 1008", code)
	}
	s.waitAll(map[string]any{"event": "message_rejected", "reason": "bytes_rate", "code": 1008, "ip": ip,
		"proto": "wamp", "severity": "warning"})
	// Another address is unaffected.
	other := wampFrom(t, s, "127.0.0.27", "wamp")
	other.sendJSON(`[1,"p","http://example.com/"]`)
	other.sendJSON(`[2,"c1","http://example.com/rpc"]`)
	if op, p := other.read(); op != 1 || !strings.HasPrefix(string(p), `[4,"c1"`) {
		t.Fatalf("other address: %d %q", op, p)
	}
}
