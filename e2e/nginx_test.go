package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// The nginx recipe of docs/DEPLOY.md, run: the real nginx from the
// distribution in front of the gateway, with the server block taken from
// the document itself.

const (
	nginxBinary = "/usr/sbin/nginx"
	hintNginx   = "apt-get install nginx"
)

// nginxRecipe is the ```nginx block of docs/DEPLOY.md with the example's
// port, name, certificate and upstream replaced; it fails the test when
// one of them is no longer in the document.
func nginxRecipe(t *testing.T, listen, cert, key, upstream string) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/DEPLOY.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```nginx\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/DEPLOY.md has no ```nginx block")
	}
	block := string(m[1])
	for _, r := range [][2]string{
		{"listen 443 ssl;", "listen " + listen + " ssl;"},
		{"server_name ws.example.com;", "server_name localhost;"},
		{"/etc/ssl/certs/ws.example.com.pem;", cert + ";"},
		{"/etc/ssl/private/ws.example.com.key;", key + ";"},
		{"server 127.0.0.1:8080;", "server " + upstream + ";"},
	} {
		if strings.Count(block, r[0]) != 1 {
			t.Fatalf("the nginx block of docs/DEPLOY.md no longer has %q once:\n%s", r[0], block)
		}
		block = strings.Replace(block, r[0], r[1], 1)
	}
	return block
}

// nginxCert writes a test CA and a certificate for localhost signed by it
// into dir and returns the CA pool and the certificate's and key's paths.
func nginxCert(t *testing.T, dir string) (*x509.CertPool, string, string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "portcullis e2e CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "localhost.pem"), filepath.Join(dir, "localhost.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, certFile, keyFile
}

// nginxFreePort is a loopback TCP port nothing listens on right now.
func nginxFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startNginx runs nginx in the foreground with its prefix, config, pid
// file, logs and temp paths in dir, serving the recipe on 127.0.0.1:port
// in front of upstream, until the test ends.
func startNginx(t *testing.T, dir string, port int, cert, key, upstream string) {
	t.Helper()
	var user string
	if os.Geteuid() == 0 {
		// nginx started by root runs its workers as this user; it reads
		// nothing in dir (the master opens the certificate and the logs).
		user = "user nobody nogroup;\n"
	}
	tmp := filepath.Join(dir, "tmp")
	conf := fmt.Sprintf(`%sworker_processes 1;
pid %s;
error_log %s info;
events { worker_connections 128; }
http {
access_log %s;
client_body_temp_path %s/body;
proxy_temp_path %s/proxy;
fastcgi_temp_path %s/fastcgi;
uwsgi_temp_path %s/uwsgi;
scgi_temp_path %s/scgi;
%s
}
`, user, filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"), filepath.Join(dir, "access.log"),
		tmp, tmp, tmp, tmp, tmp, nginxRecipe(t, fmt.Sprintf("127.0.0.1:%d", port), cert, key, upstream))
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	errLog := filepath.Join(dir, "error.log")
	if out, err := exec.Command(nginxBinary, "-t", "-p", dir, "-c", confFile, "-e", errLog).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s\n%s", err, out, conf)
	}
	cmd := exec.Command(nginxBinary, "-p", dir, "-c", confFile, "-e", errLog, "-g", "daemon off;")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		// SIGQUIT: nginx's graceful stop; it closes the proxied
		// WebSockets, which the gateway sees as clients leaving.
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(errLog)
			t.Logf("nginx output:\n%s\nerror.log:\n%s", out.String(), b)
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	checkFor(t, 10*time.Second, func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("nginx exited: %v\n%s", err, out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return fmt.Errorf("nginx not listening on %s yet: %w", addr, err)
		}
		return c.Close()
	})
}

// nginxDial opens a TCP connection to nginx from the loopback address ip.
func nginxDial(ctx context.Context, ip string, port int) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
}

// nginxClient is a WebSocket client (gobwas/ws's dialer) connected through
// nginx over TLS.
type nginxClient struct {
	t  *testing.T
	c  net.Conn
	rw io.ReadWriter
}

// dialThroughNginx connects a wss:// client from ip to nginx on port with
// the given Origin, checking the certificate against pool.
func dialThroughNginx(t *testing.T, pool *x509.CertPool, ip string, port int, origin string) *nginxClient {
	t.Helper()
	d := ws.Dialer{
		NetDial:   func(ctx context.Context, _, _ string) (net.Conn, error) { return nginxDial(ctx, ip, port) },
		TLSConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12},
		Protocols: []string{"portcullis.v1"},
		Header:    ws.HandshakeHeaderHTTP(http.Header{"Origin": []string{origin}}),
		Timeout:   10 * time.Second,
	}
	c, br, hs, err := d.Dial(context.Background(), fmt.Sprintf("wss://localhost:%d/ws", port))
	if err != nil {
		t.Fatalf("wss through nginx from %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	if hs.Protocol != "portcullis.v1" {
		t.Fatalf("negotiated %q, want portcullis.v1", hs.Protocol)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	nc := &nginxClient{t: t, c: c, rw: c}
	if br != nil {
		nc.rw = struct {
			io.Reader
			io.Writer
		}{io.MultiReader(br, c), c}
	}
	if m := nc.read(); m["op"] != "welcome" {
		t.Fatalf("first message through nginx: %v", m)
	}
	return nc
}

// read returns the next JSON text message (control frames are answered
// by wsutil).
func (nc *nginxClient) read() map[string]any {
	nc.t.Helper()
	p, err := wsutil.ReadServerText(nc.rw)
	if err != nil {
		nc.t.Fatalf("read through nginx: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		nc.t.Fatalf("message %q: %v", p, err)
	}
	return m
}

func (nc *nginxClient) send(v any) {
	nc.t.Helper()
	b, _ := json.Marshal(v)
	if err := wsutil.WriteClientText(nc.rw, b); err != nil {
		nc.t.Fatalf("write through nginx: %v", err)
	}
}

// upgradeThroughNginx sends an upgrade request over TLS from ip and
// returns the answer nginx relays, for the refusals a WebSocket library
// reports only as an error.
func upgradeThroughNginx(t *testing.T, pool *x509.CertPool, ip string, port int, origin string) (int, map[string]any) {
	t.Helper()
	raw, err := nginxDial(context.Background(), ip, port)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(20 * time.Second))
	c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: localhost:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Protocol: portcullis.v1\r\nOrigin: %s\r\n\r\n", port, origin)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("upgrade through nginx from %s: %v", ip, err)
	}
	defer resp.Body.Close()
	var body map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body
}

