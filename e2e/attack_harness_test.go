package e2e

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Fatalf("server exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		s.t.Fatal("server did not exit within 15 s of SIGTERM")
	}
}

// auditCount counts the audit events whose fields include want.
func (s *server) auditCount(want map[string]any) int {
	n := 0
	for _, e := range s.auditLines() {
		if matches(e, want) {
			n++
		}
	}
	return n
}

// auditTotal is how many events matching want happened: the audit writer
// folds identical rejections beyond the first few per second into one
// summary line whose count says how many it stands for.
func (s *server) auditTotal(want map[string]any) int {
	n := 0
	for _, e := range s.auditLines() {
		if matches(e, want) {
			if c, ok := e["count"].(float64); ok && c > 0 {
				n += int(c)
			} else {
				n++
			}
		}
	}
	return n
}

// waitTotal polls until auditTotal(want) == n.
func (s *server) waitTotal(want map[string]any, n int) {
	s.t.Helper()
	checkFor(s.t, 10*time.Second, func() error {
		if got := s.auditTotal(want); got != n {
			return fmt.Errorf("%d audit events with %v, want %d", got, want, n)
		}
		return nil
	})
}

// dialFrom opens a TCP connection to the gateway from the loopback address
// ip (any 127/8 address works on Linux without configuration).
func dialFrom(t *testing.T, s *server, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", s.wsAddr)
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// upgradeRequest is a valid portcullis.v1 upgrade request for s with extra
// header lines (each without CRLF).
func upgradeRequest(s *server, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Protocol: portcullis.v1\r\n", s.wsAddr)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// httpReply is a refused upgrade as the client saw it.
type httpReply struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// handshakeOn writes prefix+req on c and reads the answer. A 101 returns a
// rawConn that has already read the welcome frame; anything else returns
// the HTTP reply.
func handshakeOn(t *testing.T, c net.Conn, prefix, req string) (*httpReply, *rawConn) {
	t.Helper()
	if _, err := io.WriteString(c, prefix+req); err != nil {
		t.Fatalf("write handshake: %v", err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read handshake reply: %v", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		rc := &rawConn{t: t, c: c, r: br}
		if op, p := rc.read(); op != 1 || !strings.Contains(string(p), `"welcome"`) {
			t.Fatalf("first frame %d %q", op, p)
		}
		return nil, rc
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := &httpReply{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	_ = json.Unmarshal(b, &r.body)
	return r, nil
}

// upgradeFrom dials from ip and upgrades; it fails the test unless the
// gateway answers 101.
func upgradeFrom(t *testing.T, s *server, ip string, headers ...string) *rawConn {
	t.Helper()
	rep, rc := handshakeOn(t, dialFrom(t, s, ip), "", upgradeRequest(s, headers...))
	if rc == nil {
		t.Fatalf("upgrade from %s: HTTP %d %s", ip, rep.status, rep.raw)
	}
	return rc
}

// refusedFrom dials from ip and upgrades; it fails the test unless the
// gateway answers with an HTTP error, which it returns.
func refusedFrom(t *testing.T, s *server, ip string, headers ...string) *httpReply {
	t.Helper()
	rep, rc := handshakeOn(t, dialFrom(t, s, ip), "", upgradeRequest(s, headers...))
	if rc != nil {
		t.Fatalf("upgrade from %s succeeded, want a refusal", ip)
	}
	return rep
}

// expectReset checks that the gateway drops c without sending one byte:
// a reset (or EOF) and no HTTP response, whatever the client writes.
func expectReset(t *testing.T, c net.Conn, req string) {
	t.Helper()
	_, _ = io.WriteString(c, req) // may fail: the reset can come first
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 512)
	n, err := c.Read(b)
	if n > 0 {
		t.Fatalf("gateway sent %q, want a reset before any byte", b[:n])
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("gateway kept the connection open, want a reset at accept")
	}
	if err == nil {
		t.Fatal("read returned no error and no data")
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
		t.Fatalf("read error %v, want a reset", err)
	}
}

// resetFrom dials from ip and checks the connection is reset at accept.
// The reset can beat connect() itself back to the client: that is a reset
// too.
func resetFrom(t *testing.T, s *server, ip string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", s.wsAddr)
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	defer c.Close()
	expectReset(t, c, upgradeRequest(s))
}

// sendJSON sends v (or a string / []byte as is) as one masked text frame.
func (rc *rawConn) sendJSON(v any) {
	var b []byte
	switch x := v.(type) {
	case string:
		b = []byte(x)
	case []byte:
		b = x
	default:
		b, _ = json.Marshal(v)
	}
	rc.frame(true, 1, b, true)
}

// next reads one server frame without failing the test on a socket error.
func (rc *rawConn) next() (byte, []byte, error) {
	h := make([]byte, 2)
	if _, err := io.ReadFull(rc.r, h); err != nil {
		return 0, nil, err
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		b := make([]byte, 2)
		if _, err := io.ReadFull(rc.r, b); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(b))
	case 127:
		b := make([]byte, 8)
		if _, err := io.ReadFull(rc.r, b); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint64(b))
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(rc.r, p); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, p, nil
}

// readMsg returns the next JSON text message, skipping pings; it fails the
// test on a close frame or a socket error.
func (rc *rawConn) readMsg() map[string]any {
	rc.t.Helper()
	for {
		op, p, err := rc.next()
		if err != nil {
			rc.t.Fatalf("read: %v", err)
		}
		switch op {
		case 9, 10:
			continue
		case 8:
			rc.t.Fatalf("unexpected close frame %v", closeCodeOf(p))
		}
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			rc.t.Fatalf("frame %q: %v", p, err)
		}
		return m
	}
}

// drain reads until the close frame or the end of the stream, returning
// the JSON messages seen and the close code (-1: no close frame).
func (rc *rawConn) drain() (msgs []map[string]any, code int) {
	for {
		op, p, err := rc.next()
		if err != nil {
			return msgs, -1
		}
		switch op {
		case 8:
			return msgs, closeCodeOf(p)
		case 1:
			var m map[string]any
			_ = json.Unmarshal(p, &m)
			msgs = append(msgs, m)
		}
	}
}

func closeCodeOf(p []byte) int {
	if len(p) < 2 {
		return 1005
	}
	return int(binary.BigEndian.Uint16(p))
}

// bans returns GET /v1/bans keyed by prefix.
func (s *server) bans() map[string]map[string]any {
	s.t.Helper()
	code, out := s.api("GET", "/v1/bans", "")
	if code != 200 {
		s.t.Fatalf("GET /v1/bans: %d %v", code, out)
	}
	res := map[string]map[string]any{}
	list, _ := out["bans"].([]any)
	for _, b := range list {
		m := b.(map[string]any)
		res[m["prefix"].(string)] = m
	}
	return res
}

// waitAll polls the trail until every want has a matching event and
// returns the first match of each, in order: one wait for many checks.
func (s *server) waitAll(wants ...map[string]any) []map[string]any {
	s.t.Helper()
	found := make([]map[string]any, len(wants))
	checkFor(s.t, 10*time.Second, func() error {
		lines := s.auditLines()
	next:
		for i, w := range wants {
			for _, e := range lines {
				if matches(e, w) {
					found[i] = e
					continue next
				}
			}
			return fmt.Errorf("no audit event with %v", w)
		}
		return nil
	})
	return found
}
