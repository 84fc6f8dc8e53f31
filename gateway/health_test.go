package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/clientip"
	"github.com/portcullis-gw/portcullis/policy/origin"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// rateGuard admits maxAttempts connection attempts per address, counts
// strikes and implements attemptRefunder, like policy/guard.
type rateGuard struct {
	openGuard
	maxAttempts int

	mu       sync.Mutex
	attempts map[netip.Addr]int
	strikes  int
}

func (g *rateGuard) Admit(a netip.Addr, limit bool, _ time.Time) (reason.Reason, time.Duration, netip.Prefix) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !limit {
		return reason.None, 0, netip.Prefix{}
	}
	if g.attempts[a] >= g.maxAttempts {
		return reason.ConnRate, time.Second, netip.Prefix{}
	}
	g.attempts[a]++
	return reason.None, 0, netip.Prefix{}
}

func (g *rateGuard) RefundAttempt(a netip.Addr, _ time.Time) {
	g.mu.Lock()
	g.attempts[a]--
	g.mu.Unlock()
}

func (g *rateGuard) Strike(netip.Addr, reason.Reason, time.Time) bool {
	g.mu.Lock()
	g.strikes++
	g.mu.Unlock()
	return false
}

// startProbeServer is a server with a rate-limiting Guard and a logger
// whose entries the test reads.
func startProbeServer(t *testing.T, g Guard, trusted []string) (*Server, *recSink, *logtest.Hook) {
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
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	rec := &recSink{}
	o := Options{Listen: "127.0.0.1:0", Origins: chk, Topics: set, Tokens: tokens.NewStore(tokens.Options{}),
		Schema: val, Version: "test", Audit: rec, Loops: 2, Guard: g, Log: log}
	if trusted != nil {
		o.ClientIP = mustResolver(t, trusted)
	}
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(t.Context()) })
	return s, rec, hook
}

