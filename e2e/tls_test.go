package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test: it signs leaf
// certificates for 127.0.0.1 and localhost, and clients trust it alone.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemFile string // the CA certificate, for clients
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "portcullis e2e test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, pemFile: filepath.Join(dir, "ca.crt")}
	if err := os.WriteFile(ca.pemFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return ca
}

// leaf signs a server certificate with serial for 127.0.0.1 and localhost
// and writes it and a new key to certFile and keyFile (0600), replacing
// what is there (a renewal in place). It returns the certificate and the
// base64 SHA-256 of its public key (Chromium's SPKI pin).
func (ca *testCA) leaf(t *testing.T, serial int64, certFile, keyFile string) (*x509.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Key first, then certificate: a reload in between would refuse a
	// mismatched pair and keep the old one, never serve a wrong one.
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return cert, base64.StdEncoding.EncodeToString(spki[:])
}

// clientConfig trusts ca alone.
func (ca *testCA) clientConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

// httpClient is an HTTP client trusting ca alone.
func (ca *testCA) httpClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: ca.clientConfig()}}
}

// startTLSServer runs `portcullis serve` with the whole config yaml (the
// caller names the listeners) and waits for its wss:// start-up line.
func startTLSServer(t *testing.T, yaml string) *server {
	t.Helper()
	return launch(t, yaml, filepath.Join(t.TempDir(), "d"), "wss")
}

// tlsBaseConfig is a wss:// gateway on loopback with a token topic.
func tlsBaseConfig(certFile, keyFile string) string {
	return fmt.Sprintf("listen: \"127.0.0.1:0\"\nadmin: {listen: \"127.0.0.1:0\"}\n"+
		"tls: {cert_file: %q, key_file: %q}\n"+
		"bans: {allow: [\"127.0.0.1\"]}\nshutdown: {drain: 1s}\n"+
		"topics:\n  - {match: \"news\", subscribe: token}\n", certFile, keyFile)
}

// servedSerial is the serial of the certificate a new TLS client of addr
// is served, verified against ca.
func servedSerial(t *testing.T, ca *testCA, addr string) string {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, ca.clientConfig())
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer c.Close()
	return fmt.Sprintf("%x", c.ConnectionState().PeerCertificates[0].SerialNumber)
}

// verifyTrail stops s and checks `audit verify` exits 0 on its trail.
func verifyTrail(t *testing.T, s *server) {
	t.Helper()
	s.stop()
	if out, code := audVerify(t, s.data); code != 0 {
		t.Fatalf("audit verify: exit %d\n%s", code, out)
	}
}