// The recipe of docs/DEPLOY.md: wss:// ends at nginx, which forwards to
// the gateway on loopback with X-Forwarded-For. The gateway trusts nginx
// (127.0.0.1) and counts every address (bans.allow: []), so the client
// (127.0.0.7 → nginx) is who the audit trail names and who a bad Origin
// strikes: the attacker (127.0.0.17) is banned, nginx and the client are
// not.
func TestNginxRecipe(t *testing.T) {
	requireTool(t, "nginx", hintNginx, nginxBinary, "-v")
	const client, attacker, nginxIP = "127.0.0.7", "127.0.0.17", "127.0.0.1"
	dir := t.TempDir()
	port := nginxFreePort(t)
	page := fmt.Sprintf("https://localhost:%d", port)
	s := startServer(t, fmt.Sprintf("trusted_proxies: [%q]\norigins: [%q]\nbans: {allow: [], maxretry: 3}\n", nginxIP, page))
	pool, cert, key := nginxCert(t, dir)
	startNginx(t, dir, port, cert, key, s.wsAddr)

	nc := dialThroughNginx(t, pool, client, port, page)
	nc.send(subMsg(1, "news", "alice", s.token("alice", "news")))
	if m := nc.read(); m["op"] != "subscribed" || m["id"] != 1.0 {
		t.Fatalf("subscribe through nginx: %v", m)
	}
	if n := s.publish("news", `{"n":1}`); n != 1 {
		t.Fatalf("publication delivered to %d, want 1", n)
	}
	if m := nc.read(); m["op"] != "event" || m["topic"] != "news" || fmt.Sprint(m["data"]) != "map[n:1]" {
		t.Fatalf("publication through nginx: %v", m)
	}
	open := s.waitAudit(map[string]any{"event": "conn_open", "ip": client})
	if open["peer_ip"] != nginxIP || open["counted_prefix"] != client+"/32" || open["proto"] != "portcullis.v1" {
		t.Fatalf("conn_open through nginx: %v, want ip %s, peer_ip %s", open, client, nginxIP)
	}

	// A page the config does not name, through nginx: the attacker is
	// refused 403 bad_origin each time and banned at bans.maxretry.
	for i := 0; i < 3; i++ {
		if code, body := upgradeThroughNginx(t, pool, attacker, port, "https://evil.example"); code != http.StatusForbidden || body["error"] != "bad_origin" {
			t.Fatalf("bad Origin through nginx, attempt %d: %d %v", i+1, code, body)
		}
	}
	if code, body := upgradeThroughNginx(t, pool, attacker, port, page); code != http.StatusForbidden || body["error"] != "banned" {
		t.Fatalf("the banned attacker through nginx: %d %v, want 403 banned", code, body)
	}
	got := s.waitAll(
		map[string]any{"event": "conn_rejected", "reason": "bad_origin", "ip": attacker},
		map[string]any{"event": "ban", "counted_prefix": attacker + "/32"},
		map[string]any{"event": "conn_rejected", "reason": "banned", "ip": attacker},
	)
	if e := got[0]; e["peer_ip"] != nginxIP || e["counted_prefix"] != attacker+"/32" || e["code"] != 403.0 {
		t.Fatalf("bad_origin through nginx: %v", e)
	}
	if e := got[1]; e["ip"] != attacker || e["actor"] != "auto" || e["reason"] != "bad_origin" {
		t.Fatalf("ban: %v", e)
	}
	if b := s.bans(); len(b) != 1 || b[attacker+"/32"] == nil {
		t.Fatalf("bans %v, want the attacker's alone (not nginx's %s)", b, nginxIP)
	}
	// nginx and its other clients are untouched: the client still gets
	// publications, and a new one gets in.
	s.publish("news", `{"n":2}`)
	if m := nc.read(); fmt.Sprint(m["data"]) != "map[n:2]" {
		t.Fatalf("second publication through nginx: %v", m)
	}
	dialThroughNginx(t, pool, "127.0.0.8", port, page)
	s.waitAudit(map[string]any{"event": "conn_open", "ip": "127.0.0.8", "peer_ip": nginxIP})
}
