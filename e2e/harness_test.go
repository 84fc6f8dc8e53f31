// Package e2e drives the built portcullis binary over loopback with clients
// nobody on the team wrote (Node's ws, python3-websockets) and with raw
// sockets for the protocol violations those clients cannot produce.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var gwBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "portcullis-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gwBinary = filepath.Join(dir, "portcullis")
	build := exec.Command("go", "build", "-o", gwBinary, "../cmd/portcullis")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build portcullis:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is one running gateway process.
type server struct {
	t        *testing.T
	cmd      *exec.Cmd
	data     string
	wsURL    string
	wsAddr   string
	adminURL string
	key      string
	stderr   *syncBuffer
	done     chan error
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

var listenLine = regexp.MustCompile(`listening on ws://(\S+?)(/\S*) \(WebSocket\), admin API on (\S+)`)

// startServer runs `portcullis serve` with extra config YAML (listeners are
// always on loopback with kernel-chosen ports).
func startServer(t *testing.T, extra string) *server {
	t.Helper()
	return startServerIn(t, extra, filepath.Join(t.TempDir(), "d"))
}

// startServerIn is startServer on a data directory the caller chose, so a
// test can stop the gateway and start it again on the same state. The
// config file lives in a fresh temp dir; dataDir is used as it is.
func startServerIn(t *testing.T, extra, dataDir string) *server {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "portcullis.yaml")
	// The clients nobody on the team wrote connect from 127.0.0.1, which
	// is allow-listed so that the bad inputs they send one after another
	// do not ban it; attack tests connect from other 127.x addresses.
	yaml := "listen: \"127.0.0.1:0\"\nadmin: {listen: \"127.0.0.1:0\"}\n" + extra
	if !strings.Contains(extra, "bans:") {
		yaml += "bans: {allow: [\"127.0.0.1\"]}\n"
	}
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, data: dataDir, stderr: &syncBuffer{}, done: make(chan error, 1)}
	s.cmd = exec.Command(gwBinary, "serve", "--config", cfg, "--data", s.data)
	pr, pw := io.Pipe()
	s.cmd.Stderr = io.MultiWriter(pw, s.stderr)
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
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
		s.wsAddr = m[1]
		s.wsURL = "ws://" + m[1] + m[2]
		s.adminURL = m[3]
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
func checkFor(t *testing.T, timeout time.Duration, f func() error) {
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

// runClient runs a client script ("node" or "python") to completion.
func runClient(t *testing.T, kind, url, proto, origin string, msgs []any, expect int, timeout time.Duration) []clientEvent {
	t.Helper()
	mj, _ := json.Marshal(msgs)
	args := []string{url, proto, origin, string(mj), fmt.Sprint(expect), fmt.Sprint(timeout.Milliseconds())}
	var cmd *exec.Cmd
	switch kind {
	case "node":
		cmd = exec.Command("node", append([]string{"clients/ws_client.js"}, args...)...)
	case "python":
		cmd = exec.Command("/usr/bin/python3", append([]string{"clients/ws_client.py"}, args...)...)
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