// get sends one plain HTTP request and returns the status and body.
func get(t *testing.T, s *Server, path string, header string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: gw.example\r\n%s\r\n", path, header)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// Health probes on the public port answer plain HTTP, leave no audit line,
// strike nothing and take nothing from the address's connection rate; any
// other plain GET is still refused as a bad handshake.
func TestHealthProbes(t *testing.T) {
	g := &rateGuard{maxAttempts: 5, attempts: map[netip.Addr]int{}}
	s, rec, _ := startProbeServer(t, g, nil)
	for i := range 20 {
		path := "/healthz"
		if i%2 == 1 {
			path = "/readyz?full=1"
		}
		if code, body := get(t, s, path, ""); code != 200 || body != `{"status":"ok"}` {
			t.Fatalf("probe %d %s: %d %q", i, path, code, body)
		}
	}
	checkFor(t, func() bool { return s.Stats().Connections == 0 })
	if n := len(rec.all()); n != 0 {
		t.Fatalf("probes left %d audit events: %+v", n, rec.all())
	}
	g.mu.Lock()
	strikes, attempts := g.strikes, g.attempts[netip.MustParseAddr("127.0.0.1")]
	g.mu.Unlock()
	if strikes != 0 || attempts != 0 {
		t.Fatalf("probes struck %d times and kept %d attempts", strikes, attempts)
	}
	w := dialProto(t, s, "portcullis.v1") // within the 5 attempts: the probes took none
	if b := w.recv(); !strings.Contains(string(b), "welcome") {
		t.Fatalf("welcome: %q", b)
	}

	code, body := get(t, s, "/metrics", "")
	if code != 404 && code != 400 || !strings.Contains(body, `"error"`) {
		t.Fatalf("plain GET /metrics: %d %q, want the handshake refusal as before", code, body)
	}
	if e := rec.find(t, audit.KindConnRejected, ""); e.Reason != reason.BadPath && e.Reason != reason.BadHandshake {
		t.Fatalf("plain GET audited as %v", e.Reason)
	}

	s.draining.Store(true)
	if code, body := get(t, s, "/readyz", ""); code != 503 || body != `{"status":"draining"}` {
		t.Fatalf("readyz while draining: %d %q", code, body)
	}
	if code, _ := get(t, s, "/healthz", ""); code != 200 {
		t.Fatalf("healthz while draining: %d", code)
	}
}

func TestProbeOf(t *testing.T) {
	for req, want := range map[string]probe{
		"GET /healthz HTTP/1.1\r\n\r\n":         probeHealthz,
		"GET /readyz?x HTTP/1.0\r\n\r\n":        probeReadyz,
		"GET /healthz/x HTTP/1.1\r\n\r\n":       probeNone,
		"POST /healthz HTTP/1.1\r\n\r\n":        probeNone,
		"GET /ws HTTP/1.1\r\n\r\n":              probeNone,
		"GET  /healthz HTTP/1.1\r\n\r\n":        probeNone,
		"get /healthz HTTP/1.1\r\n\r\n":         probeNone,
		"GET /readyz\r\nHost: x\r\n\r\n":        probeReadyz,
		"GET /healthzz HTTP/1.1\r\n\r\n":        probeNone,
		"GET http://a/healthz HTTP/1.1\r\n\r\n": probeNone,
	} {
		if got := probeOf([]byte(req)); got != want {
			t.Errorf("probeOf(%q) = %d, want %d", req, got, want)
		}
	}
}

// A forwarding header from a peer outside trusted_proxies is not believed,
// and it is reported once per peer per hour: one warning in the log and
// one untrusted_forwarding event for ten requests, never a strike.
func TestUntrustedForwardingReportedOnce(t *testing.T) {
	g := &rateGuard{maxAttempts: 100, attempts: map[netip.Addr]int{}}
	s, rec, hook := startProbeServer(t, g, []string{"10.9.9.0/24"})
	headers := []string{"X-Forwarded-For: 203.0.113.7", "Forwarded: for=203.0.113.7", "X-Real-IP: 203.0.113.7"}
	for i := range 10 {
		w := dialHeader(t, s, headers[i%len(headers)])
		if b := w.recv(); !strings.Contains(string(b), "welcome") {
			t.Fatalf("welcome: %q", b)
		}
		w.c.Close()
	}
	e := rec.find(t, audit.KindUntrustedForwarding, "")
	peer := netip.MustParseAddr("127.0.0.1")
	if e.PeerIP != peer || e.IP != peer || e.Severity != audit.Warning || !strings.Contains(e.Detail, "X-Forwarded-For") {
		t.Fatalf("event %+v", e)
	}
	checkFor(t, func() bool { return s.Stats().Connections == 0 })
	n := 0
	for _, e := range rec.all() {
		switch {
		case e.Event == audit.KindUntrustedForwarding:
			n++
		case e.Event == audit.KindConnOpen && e.IP != peer:
			t.Fatalf("client served under %v, not the peer's address", e.IP)
		}
	}
	warned := 0
	for _, l := range hook.AllEntries() {
		if l.Level == logrus.WarnLevel && strings.Contains(l.Message, "trusted_proxies") {
			warned++
			if l.Data["peer"] != "127.0.0.1" {
				t.Fatalf("log entry %v", l.Data)
			}
		}
	}
	g.mu.Lock()
	strikes := g.strikes
	g.mu.Unlock()
	if n != 1 || warned != 1 || strikes != 0 {
		t.Fatalf("%d events, %d warnings, %d strikes for 10 requests; want 1, 1, 0", n, warned, strikes)
	}
}

// dialHeader upgrades a native connection whose request carries header.
func dialHeader(t *testing.T, s *Server, header string) *wsClient {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: gw.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n\r\n", header)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade with %q: %v %v", header, resp, err)
	}
	return &wsClient{t: t, c: c, r: br, proto: "portcullis.v1"}
}

func mustResolver(t *testing.T, trusted []string) *clientip.Resolver {
	t.Helper()
	r, err := clientip.NewResolver(trusted, "")
	if err != nil {
		t.Fatal(err)
	}
	return r
}
