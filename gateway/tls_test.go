package gateway

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/tlsfront"
	"github.com/portcullis-gw/portcullis/policy/origin"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// tlsPair is a self-signed certificate for 127.0.0.1 written to files.
type tlsPair struct {
	certFile, keyFile string
	leaf              *x509.Certificate
}

func writeTLSPair(t *testing.T, dir, name string, serial int64) tlsPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "gateway test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	p := tlsPair{certFile: filepath.Join(dir, name+".crt"), keyFile: filepath.Join(dir, name+".key"), leaf: leaf}
	if err := os.WriteFile(p.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// banGuard refuses banned addresses as policy/guard does, admits the
// rest, and records strikes and slots.
type banGuard struct {
	openGuard
	banned netip.Addr

	mu      sync.Mutex
	slots   int
	strikes []reason.Reason
}

func (g *banGuard) Admit(a netip.Addr, limit bool, _ time.Time) (reason.Reason, time.Duration, netip.Prefix) {
	if a == g.banned {
		return reason.Banned, 0, netip.Prefix{}
	}
	if limit {
		g.mu.Lock()
		g.slots++
		g.mu.Unlock()
	}
	return reason.None, 0, netip.Prefix{}
}

func (g *banGuard) Release(netip.Addr) {
	g.mu.Lock()
	g.slots--
	g.mu.Unlock()
}

func (g *banGuard) Strike(_ netip.Addr, r reason.Reason, _ time.Time) bool {
	g.mu.Lock()
	g.strikes = append(g.strikes, r)
	g.mu.Unlock()
	return false
}

func (g *banGuard) state() (int, []reason.Reason) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.slots, append([]reason.Reason(nil), g.strikes...)
}

// startTLSServer is a gateway serving wss:// with pair.
func startTLSServer(t *testing.T, g Guard, pair tlsPair) (*Server, *recSink) {
	t.Helper()
	chk, _ := origin.NewChecker(nil, true)
	set, err := topics.Compile([]topics.Rule{{Match: "open", Subscribe: topics.Public}}, topics.Deny)
	if err != nil {
		t.Fatal(err)
	}
	val, err := schema.New(schema.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recSink{}
	s, err := Start(Options{Listen: "127.0.0.1:0", Origins: chk, Topics: set, Tokens: tokens.NewStore(tokens.Options{}),
		Schema: val, Version: "test", Audit: rec, Loops: 2, Guard: g,
		TLS: &TLS{CertFile: pair.certFile, KeyFile: pair.keyFile}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s, rec
}

// dialTLS opens a TLS connection from ip that trusts pair only.
func dialTLS(t *testing.T, s *Server, ip string, pair tlsPair) *tls.Conn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(pair.leaf)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", s.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// readFrame reads one unmasked server frame (payloads under 64 KiB).
func readFrame(t *testing.T, r *bufio.Reader) (byte, []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			t.Fatal(err)
		}
		n = int(binary.BigEndian.Uint16(l[:]))
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		t.Fatal(err)
	}
	return h[0] & 0x0f, p
}

// maskedText is one masked client text frame.
func maskedText(p string) []byte {
	out := []byte{0x81, 0x80 | byte(len(p)), 1, 2, 3, 4}
	for i := 0; i < len(p); i++ {
		out = append(out, p[i]^byte(1+i%4))
	}
	return out
}

// A wss:// client upgrades, subscribes and receives a publication; the
// gateway sees the client's own address (conn_open's ip), the slot the
// accept stage took is held while it is open and given back at its close.
func TestTLSSubscribeAndPublish(t *testing.T) {
	pair := writeTLSPair(t, t.TempDir(), "a", 1)
	g := &banGuard{}
	s, rec := startTLSServer(t, g, pair)
	c := dialTLS(t, s, "127.0.0.7", pair)
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: portcullis.v1\r\n"+
		"Origin: https://127.0.0.1\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	if op, p := readFrame(t, br); op != 1 || !strings.Contains(string(p), `"welcome"`) {
		t.Fatalf("first frame %d %q", op, p)
	}
	if _, err := c.Write(maskedText(`{"op":"subscribe","id":1,"topic":"open"}`)); err != nil {
		t.Fatal(err)
	}
	if _, p := readFrame(t, br); !strings.Contains(string(p), `"subscribed"`) {
		t.Fatalf("subscribe answered %q", p)
	}
	if n, err := s.Publish("open", []byte(`{"n":1}`)); err != nil || n != 1 {
		t.Fatalf("publish: %d, %v", n, err)
	}
	if _, p := readFrame(t, br); !strings.Contains(string(p), `{"n":1}`) {
		t.Fatalf("event %q", p)
	}
	e := rec.find(t, audit.KindConnOpen, "")
	if e.IP != netip.MustParseAddr("127.0.0.7") || e.PeerIP != e.IP {
		t.Fatalf("conn_open ip %v peer_ip %v, want the TLS client's 127.0.0.7", e.IP, e.PeerIP)
	}
	if slots, _ := g.state(); slots != 1 {
		t.Fatalf("%d slots held with one client open", slots)
	}
	c.Close()
	checkFor(t, func() bool { slots, _ := g.state(); return slots == 0 && s.Stats().Connections == 0 })
}

