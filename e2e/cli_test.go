package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// portcullis runs the binary and returns stdout, stderr and the exit code.
func portcullis(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(gwBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// The admin CLI mints a token and publishes through a running gateway,
// finding it from the data dir alone.
func TestCLITokenAndPublish(t *testing.T) {
	s := startServer(t, "")
	tok, stderr, code := portcullis(t, nil, "token", "issue", "--user", "cli-user", "--topic", "news", "--data", s.data)
	tok = strings.TrimSpace(tok)
	if code != 0 || len(tok) < 22 {
		t.Fatalf("token issue: exit %d, %q %s", code, tok, stderr)
	}
	requireClient(t, "python")
	res := make(chan []clientEvent, 1)
	go func() {
		res <- runClient(t, "python", s.wsURL, "portcullis.v1", "",
			[]any{map[string]any{"op": "subscribe", "id": 1, "topic": "news", "userId": "cli-user", "token": tok}}, 3, 15*time.Second)
	}()
	s.waitAudit(map[string]any{"event": "subscribe", "userId": "cli-user"})
	out, stderr, code := portcullis(t, nil, "publish", "news", `{"from":"cli"}`, "--data", s.data)
	if code != 0 || !strings.Contains(out, "delivered to 1 subscriber") {
		t.Fatalf("publish: exit %d, %q %s", code, out, stderr)
	}
	got := received(<-res)
	if len(got) != 3 || got[2]["op"] != "event" || got[2]["data"].(map[string]any)["from"] != "cli" {
		t.Fatalf("received %v", got)
	}
	// A wrong key is refused with the API's message and exit 1.
	_, stderr, code = portcullis(t, []string{"PORTCULLIS_ADMIN_URL=" + s.adminURL}, "publish", "news", "1", "--key", "wrong-key-wrong-key")
	if code != 1 || !strings.Contains(stderr, "401 unauthorized") {
		t.Fatalf("wrong key: exit %d, %s", code, stderr)
	}
	// Bad JSON is a usage error.
	if _, _, code = portcullis(t, nil, "publish", "news", "{", "--data", s.data); code != 2 {
		t.Fatalf("bad JSON argument: exit %d, want 2", code)
	}
}

// config check names the file, line, column and key; exit 1.
func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listen: \":9000\"\nlimits:\n  ping_intervall: 5s\n  max_connections: 0\n"), 0o600)
	_, stderr, code := portcullis(t, nil, "config", "check", bad)
	if code != 1 || !strings.Contains(stderr, bad+":3:3: limits.ping_intervall: unknown key") ||
		!strings.Contains(stderr, bad+":4:3: limits.max_connections: must be positive") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	def, _, code := portcullis(t, nil, "config", "default")
	if code != 0 {
		t.Fatal("config default failed")
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(def), 0o600)
	if out, stderr, code := portcullis(t, nil, "config", "check", good); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("default config does not check: %d %s", code, stderr)
	}
	// serve refuses the bad file the same way, before listening.
	_, stderr, code = portcullis(t, nil, "serve", "--config", bad, "--data", filepath.Join(dir, "d"))
	if code != 1 || !strings.Contains(stderr, "limits.ping_intervall: unknown key") {
		t.Fatalf("serve with bad config: exit %d: %s", code, stderr)
	}
}

// A client that never answers pings is closed after two missed pongs.
func TestPingTimeout(t *testing.T) {
	s := startServer(t, "limits: {ping_interval: 1s}\n")
	rc := dialRaw(t, s)
	pings := 0
	for {
		op, _ := rc.read()
		if op == 9 {
			pings++ // and never answer
			continue
		}
		if op == 8 {
			break
		}
	}
	if pings < 2 {
		t.Fatalf("closed after %d pings, want 2 unanswered first", pings)
	}
	s.waitAudit(map[string]any{"event": "conn_close", "reason": "ping_timeout", "code": 1008})
}

// Where a topic rule says `publish: token`, a client holding a token for
// the topic publishes to the other subscribers.
func TestClientPublish(t *testing.T) {
	s := startServer(t, "topics:\n  - match: \"chat.*\"\n    subscribe: token\n    publish: token\n")
	alice, bob := s.token("alice", "chat.*"), s.token("bob", "chat.*")
	requireClient(t, "node")
	requireClient(t, "python")
	res := make(chan []clientEvent, 1)
	go func() {
		res <- runClient(t, "node", s.wsURL, "portcullis.v1", "",
			[]any{map[string]any{"op": "subscribe", "id": 1, "topic": "chat.lobby", "userId": "bob", "token": bob}}, 3, 15*time.Second)
	}()
	s.waitAudit(map[string]any{"event": "subscribe", "userId": "bob"})
	got := received(runClient(t, "python", s.wsURL, "portcullis.v1", "", []any{
		map[string]any{"op": "subscribe", "id": 1, "topic": "chat.lobby", "userId": "alice", "token": alice},
		map[string]any{"op": "publish", "id": 2, "topic": "chat.lobby", "data": map[string]any{"text": "hi bob"}},
	}, 3, 15*time.Second))
	if len(got) < 3 || got[2]["op"] != "published" {
		t.Fatalf("alice received %v", got)
	}
	bobGot := received(<-res)
	if len(bobGot) != 3 || bobGot[2]["op"] != "event" || bobGot[2]["data"].(map[string]any)["text"] != "hi bob" {
		t.Fatalf("bob received %v", bobGot)
	}
	s.waitAudit(map[string]any{"event": "publish", "userId": "alice", "topic": "chat.lobby"})
}