// TestTLSPythonClientAndCertReload: python3-websockets over wss://
// (trusting the test CA) subscribes with a token and receives a
// publication; a certificate renewed in place and SIGHUP serve the new
// serial to a new client while the first connection stays up and keeps
// receiving; a renewal that does not load is config_reload_failed and the
// certificate in use stays; plain HTTP on the TLS port gets the 400 JSON
// tls_handshake and a conn_rejected line; the trail verifies.
func TestTLSPythonClientAndCertReload(t *testing.T) {
	requireClient(t, "python")
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	certFile, keyFile := filepath.Join(dir, "wss.crt"), filepath.Join(dir, "wss.key")
	ca.leaf(t, 0x1001, certFile, keyFile)
	s := startTLSServer(t, tlsBaseConfig(certFile, keyFile))
	if got := servedSerial(t, ca, s.wsAddr); got != "1001" {
		t.Fatalf("serial %s, want 1001", got)
	}

	tokA := s.token("alice", "news")
	a := startStepClient(t, "python A", pythonBinary, "clients/wss_client.py", s.wsURL, ca.pemFile, "news", "alice", tokA, "15000")
	if m := a.next("open"); m["protocol"] != "portcullis.v1" || m["serial"] != "1001" {
		t.Fatalf("python A opened %v", m)
	}
	if m := a.next("subscribed"); fmt.Sprint(m["msg"].(map[string]any)["op"]) != "subscribed" {
		t.Fatalf("python A: %v", m)
	}
	if n := s.publish("news", `{"headline":"over wss"}`); n != 1 {
		t.Fatalf("delivered %d, want 1", n)
	}
	if m := a.next("event"); !strings.Contains(fmt.Sprint(m["msg"]), "over wss") {
		t.Fatalf("python A event %v", m)
	}
	e := s.waitAudit(map[string]any{"event": "conn_open"})
	if e["ip"] != "127.0.0.1" {
		t.Fatalf("conn_open ip %v, want the client's 127.0.0.1", e["ip"])
	}

	// Renewed in place, then SIGHUP.
	ca.leaf(t, 0x1002, certFile, keyFile)
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r := s.waitAudit(map[string]any{"event": "config_reload", "actor": "SIGHUP"})
	if d := fmt.Sprint(r["detail"]); !strings.Contains(d, "wss:// certificate serial 1002") {
		t.Fatalf("config_reload detail %q does not name the new certificate", d)
	}
	if got := servedSerial(t, ca, s.wsAddr); got != "1002" {
		t.Fatalf("after SIGHUP a new client is served serial %s, want 1002", got)
	}
	tokB := s.token("bob", "news")
	b := startStepClient(t, "python B", pythonBinary, "clients/wss_client.py", s.wsURL, ca.pemFile, "news", "bob", tokB, "15000")
	if m := b.next("open"); m["serial"] != "1002" {
		t.Fatalf("python B opened %v, want serial 1002", m)
	}
	b.next("subscribed")
	a.send("again")
	if n := s.publish("news", `{"headline":"after the renewal"}`); n != 2 {
		t.Fatalf("delivered %d, want 2 (the connection from before the renewal too)", n)
	}
	if m := a.next("event2"); !strings.Contains(fmt.Sprint(m["msg"]), "after the renewal") {
		t.Fatalf("python A (from before the renewal): %v", m)
	}
	if m := b.next("event"); !strings.Contains(fmt.Sprint(m["msg"]), "after the renewal") {
		t.Fatalf("python B: %v", m)
	}
	if m := a.next("closed"); m["code"] != 1000.0 {
		t.Fatalf("python A closed %v", m)
	}
	a.wait()

	// A renewal whose key is another certificate's is refused.
	other := filepath.Join(dir, "other.key")
	ca.leaf(t, 0x1003, filepath.Join(dir, "other.crt"), other)
	kb, _ := os.ReadFile(other)
	if err := os.WriteFile(keyFile, kb, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	f := s.waitAudit(map[string]any{"event": "config_reload_failed", "actor": "SIGHUP"})
	if d := fmt.Sprint(f["detail"]); !strings.Contains(d, "tls.cert_file: "+certFile) || !strings.Contains(d, "do not load as a certificate") {
		t.Fatalf("config_reload_failed detail %q", d)
	}
	if got := servedSerial(t, ca, s.wsAddr); got != "1002" {
		t.Fatalf("after a refused renewal the serial is %s, want 1002", got)
	}

	// Plain HTTP on the TLS port.
	c := dialFrom(t, s, "127.0.0.1")
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\n\r\n", s.wsAddr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	var je map[string]any
	if resp.StatusCode != 400 || json.Unmarshal(body, &je) != nil || je["error"] != "tls_handshake" {
		t.Fatalf("plain HTTP on the TLS port: %d %s", resp.StatusCode, body)
	}
	rej := s.waitAudit(map[string]any{"event": "conn_rejected", "reason": "tls_handshake"})
	if rej["stage"] != "handshake" || rej["code"] != 400.0 || !strings.Contains(fmt.Sprint(rej["detail"]), "plain HTTP") {
		t.Fatalf("conn_rejected line %v", rej)
	}
	b.send("done") // B's event2 never comes: the stop closes it
	verifyTrail(t, s)
}

// TestTLSChromium: headless Chromium, trusting the gateway's certificate
// by its public key's SHA-256 only, opens wss:// from an https:// page of
// an allowed origin, subscribes with a token and receives a publication.
func TestTLSChromium(t *testing.T) {
	requireTool(t, "Chromium", hintChromium, chromiumBinary, "--version")
	requireTool(t, "playwright-core in e2e/node_modules", hintNodeWS, "node", "-e", "require('playwright-core')")
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	certFile, keyFile := filepath.Join(dir, "wss.crt"), filepath.Join(dir, "wss.key")
	_, spki := ca.leaf(t, 0x2001, certFile, keyFile)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, "<!doctype html><title>wss test</title>")
	}))
	web.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	web.StartTLS()
	t.Cleanup(web.Close)

	s := startTLSServer(t, tlsBaseConfig(certFile, keyFile)+fmt.Sprintf("origins: [%q]\n", web.URL))
	tok := s.token("carol", "news")
	c := startStepClient(t, "chromium", "node", "clients/wss_browser.js", web.URL+"/", s.wsURL, spki, "news", "carol", tok, "15000")
	m := c.next("open")
	if m["protocol"] != "portcullis.v1" || !strings.Contains(fmt.Sprint(m["welcome"]), "welcome") {
		t.Fatalf("chromium opened %v", m)
	}
	if m := c.next("subscribed"); !strings.Contains(fmt.Sprint(m["msg"]), "subscribed") {
		t.Fatalf("chromium: %v", m)
	}
	if n := s.publish("news", `{"headline":"to chromium"}`); n != 1 {
		t.Fatalf("delivered %d", n)
	}
	if m := c.next("event"); !strings.Contains(fmt.Sprint(m["msg"]), "to chromium") {
		t.Fatalf("chromium event %v", m)
	}
	if m := c.next("closed"); m["code"] != 1000.0 {
		t.Fatalf("chromium close %v", m)
	}
	c.wait()
	open := s.waitAudit(map[string]any{"event": "conn_open"})
	if open["ip"] != "127.0.0.1" {
		t.Fatalf("conn_open %v", open)
	}
	verifyTrail(t, s)
}