// An http:// page must not drive a wss:// socket: with TLS on, same-host
// mode refuses an http Origin (bad_origin) that a plain listener accepts.
func TestTLSRefusesHTTPOrigin(t *testing.T) {
	pair := writeTLSPair(t, t.TempDir(), "a", 1)
	s, rec := startTLSServer(t, &banGuard{}, pair)
	c := dialTLS(t, s, "127.0.0.1", pair)
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 403 {
		t.Fatalf("http Origin on wss://: %v %v, want 403", resp, err)
	}
	rec.find(t, audit.KindConnRejected, "bad_origin")
}

// Plain HTTP on the TLS port: the client reads a 400 with the JSON error
// tls_handshake; the trail has conn_rejected at stage handshake, code 400;
// the address is struck and its slot given back.
func TestTLSPlainHTTPRefused(t *testing.T) {
	pair := writeTLSPair(t, t.TempDir(), "a", 1)
	g := &banGuard{}
	s, rec := startTLSServer(t, g, pair)
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(body), `"error":"tls_handshake"`) {
		t.Fatalf("answer %d %s", resp.StatusCode, body)
	}
	e := rec.find(t, audit.KindConnRejected, "tls_handshake")
	if e.Stage != audit.StageHandshake || e.Code != 400 || !strings.Contains(e.Detail, "plain HTTP") || !e.IP.IsLoopback() {
		t.Fatalf("audit %+v", e)
	}
	checkFor(t, func() bool {
		slots, strikes := g.state()
		return slots == 0 && len(strikes) == 1 && strikes[0] == reason.TLSHandshake
	})
}

// A banned address is reset at accept, before any TLS work, and audited
// at stage accept; nothing is struck for it.
func TestTLSBannedResetBeforeHandshake(t *testing.T) {
	pair := writeTLSPair(t, t.TempDir(), "a", 1)
	g := &banGuard{banned: netip.MustParseAddr("127.0.0.9")}
	s, rec := startTLSServer(t, g, pair)
	pool := x509.NewCertPool()
	pool.AddCert(pair.leaf)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}, Timeout: 5 * time.Second}
	_, err := tls.DialWithDialer(d, "tcp", s.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	var ne net.Error
	if err == nil || (!errors.Is(err, io.EOF) && !errors.As(err, &ne)) {
		t.Fatalf("banned client's handshake: %v, want a reset", err)
	}
	e := rec.find(t, audit.KindConnRejected, "banned")
	if e.Stage != audit.StageAccept || e.IP != g.banned {
		t.Fatalf("audit %+v", e)
	}
	if s.tls.front.Stats().Handshakes != 0 {
		t.Fatal("a banned address cost a TLS handshake")
	}
	if _, strikes := g.state(); len(strikes) != 0 {
		t.Fatalf("strikes %v", strikes)
	}
}

// Health probes on the public port work over TLS.
func TestTLSHealthProbe(t *testing.T) {
	pair := writeTLSPair(t, t.TempDir(), "a", 1)
	s, _ := startTLSServer(t, &banGuard{}, pair)
	c := dialTLS(t, s, "127.0.0.1", pair)
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != `{"status":"ok"}` {
		t.Fatalf("GET /healthz over TLS: %d %s", resp.StatusCode, body)
	}
}

// A new pair serves new handshakes; a connection from before keeps its
// session.
func TestTLSUsePair(t *testing.T) {
	dir := t.TempDir()
	a := writeTLSPair(t, dir, "a", 1)
	s, _ := startTLSServer(t, &banGuard{}, a)
	old := dialTLS(t, s, "127.0.0.1", a)
	b := writeTLSPair(t, dir, "b", 2)
	p, err := tlsfront.LoadPair(b.certFile, b.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !s.UseTLSPair(p) || s.TLSCertificate().SerialNumber.Int64() != 2 {
		t.Fatal("the new pair is not in use")
	}
	if got := dialTLS(t, s, "127.0.0.1", b).ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 2 {
		t.Fatalf("a new client sees serial %d, want 2", got)
	}
	fmt.Fprintf(old, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(old), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the connection from before the new pair: %v %v", resp, err)
	}
}

// Drain stops the front's accepting and closes a wss:// client with 1001;
// Drain returns once the front's connections have ended.
func TestTLSDrain(t *testing.T) {
	pair := writeTLSPair(t, t.TempDir(), "a", 1)
	s, _ := startTLSServer(t, &banGuard{}, pair)
	c := dialTLS(t, s, "127.0.0.1", pair)
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	readFrame(t, br) // welcome
	done := make(chan error, 1)
	go func() { done <- s.Drain(context.Background(), 0) }()
	for {
		op, p := readFrame(t, br)
		if op == 8 {
			if code := binary.BigEndian.Uint16(p); code != 1001 {
				t.Fatalf("close code %d, want 1001", code)
			}
			break
		}
	}
	_, _ = c.Write([]byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe9}) // the client's close
	if err := <-done; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if _, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		t.Fatal("the TLS port still accepts after the drain")
	}
	if st := s.tls.front.Stats(); st.Bridged != 0 {
		t.Fatalf("front stats after the drain: %+v", st)
	}
}
