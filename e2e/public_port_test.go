package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// probeFrom sends one plain HTTP GET for path from ip to the public port
// and returns the status and body.
func probeFrom(t *testing.T, s *server, ip, path string) (int, string) {
	t.Helper()
	c := dialFrom(t, s, ip)
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: lb-probe\r\n\r\n", path, s.wsAddr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("probe %s from %s: %v", path, ip, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A load balancer probing /healthz and /readyz on the public port, faster
// than the connection rate allows, gets 200 every time, leaves no audit
// line, gets no strike and can still connect: nothing is banned.
func TestPublicHealthProbesNeverStrike(t *testing.T) {
	const lb = "127.0.0.21"
	s := startServer(t, "limits: {conn_rate: {rate: 1, burst: 2}}\nbans: {allow: [], maxretry: 2}\n")
	for i := 0; i < 20; i++ {
		path := "/healthz"
		if i%2 == 1 {
			path = "/readyz"
		}
		if code, body := probeFrom(t, s, lb, path); code != 200 || body != `{"status":"ok"}` {
			t.Fatalf("probe %d (%s): %d %q", i, path, code, body)
		}
	}
	rc := upgradeFrom(t, s, lb) // the probes took nothing from the rate
	rc.c.Close()
	s.waitAudit(map[string]any{"event": "conn_open", "ip": lb})
	for _, e := range s.auditLines() {
		if e["ip"] == lb && e["event"] != "conn_open" && e["event"] != "conn_close" {
			t.Fatalf("a probe left an audit line: %v", e)
		}
	}
	if b := s.bans(); len(b) != 0 {
		t.Fatalf("bans after 20 probes: %v", b)
	}
	if n := s.strikes(); n != 0 {
		t.Fatalf("%d strikes after 20 probes", n)
	}
	// Any other plain GET is still a refused handshake, audited.
	if code, body := probeFrom(t, s, "127.0.0.22", "/status"); code != 404 || !strings.Contains(body, `"bad_path"`) {
		t.Fatalf("GET /status: %d %q", code, body)
	}
	s.waitAudit(map[string]any{"event": "conn_rejected", "ip": "127.0.0.22", "reason": "bad_path"})
}

// Forwarding headers from a peer outside trusted_proxies are not believed
// (the client is served under the peer's address) and are reported once
// per peer per hour: one untrusted_forwarding line and one log warning
// for ten requests, and no strike.
func TestUntrustedForwardingReportedOncePerPeer(t *testing.T) {
	const peer = "127.0.0.23"
	s := startServer(t, "trusted_proxies: [\"10.0.0.0/8\"]\n")
	for i := 0; i < 10; i++ {
		rc := upgradeFrom(t, s, peer, "X-Forwarded-For: 198.51.100.7", "X-Real-IP: 198.51.100.7")
		rc.c.Close()
	}
	e := s.waitAudit(map[string]any{"event": "untrusted_forwarding", "peer_ip": peer})
	if e["severity"] != "warning" || e["ip"] != peer || !strings.Contains(fmt.Sprint(e["detail"]), "X-Forwarded-For") {
		t.Fatalf("audit line %v", e)
	}
	s.waitTotal(map[string]any{"event": "conn_open", "ip": peer}, 10)
	if n := s.auditTotal(map[string]any{"event": "conn_open", "ip": "198.51.100.7"}); n != 0 {
		t.Fatalf("%d connections served under the forwarded address", n)
	}
	if n := s.auditTotal(map[string]any{"event": "untrusted_forwarding"}); n != 1 {
		t.Fatalf("%d untrusted_forwarding lines for 10 requests, want 1", n)
	}
	checkFor(t, 5*time.Second, func() error {
		if n := strings.Count(s.stderr.String(), "outside trusted_proxies ignored"); n != 1 {
			return fmt.Errorf("%d log warnings, want 1:\n%s", n, s.stderr.String())
		}
		return nil
	})
	if n := s.strikes(); n != 0 {
		t.Fatalf("%d strikes", n)
	}
}