// TestTLSAdminAPI: admin.listen on every address with admin.tls is
// accepted by `config check` and served over HTTPS (a Go client trusting
// the test CA); plain HTTP there gets no API; POST /v1/reload over HTTPS
// re-reads the admin certificate; the trail verifies.
func TestTLSAdminAPI(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	certFile, keyFile := filepath.Join(dir, "wss.crt"), filepath.Join(dir, "wss.key")
	ca.leaf(t, 0x3001, certFile, keyFile)
	adminCert, adminKey := filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key")
	ca.leaf(t, 0x3101, adminCert, adminKey)
	port := freeFixedPort(t)
	yaml := fmt.Sprintf("listen: \"127.0.0.1:0\"\n"+
		"admin: {listen: \"0.0.0.0:%d\", tls: {cert_file: %q, key_file: %q}}\n"+
		"tls: {cert_file: %q, key_file: %q}\n"+
		"bans: {allow: [\"127.0.0.1\"]}\nshutdown: {drain: 1s}\n", port, adminCert, adminKey, certFile, keyFile)
	cfg := filepath.Join(dir, "portcullis.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := portcullis(t, nil, "config", "check", cfg); code != 0 {
		t.Fatalf("config check: exit %d\n%s%s", code, out, stderr)
	}
	s := startTLSServer(t, yaml)
	if !strings.HasPrefix(s.adminURL, "https://") || !strings.HasSuffix(s.adminURL, fmt.Sprintf(":%d", port)) {
		t.Fatalf("admin API on %s, want https:// on port %d", s.adminURL, port)
	}
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	hc := ca.httpClient()
	call := func(method, path string) (int, map[string]any, *tls.ConnectionState) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+s.key)
		req.Close = true // a new connection: a new handshake each time
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s over HTTPS: %v", method, path, err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out, resp.TLS
	}
	code, st, cs := call("GET", "/v1/stats")
	if code != 200 || st["loops"] == nil {
		t.Fatalf("GET /v1/stats over HTTPS: %d %v", code, st)
	}
	if got := cs.PeerCertificates[0].SerialNumber.Int64(); got != 0x3101 {
		t.Fatalf("admin serial %x", got)
	}
	// Plain HTTP gets no API answer.
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/v1/stats", port)); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatalf("plain HTTP on the admin TLS port answered 200: %s", b)
		}
	}
	// Renew the admin certificate in place; reload through the API.
	ca.leaf(t, 0x3102, adminCert, adminKey)
	if code, out, _ := call("POST", "/v1/reload"); code != 200 {
		t.Fatalf("POST /v1/reload: %d %v", code, out)
	}
	r := s.waitAudit(map[string]any{"event": "config_reload"})
	if d := fmt.Sprint(r["detail"]); !strings.Contains(d, "admin API certificate serial 3102") || !strings.Contains(d, "wss:// certificate serial 3001") {
		t.Fatalf("config_reload detail %q", d)
	}
	if _, _, cs := call("GET", "/v1/stats"); cs.PeerCertificates[0].SerialNumber.Int64() != 0x3102 {
		t.Fatalf("after the reload the admin API serves serial %x, want 3102", cs.PeerCertificates[0].SerialNumber)
	}
	verifyTrail(t, s)
}

// freeFixedPort returns a port free on every address, below the kernel's
// ephemeral range (32768-60999 here), so that no other test's ":0" bind can
// take it between this check and the gateway's own bind.
func freeFixedPort(t *testing.T) int {
	t.Helper()
	for p := 20000 + mathrand.IntN(10000); ; p++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", p))
		if err == nil {
			ln.Close()
			return p
		}
		if p > 32000 {
			t.Fatal("no free port below the ephemeral range")
		}
	}
}
