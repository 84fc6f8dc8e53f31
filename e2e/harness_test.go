// Package e2e drives the built portcullis binary over loopback with clients
// nobody on the team wrote (Node's ws, python3-websockets) and with raw
// sockets for the protocol violations those clients cannot produce.
package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce  sync.Once
	binaryPath string
	buildErr   error
	buildDir   string
)

// gwBinary returns the portcullis binary, building it on first use, so
// that the tests that need no binary (TestImportRules) run while another
// package is mid-edit.
func gwBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "portcullis-e2e")
		if buildErr != nil {
			return
		}
		binaryPath = filepath.Join(buildDir, "portcullis")
		out, err := exec.Command("go", "build", "-o", binaryPath, "../cmd/portcullis").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ../cmd/portcullis: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binaryPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// requireTool checks that an external client a test drives is installed,
// by running check (a command that exits 0 when it is). When it is
// missing, the test skips with the install hint, or fails when the
// environment variable CI is set: CI installs every client (.ci/run), so
// there a missing one is a broken machine, never a reason to test less.
func requireTool(t *testing.T, what, hint string, check ...string) {
	t.Helper()
	out, err := exec.Command(check[0], check[1:]...).CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("%s is missing (%v: %v)\n%s\nrun: %s", what, check, err, bytes.TrimSpace(out), hint)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Install hints for the external clients, as .ci/run installs them.
const (
	hintNodeWS     = "cd e2e && npm ci (needs nodejs and npm: apt-get install nodejs npm)"
	hintPyWS       = "apt-get install python3-websockets"
	hintAiosmtpd   = "apt-get install python3-aiosmtpd"
	hintAutobahn   = "apt-get install python3-autobahn"
	hintChromium   = "apt-get install chromium; cd e2e && npm ci"
	nodeWSCheck    = "require('ws')"
	pythonBinary   = "/usr/bin/python3"
	chromiumBinary = "/usr/bin/chromium"
)

// server is one running gateway process.
type server struct {
	t        testing.TB
	cmd      *exec.Cmd
	data     string
	wsURL    string
	wsAddr   string
	adminURL string
	key      string
	stderr   *syncBuffer
	done     chan error
	exited   atomic.Bool // set once the process has been waited for (read by cleanups without racing Wait)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer runs `portcullis serve` with extra config YAML (listeners are
// always on loopback with kernel-chosen ports).
func startServer(t testing.TB, extra string) *server {
	t.Helper()
	return startServerIn(t, extra, filepath.Join(t.TempDir(), "d"))
}

// startServerIn is startServer on a data directory the caller chose, so a
// test can stop the gateway and start it again on the same state. The
// config file lives in a fresh temp dir; dataDir is used as it is.
func startServerIn(t testing.TB, extra, dataDir string) *server {
	t.Helper()
	// The clients nobody on the team wrote connect from 127.0.0.1, which
	// is allow-listed so that the bad inputs they send one after another
	// do not ban it; attack tests connect from other 127.x addresses.
	// The default bans.allow is all of loopback, which would allow-list
	// those too: a test that sets bans: names its allow list (allow: []
	// to count every loopback address).
	yaml := "listen: \"127.0.0.1:0\"\nadmin: {listen: \"127.0.0.1:0\"}\n" + extra
	if !strings.Contains(extra, "bans:") {
		yaml += "bans: {allow: [\"127.0.0.1\"]}\n"
	}
	// A stop drains the clients over shutdown.drain (30 s by default);
	// tests that do not test the drain stop within a second.
	if !strings.Contains(extra, "shutdown:") {
		yaml += "shutdown: {drain: 1s}\n"
	}
	return launch(t, yaml, dataDir, "ws")
}

var listenLine = regexp.MustCompile(`listening on (wss?)://(\S+?)(/\S*) \(WebSocket\), admin API on (\S+)`)

// launch runs `portcullis serve` with the whole config yaml on dataDir and
// waits for its start-up line, which must announce scheme (ws or wss).
func launch(t testing.TB, yaml, dataDir, scheme string) *server {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "portcullis.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, data: dataDir, stderr: &syncBuffer{}, done: make(chan error, 1)}
	s.cmd = exec.Command(gwBinary(t), "serve", "--config", cfg, "--data", s.data)
	pr, pw := io.Pipe()
	s.cmd.Stderr = io.MultiWriter(pw, s.stderr)
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { err := s.cmd.Wait(); s.exited.Store(true); s.done <- err; pw.Close() }()
	t.Cleanup(func() {
		if !s.exited.Load() {
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("server (%s) stderr:\n%s", dataDir, s.stderr.String())
		}
	})
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := listenLine.FindStringSubmatch(sc.Text()); m != nil {
				found <- m
			}
		}
	}()
	select {
	case m := <-found:
		if m[1] != scheme {
			t.Fatalf("the gateway listens on %s://, want %s://", m[1], scheme)
		}
		s.wsAddr, s.wsURL, s.adminURL = m[2], scheme+"://"+m[2]+m[3], m[4]
	case <-time.After(20 * time.Second):
		t.Fatalf("server did not start: %s", s.stderr.String())
	}
	key, err := os.ReadFile(filepath.Join(s.data, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	s.key = strings.TrimSpace(string(key))
	return s
}

// api calls the admin API and decodes the JSON reply.
func (s *server) api(method, path, body string) (int, map[string]any) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.adminURL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (s *server) token(user string, topics ...string) string {
	s.t.Helper()
	b, _ := json.Marshal(map[string]any{"userId": user, "topics": topics})
	code, out := s.api("POST", "/v1/tokens", string(b))
	if code != 201 {
		s.t.Fatalf("mint token: %d %v", code, out)
	}
	return out["token"].(string)
}

func (s *server) publish(topic, data string) int {
	s.t.Helper()
	code, out := s.api("POST", "/v1/publish", fmt.Sprintf(`{"topic":%q,"data":%s}`, topic, data))
	if code != 200 {
		s.t.Fatalf("publish: %d %v", code, out)
	}
	return int(out["delivered"].(float64))
}

// auditLines returns every audit event written so far.
func (s *server) auditLines() []map[string]any {
	b, _ := os.ReadFile(filepath.Join(s.data, "audit", "audit.log"))
	var out []map[string]any
	for _, l := range bytes.Split(b, []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(l, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// waitAudit polls the trail for an event whose fields include want.
func (s *server) waitAudit(want map[string]any) map[string]any {
	s.t.Helper()
	var found map[string]any
	checkFor(s.t, 10*time.Second, func() error {
		for _, e := range s.auditLines() {
			if matches(e, want) {
				found = e
				return nil
			}
		}
		return fmt.Errorf("no audit event with %v", want)
	})
	return found
}

func matches(e, want map[string]any) bool {
	for k, v := range want {
		if fmt.Sprint(e[k]) != fmt.Sprint(v) {
			return false
		}
	}
	return true
}

// checkFor polls f until it returns nil or timeout passes.
func checkFor(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal(err)
}

// clientEvent is one line printed by a client script.
type clientEvent struct {
	Open    *string        `json:"open"`
	Recv    map[string]any `json:"recv"`
	Close   *int           `json:"close"`
	Reason  string         `json:"reason"`
	HTTP    int            `json:"http"`
	Timeout bool           `json:"timeout"`
	Error   string         `json:"error"`
}

// requireClient is requireTool for the client script of kind ("node":
// Node's ws in e2e/node_modules, "python": python3-websockets). A test
// that runs the client on another goroutine calls it first, on its own.
func requireClient(t *testing.T, kind string) {
	t.Helper()
	switch kind {
	case "node":
		requireTool(t, "node's ws client", hintNodeWS, "node", "-e", nodeWSCheck)
	case "python":
		requireTool(t, "python3-websockets", hintPyWS, pythonBinary, "-c", "import websockets")
	default:
		t.Fatalf("unknown client kind %q", kind)
	}
}

// runClient runs a client script ("node" or "python") to completion.
func runClient(t *testing.T, kind, url, proto, origin string, msgs []any, expect int, timeout time.Duration) []clientEvent {
	t.Helper()
	mj, _ := json.Marshal(msgs)
	args := []string{url, proto, origin, string(mj), fmt.Sprint(expect), fmt.Sprint(timeout.Milliseconds())}
	requireClient(t, kind)
	var cmd *exec.Cmd
	switch kind {
	case "node":
		cmd = exec.Command("node", append([]string{"clients/ws_client.js"}, args...)...)
	case "python":
		cmd = exec.Command(pythonBinary, append([]string{"clients/ws_client.py"}, args...)...)
	}
	outb, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("%s client: %v\n%s\n%s", kind, err, outb, stderr)
	}
	var evs []clientEvent
	for _, l := range bytes.Split(outb, []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var e clientEvent
		if err := json.Unmarshal(l, &e); err != nil {
			t.Fatalf("client output %q: %v", l, err)
		}
		evs = append(evs, e)
	}
	return evs
}

func received(evs []clientEvent) []map[string]any {
	var out []map[string]any
	for _, e := range evs {
		if e.Recv != nil {
			out = append(out, e.Recv)
		}
	}
	return out
}

func closeCode(evs []clientEvent) int {
	for _, e := range evs {
		if e.Close != nil {
			return *e.Close
		}
	}
	return -1
}

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

// readData returns the payload of the next data frame, skipping pings and
// pongs; it fails the test on a close frame or a socket error.
func (rc *rawConn) readData() []byte {
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
		return p
	}
}

// readMsg returns the next JSON text message (see readData).
func (rc *rawConn) readMsg() map[string]any {
	rc.t.Helper()
	p := rc.readData()
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		rc.t.Fatalf("frame %q: %v", p, err)
	}
	return m
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

// kill9 kills the gateway with SIGKILL and waits for it to be gone.
func (s *server) kill9() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		s.t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.t.Fatal("server did not die of SIGKILL")
	}
}

// stats returns GET /v1/stats.
func (s *server) stats() map[string]any {
	s.t.Helper()
	code, out := s.api("GET", "/v1/stats", "")
	if code != 200 {
		s.t.Fatalf("GET /v1/stats: %d %v", code, out)
	}
	return out
}

// statsOf returns the object name of GET /v1/stats ("audit", "pipeline").
func (s *server) statsOf(name string) map[string]any {
	s.t.Helper()
	st := s.stats()
	m, _ := st[name].(map[string]any)
	if m == nil {
		s.t.Fatalf("GET /v1/stats has no %s object: %v", name, st)
	}
	return m
}

// statNumber is the top-level number key of GET /v1/stats.
func (s *server) statNumber(key string) float64 {
	s.t.Helper()
	n, ok := s.stats()[key].(float64)
	if !ok {
		s.t.Fatalf("GET /v1/stats has no number %s", key)
	}
	return n
}

// strikes is the gateway's strike count (GET /v1/stats pipeline.strikes).
func (s *server) strikes() int {
	n, _ := s.statsOf("pipeline")["strikes"].(float64)
	return int(n)
}

// num is m[k] as a count (0 when absent).
func num(m map[string]any, k string) uint64 {
	f, _ := m[k].(float64)
	return uint64(f)
}

// wrongToken is a well-formed token the store never minted.
func wrongToken(i int) string { return fmt.Sprintf("AAAAAAAAAAAAAAAAAAAAAA%010d", i) }

// rawConn is a hand-rolled client for what real clients refuse to send.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// frameBytes is one client frame; mask it as a client must, or not to
// provoke the server.
func frameBytes(fin bool, op byte, payload []byte, mask bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	mb := byte(0)
	if mask {
		mb = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		out = append(out, mb|byte(n))
	case n <= 0xffff:
		out = append(out, mb|126, byte(n>>8), byte(n))
	default:
		out = append(out, mb|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !mask {
		return append(out, payload...)
	}
	key := []byte{7, 1, 9, 3}
	out = append(out, key...)
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
}

// maskedFrame is one masked client frame.
func maskedFrame(fin bool, op byte, payload []byte) []byte {
	return frameBytes(fin, op, payload, true)
}

// fragmented is payload as masked fragments of at most size bytes; with
// finish false the last fragment does not end the message.
func fragmented(payload []byte, size int, finish bool) []byte {
	var out []byte
	for i := 0; i < len(payload); i += size {
		op := byte(1)
		if i > 0 {
			op = 0
		}
		end := min(i+size, len(payload))
		out = append(out, maskedFrame(finish && end == len(payload), op, payload[i:end])...)
	}
	return out
}

// frame writes one frame.
func (rc *rawConn) frame(fin bool, op byte, payload []byte, mask bool) {
	_, _ = rc.c.Write(frameBytes(fin, op, payload, mask))
}

// sendText writes msg as one masked text message, fragmented into frames
// of at most frag bytes (0: one frame).
func (rc *rawConn) sendText(msg []byte, frag int) {
	if frag <= 0 || len(msg) <= frag {
		rc.frame(true, 1, msg, true)
		return
	}
	_, _ = rc.c.Write(fragmented(msg, frag, true))
}

// read returns the next server frame (servers never mask); it fails the
// test on a socket error.
func (rc *rawConn) read() (byte, []byte) {
	op, p, err := rc.next()
	if err != nil {
		rc.t.Fatalf("read frame: %v", err)
	}
	return op, p
}

// expectClose reads frames until a close frame and returns its code.
func (rc *rawConn) expectClose() int {
	for {
		op, p := rc.read()
		if op == 8 {
			return closeCodeOf(p)
		}
	}
}

// closeCode reads until the close frame and returns its code.
func (rc *rawConn) closeCode() int {
	rc.t.Helper()
	_, code := rc.drain()
	return code
}

// pongsAndClose reads until the close frame or EOF: the pongs seen and the
// close code (-1: none).
func (rc *rawConn) pongsAndClose() (pongs, code int) {
	for {
		op, p, err := rc.next()
		if err != nil {
			return pongs, -1
		}
		switch op {
		case 10:
			pongs++
		case 8:
			return pongs, closeCodeOf(p)
		}
	}
}

// dialRaw upgrades a portcullis.v1 connection from 127.0.0.1 (allow-listed
// by default) and reads the welcome.
func dialRaw(t *testing.T, s *server) *rawConn {
	t.Helper()
	return upgradeFrom(t, s, "127.0.0.1")
}

// procFDs counts the open descriptors of process pid.
func procFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// procCPU is the user plus system CPU time process pid has used.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line, in clock ticks (100 a second).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// rssKB is the resident set size of process pid, in KiB.
func rssKB(t *testing.T, pid int) int {
	b, err := os.ReadFile(filepath.Join("/proc", fmt.Sprint(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			var n int
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:")), "%d", &n)
			return n
		}
	}
	return 0
}

// The audit trail on disk, and connections to fill it.

// audChurnConfig lets the allow-listed 127.0.0.1 open connections as fast
// as the tests need to fill the trail.
const audChurnConfig = "limits: {conn_rate: {rate: 100000, burst: 100000}}\n"

// audOneConn opens a WebSocket, reads the welcome and closes it cleanly:
// a conn_open and a conn_close line in the trail.
func audOneConn(s *server) error {
	addr := s.wsAddr
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, upgradeRequest(s)); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.Contains(status, " 101 ") {
		return fmt.Errorf("handshake: %q", status)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if l == "\r\n" {
			break
		}
	}
	if _, _, err := (&rawConn{c: c, r: br}).next(); err != nil { // the welcome
		return err
	}
	if _, err := c.Write(maskedFrame(true, 8, []byte{0x03, 0xe8})); err != nil {
		return err
	}
	// Wait for the server's close (or EOF) so conn_close is certain.
	_, _ = io.Copy(io.Discard, br)
	return nil
}

// audChurn opens and closes n connections with conc workers; it returns
// how many succeeded. stop (may be nil) ends it early.
func audChurn(s *server, n, conc int, stop <-chan struct{}) (ok int64, firstErr error) {
	var wg sync.WaitGroup
	var next, good atomic.Int64
	var once sync.Once
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n <= 0 || next.Add(1) <= int64(n) {
				if stop != nil {
					select {
					case <-stop:
						return
					default:
					}
				}
				if err := audOneConn(s); err != nil {
					once.Do(func() { firstErr = err })
					if stop == nil {
						return
					}
					continue
				}
				good.Add(1)
			}
		}()
	}
	wg.Wait()
	return good.Load(), firstErr
}

// audFile is one file of a trail with its content (inflated if gzip'd).
type audFile struct {
	path    string
	name    string
	seq     uint64 // first seq from the name; 0 for audit.log
	content []byte
}

// audTrail reads the trail in dir in order: rotated files by first seq,
// then audit.log.
func audTrail(t *testing.T, dir string) []audFile {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []audFile
	var active *audFile
	for _, e := range ents {
		n := e.Name()
		if n == "audit.log" {
			active = &audFile{path: filepath.Join(dir, n), name: n, content: audRead(t, filepath.Join(dir, n))}
			continue
		}
		if !strings.HasPrefix(n, "audit-") {
			continue
		}
		base := strings.TrimSuffix(strings.TrimSuffix(n, ".gz"), ".log")
		var seq uint64
		if i := strings.LastIndexByte(base, '-'); i >= 0 {
			fmt.Sscan(base[i+1:], &seq)
		}
		out = append(out, audFile{path: filepath.Join(dir, n), name: n, seq: seq, content: audRead(t, filepath.Join(dir, n))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	if active != nil {
		out = append(out, *active)
	}
	return out
}

// audRead reads a file, inflating it if it is gzip'd.
func audRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return b
}

// audLines splits content into lines; the last element is a trailing
// partial line (empty when the content ends with a newline).
func audLines(b []byte) (lines [][]byte, tail []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return lines, b
		}
		lines = append(lines, b[:i])
		b = b[i+1:]
	}
	return lines, nil
}

// audEvents parses every complete line of every file of the trail in dir.
func audEvents(t *testing.T, dir string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, f := range audTrail(t, dir) {
		lines, _ := audLines(f.content)
		for _, l := range lines {
			var m map[string]any
			if json.Unmarshal(l, &m) == nil {
				out = append(out, m)
			}
		}
	}
	return out
}

// audVerify runs `portcullis audit verify --data data` and returns its
// combined output and exit code.
func audVerify(t *testing.T, data string, args ...string) (string, int) {
	t.Helper()
	out, errOut, code := portcullis(t, nil, append([]string{"audit", "verify", "--data", data}, args...)...)
	return out + errOut, code
}

// audCopyDir copies the directory tree src to a fresh directory.
func audCopyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// audWriteGz writes b gzip'd to path.
func audWriteGz(t *testing.T, path string, b []byte) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}
