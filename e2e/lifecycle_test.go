package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The process's life: one process per data dir and per port, no trace of
// a start that failed, a reload that applies or refuses as a whole, and a
// drain that closes clients gradually.

// lcServe runs `portcullis serve` with config yaml on dataDir until it
// exits (within 20 s) and returns its stderr and exit code: for starts
// that must fail.
func lcServe(t *testing.T, yaml, dataDir string) (string, int) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "portcullis.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gwBinary(t), "serve", "--config", cfg, "--data", dataDir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("serve did not exit: it started? stderr:\n%s", stderr.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stderr.String(), code
}

// lcSnapshot lists every file under dir with its size, mode and
// modification time.
func lcSnapshot(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		lines = append(lines, fmt.Sprintf("%s %d %v %d", rel, info.Size(), info.Mode(), info.ModTime().UnixNano()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// configPath is the config file the harness started s with.
func (s *server) configPath() string { return s.cmd.Args[3] }

// rewriteConfig replaces old with new in s's config file.
func (s *server) rewriteConfig(old, new string) {
	s.t.Helper()
	b, err := os.ReadFile(s.configPath())
	if err != nil {
		s.t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		s.t.Fatalf("config has no %q:\n%s", old, b)
	}
	if err := os.WriteFile(s.configPath(), bytes.Replace(b, []byte(old), []byte(new), 1), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// A second serve on a data dir in use exits 1 naming the owner's pid and
// touches no file: no line is appended to the trail, which still verifies.
func TestLifecycleSecondServeSameDataDir(t *testing.T) {
	data := filepath.Join(t.TempDir(), "d")
	s := startServerIn(t, "", data)
	dialRaw(t, s)
	s.waitAudit(map[string]any{"event": "conn_open"})
	before := lcSnapshot(t, data)

	out, code := lcServe(t, "listen: \"127.0.0.1:0\"\nadmin: {listen: \"127.0.0.1:0\"}\n", data)
	want := fmt.Sprintf("data dir %s is in use by pid %d", data, s.cmd.Process.Pid)
	if code != 1 || !strings.Contains(out, want) {
		t.Fatalf("second serve: exit %d, stderr %q; want exit 1 and %q", code, out, want)
	}
	if after := lcSnapshot(t, data); after != before {
		t.Fatalf("the second serve touched the data dir:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	s.stop()
	if out, code := audVerify(t, data); code != 0 {
		t.Fatalf("audit verify after a refused second serve: exit %d\n%s", code, out)
	}
}

// A second serve on the port of a running one (SO_REUSEPORT would let it
// bind and take part of the connections) exits 1 naming the first's pid,
// before it writes anything to its own data dir; the first keeps serving.
func TestLifecycleSecondServeSamePort(t *testing.T) {
	s := startServer(t, "")
	other := filepath.Join(t.TempDir(), "other")
	out, code := lcServe(t, fmt.Sprintf("listen: %q\nadmin: {listen: \"127.0.0.1:0\"}\n", s.wsAddr), other)
	_, port, _ := net.SplitHostPort(s.wsAddr)
	want := fmt.Sprintf("port %s is in use by another portcullis (pid %d)", port, s.cmd.Process.Pid)
	if code != 1 || !strings.Contains(out, want) {
		t.Fatalf("second serve: exit %d, stderr %q; want exit 1 and %q", code, out, want)
	}
	for _, f := range []string{"running", "audit", "state.db"} {
		if _, err := os.Stat(filepath.Join(other, f)); err == nil {
			t.Errorf("the refused serve created %s", f)
		}
	}
	for i := 0; i < 8; i++ { // every loop's listener still answers
		dialRaw(t, s)
	}
}

// A start that fails on a port in use leaves no run marker and no trail
// line; the next start reports no unclean stop.
func TestLifecycleFailedStartLeavesNoMarker(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	data := filepath.Join(t.TempDir(), "d")
	for _, yaml := range []string{
		fmt.Sprintf("listen: %q\nadmin: {listen: \"127.0.0.1:0\"}\n", taken.Addr()),
		fmt.Sprintf("listen: \"127.0.0.1:0\"\nadmin: {listen: %q}\n", taken.Addr()),
	} {
		out, code := lcServe(t, yaml, data)
		if code != 1 || !strings.Contains(out, "address already in use") {
			t.Fatalf("serve on a taken port: exit %d, stderr %q", code, out)
		}
		for _, f := range []string{"running", filepath.Join("audit", "audit.log")} {
			if _, err := os.Stat(filepath.Join(data, f)); err == nil {
				t.Fatalf("the failed start left %s", f)
			}
		}
	}
	s := startServerIn(t, "", data)
	s.waitAudit(map[string]any{"event": "admin", "actor": "serve"})
	if n := s.auditCount(map[string]any{"event": "unclean_stop"}); n != 0 {
		t.Fatalf("%d unclean_stop after a failed start", n)
	}
}

// SIGHUP applies a changed topic rule to new subscriptions, and audits
// the changed key; POST /v1/reload with nothing changed says so.
func TestLifecycleReloadTopicRule(t *testing.T) {
	s := startServer(t, "topics:\n  - {match: \"news\", subscribe: deny}\n")
	sub := func() string {
		rc := dialRaw(t, s)
		rc.sendJSON(map[string]any{"op": "subscribe", "id": 1, "topic": "news"})
		return fmt.Sprint(rc.readMsg()["op"])
	}
	if op := sub(); op == "subscribed" {
		t.Fatal("subscribed to a denied topic")
	}
	s.rewriteConfig("subscribe: deny", "subscribe: public")
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e := s.waitAudit(map[string]any{"event": "config_reload", "actor": "SIGHUP"})
	if e["detail"] != "changed: topics" {
		t.Fatalf("config_reload detail %q, want the changed key", e["detail"])
	}
	if op := sub(); op != "subscribed" {
		t.Fatalf("after the reload: %s, want subscribed", op)
	}
	code, body := s.api("POST", "/v1/reload", "")
	if code != 200 || fmt.Sprint(body["changed"]) != "[]" {
		t.Fatalf("POST /v1/reload with no change: %d %v", code, body)
	}
	s.waitAudit(map[string]any{"event": "config_reload", "detail": "no key changed"})
}

// A changed listen address is refused, naming the key, by SIGHUP and by
// the API; nothing of that reload applies, the gateway keeps serving.
func TestLifecycleReloadRefusesListenChange(t *testing.T) {
	s := startServer(t, "default: deny\n")
	s.rewriteConfig("listen: \"127.0.0.1:0\"", "listen: \"127.0.0.1:1\"")
	s.rewriteConfig("default: deny", "default: public")
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e := s.waitAudit(map[string]any{"event": "config_reload_failed", "actor": "SIGHUP"})
	if d := fmt.Sprint(e["detail"]); !strings.HasPrefix(d, `listen ("127.0.0.1:0" to "127.0.0.1:1") changed, which needs a restart`) {
		t.Fatalf("config_reload_failed detail %q", d)
	}
	code, body := s.api("POST", "/v1/reload", "")
	if code != http.StatusConflict || body["error"] != "needs_restart" || body["key"] != "listen" {
		t.Fatalf("POST /v1/reload: %d %v, want 409 needs_restart naming listen", code, body)
	}
	s.waitAudit(map[string]any{"event": "config_reload_failed", "actor": "api@127.0.0.1"})
	// default: public was not applied either.
	rc := dialRaw(t, s)
	rc.sendJSON(map[string]any{"op": "subscribe", "id": 1, "topic": "anything"})
	if m := rc.readMsg(); m["op"] == "subscribed" {
		t.Fatalf("a key of the refused reload was applied: %v", m)
	}
	// A file that does not load is refused with its key.
	s.rewriteConfig("listen: \"127.0.0.1:1\"", "listen: \"127.0.0.1:0\"\nlimits: {msg_rate: {rate: -1}}")
	code, body = s.api("POST", "/v1/reload", "")
	if code != http.StatusUnprocessableEntity || body["error"] != "config_invalid" || body["key"] != "limits.msg_rate.rate" {
		t.Fatalf("POST /v1/reload of a bad file: %d %v", code, body)
	}
}

// SIGTERM drains: the admin API says not ready, the clients all get 1001,
// spread over the window rather than all at once, and the process exits 0.
func TestLifecycleDrain(t *testing.T) {
	const n = 20
	const window = 3 * time.Second
	s := startServer(t, fmt.Sprintf("shutdown: {drain: %s}\n", window))
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = dialRaw(t, s)
	}
	var mu sync.Mutex
	var at []time.Duration
	var codes []int
	var wg sync.WaitGroup
	start := time.Now()
	for _, rc := range conns {
		wg.Add(1)
		go func(rc *rawConn) {
			defer wg.Done()
			_ = rc.c.SetDeadline(time.Now().Add(window + 15*time.Second))
			code := -1
			for {
				op, p, err := rc.next()
				if err != nil {
					break
				}
				if op == 8 {
					code = closeCodeOf(p)
					break
				}
			}
			mu.Lock()
			at = append(at, time.Since(start))
			codes = append(codes, code)
			mu.Unlock()
		}(rc)
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	s.waitAudit(map[string]any{"event": "drain_started", "count": n})
	if code, body := s.api("GET", "/readyz", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("admin /readyz while draining: %d %v, want 503", code, body)
	}
	wg.Wait()
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("exit after the drain: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit after the drain")
	}
	early := 0
	for i, c := range codes {
		if c != 1001 {
			t.Errorf("client closed with %d, want 1001", c)
		}
		if at[i] < window/10 {
			early++
		}
	}
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
	t.Logf("closes after SIGTERM: first %s, median %s, last %s; %d of %d in the first tenth",
		at[0].Round(time.Millisecond), at[n/2].Round(time.Millisecond), at[n-1].Round(time.Millisecond), early, n)
	// Spread evenly, about n/10 fall in the first tenth of the window;
	// all at once would put all n there.
	if early > n/2 {
		t.Fatalf("%d of %d clients closed within the first tenth of the %s drain: not spread (%v)", early, n, window, at)
	}
	if fmt.Sprint(s.auditLines()[len(s.auditLines())-1]["detail"]) != "gateway stopped on terminated" {
		t.Fatal("the last line of the trail is not the stop")
	}
}

// A second signal ends a drain at once: every client still open gets
// 1001 and the process exits 0.
func TestLifecycleSecondSignalEndsDrain(t *testing.T) {
	s := startServer(t, "shutdown: {drain: 10m}\n")
	conns := []*rawConn{dialRaw(t, s), dialRaw(t, s), dialRaw(t, s)}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	s.waitAudit(map[string]any{"event": "drain_started", "count": 3})
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	for i, rc := range conns {
		if code := rc.closeCode(); code != 1001 {
			t.Fatalf("client %d: close %d, want 1001", i, code)
		}
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the second signal did not end the drain")
	}
}

// The start-up lines say which proxies the gateway believes.
func TestLifecycleStartupNamesTrustedProxies(t *testing.T) {
	s := startServer(t, "")
	checkFor(t, 5*time.Second, func() error {
		if !strings.Contains(s.stderr.String(), "trusting no proxy: forwarding headers are ignored") {
			return fmt.Errorf("stderr: %s", s.stderr.String())
		}
		return nil
	})
	p := startServer(t, "trusted_proxies: [\"10.0.0.0/8\"]\n")
	checkFor(t, 5*time.Second, func() error {
		if !strings.Contains(p.stderr.String(), "trusting proxies 10.0.0.0/8: the client address is read from their X-Forwarded-For header") {
			return fmt.Errorf("stderr: %s", p.stderr.String())
		}
		return nil
	})
}

// A token minted before a restart and not yet redeemed is redeemed after
// it: the app opens the store's state file at start and saves it at stop.
func TestLifecycleTokensSurviveRestart(t *testing.T) {
	data := filepath.Join(t.TempDir(), "d")
	s := startServerIn(t, "", data)
	tok := s.token("alice", "news")
	s.stop()
	s = startServerIn(t, "", data)
	rc := dialRaw(t, s)
	rc.sendJSON(subMsg(1, "news", "alice", tok))
	if m := rc.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("a token minted before the restart: %v", m)
	}
}
