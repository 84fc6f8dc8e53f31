package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"unicode"

	"github.com/portcullis-gw/portcullis/gateway/admin"
)

// runCLI runs the command line in-process and returns its exit code and
// what it wrote to stderr.
func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	code := run(args, &stderr)
	return code, stderr.String()
}

// An unknown command or flag, at any level, is a usage error (exit 2)
// with the error and where the usage is; a group without a subcommand
// still prints its help and exits 0.
func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"nonsense"}, []string{`unknown command "nonsense" for "portcullis"`, "Run 'portcullis --help' for usage."}},
		{[]string{"--bogus"}, []string{"unknown flag: --bogus", "Run 'portcullis --help' for usage."}},
		{[]string{"ban", "lst"}, []string{`portcullis: unknown command "lst" for "portcullis ban"; did you mean list?`, "Run 'portcullis ban --help' for usage."}},
		{[]string{"audit", "qeury"}, []string{`unknown command "qeury" for "portcullis audit"; did you mean query?`}},
		{[]string{"alert", "silence", "ad"}, []string{`unknown command "ad" for "portcullis alert silence"; did you mean add or rm?`, "Run 'portcullis alert silence --help' for usage."}},
		{[]string{"config", "chek", "x.yaml"}, []string{`unknown command "chek" for "portcullis config"; did you mean check?`}},
		{[]string{"ban", "list", "--bogus"}, []string{"unknown flag: --bogus", "Run 'portcullis ban list --help' for usage."}},
		{[]string{"ban", "--bogus"}, []string{"unknown flag: --bogus", "Run 'portcullis ban --help' for usage."}},
		{[]string{"config", "check"}, []string{"accepts 1 arg(s), received 0", "Run 'portcullis config check --help' for usage."}},
		{[]string{"token", "issue"}, []string{"--user is required", "Run 'portcullis token issue --help' for usage."}},
	}
	for _, c := range cases {
		code, stderr := runCLI(t, c.args...)
		if code != exitUsage {
			t.Errorf("portcullis %s: exit %d, want %d; stderr %q", strings.Join(c.args, " "), code, exitUsage, stderr)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("portcullis %s: stderr %q lacks %q", strings.Join(c.args, " "), stderr, w)
			}
		}
	}
	for _, group := range []string{"ban", "audit", "config", "alert"} {
		if code, stderr := runCLI(t, group); code != exitOK || stderr != "" {
			t.Errorf("portcullis %s: exit %d, stderr %q; want its help and 0", group, code, stderr)
		}
	}
}

// doubled returns the first place where a message repeats its prefix,
// e.g. "bans: bans: open" or "topics: topics[0] ...": two consecutive
// ": "-separated parts that begin with the same label (a word alone or
// starting a key: "alerting", "alerting.smtp.tls", "topics[0]"; a phrase
// such as "open state db" is not a label).
func doubled(msg string) string {
	for _, line := range strings.Split(msg, "\n") {
		parts := strings.Split(line, ": ")
		for i := 1; i < len(parts); i++ {
			a, b := label(parts[i-1]), label(parts[i])
			if a != "" && a == b {
				return parts[i-1] + ": " + parts[i]
			}
		}
	}
	return ""
}

// label is the word s starts with when it stands alone or starts a key
// ("alerting.smtp.tls" and "alerting" both give "alerting"), else "".
func label(s string) string {
	i := strings.IndexFunc(s, func(r rune) bool { return !unicode.IsLetter(r) && r != '_' })
	switch {
	case i < 0:
		return s
	case s[i] == '.' || s[i] == '[':
		return s[:i]
	}
	return ""
}

func TestDoubledDetector(t *testing.T) {
	for msg, want := range map[string]bool{
		"bans: bans: open state db x":                         true,
		"c.yaml: topics: topics[0] (match \"a\"): match: x":   true,
		"alerting.smtp.tls: alerting: tls \"x\"":              true,
		"c.yaml:1:1: topics[0] (match \"a\"): match: x":       false,
		"verify /x: no checkpoint public key":                 false,
		"bans: open state db /d/s: open /d/s: is a directory": false,
	} {
		if got := doubled(msg) != ""; got != want {
			t.Errorf("doubled(%q) = %v, want %v", msg, got, want)
		}
	}
}

// The failing commands say what failed once: no wrapped error repeats
// its prefix ("bans: bans:"), and config check places each at its key.
func TestErrorsNotDoubled(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := file("bad.txt", "10.0.0.0/33\n", 0o600)
	cases := []struct {
		name string
		args []string
		want string // the whole message after "portcullis: ", $D for dir
	}{
		{"block file", []string{"config", "check", file("c1.yaml", "bans:\n  block_files: [/nonexistent/list]\n", 0o600)},
			"$D/c1.yaml:2:3: bans.block_files[0]: blocklist: read list file: open /nonexistent/list: no such file or directory"},
		{"bad line in a block file", []string{"config", "check", file("c2.yaml", "bans:\n  block_files: ["+bad+"]\n", 0o600)},
			"$D/c2.yaml:2:3: bans.block_files[0]: blocklist: " + bad + ":1: \"10.0.0.0/33\" is not a CIDR: …"},
		{"topic pattern", []string{"config", "check", file("c3.yaml", "path: /ws\ntopics:\n  - match: \"a.**.b\"\n", 0o600)},
			"$D/c3.yaml:2:1: topics[0] (match \"a.**.b\"): match: \"**\" may only be the last segment"},
		{"data schema", []string{"config", "check", file("c4.yaml", "topics:\n  - match: a\n    publish: token\n    data_schema: /nonexistent.json\n", 0o600)},
			"$D/c4.yaml:1:1: topics[0].data_schema: compile data schema /nonexistent.json: …"},
		{"jwt secret", []string{"config", "check", file("c5.yaml", "tokens:\n  source: jwt\n  jwt: {secret_env: PORTCULLIS_TEST_UNSET_SECRET}\n", 0o600)},
			"$D/c5.yaml:3:3: tokens.jwt: load jwt secret: environment variable PORTCULLIS_TEST_UNSET_SECRET is empty or unset"},
		{"smtp tls", []string{"config", "check", file("c6.yaml", "alerting:\n  smtp: {tls: maybe}\n", 0o600)},
			"$D/c6.yaml:2:10: alerting.smtp.tls: …"},
		{"alert rule event", []string{"config", "check", file("c7.yaml", "alerting:\n  rules:\n    - name: x\n      event: nope\n", 0o600)},
			"$D/c7.yaml:4:7: alerting.rules[0].event: unknown event \"nope\" (docs/AUDIT.md lists the events)"},
		{"smtp password", []string{"config", "check", file("c8.yaml", "alerting:\n  smtp:\n    host: smtp.example.com\n    from: a@example.com\n"+
			"    to: [b@example.com]\n    username: u\n    password_env: PORTCULLIS_TEST_UNSET_SECRET\n", 0o600)},
			"$D/c8.yaml:7:5: alerting: smtp.password_env: variable \"PORTCULLIS_TEST_UNSET_SECRET\" is empty or unset"},
		// audit verify without a key exits 2: TestAuditVerifyExitCodes.
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stderr := runCLI(t, c.args...)
			if code != exitFailure {
				t.Fatalf("exit %d, want %d: %q", code, exitFailure, stderr)
			}
			if d := doubled(stderr); d != "" {
				t.Errorf("doubled prefix %q in %q", d, stderr)
			}
			want := "portcullis: " + strings.ReplaceAll(c.want, "$D", dir)
			got := strings.TrimSuffix(stderr, "\n")
			if p, ok := strings.CutSuffix(want, "…"); ok {
				if !strings.HasPrefix(got, p) {
					t.Errorf("got  %q\nwant %q…", got, p)
				}
			} else if got != want {
				t.Errorf("got  %q\nwant %q", got, want)
			}
		})
	}
}

// With alerting off the gateway routes no alert endpoints; the alert
// commands say so and what to set, instead of "404 no such API endpoint".
func TestAlertCommandsWithAlertingOff(t *testing.T) {
	api := admin.New(admin.Options{Key: "0123456789abcdef0123"}) // no alert routes, as serve without alerting
	srv := httptest.NewServer(api)
	defer srv.Close()
	for _, args := range [][]string{
		{"alert", "test"},
		{"alert", "silence", "list"},
		{"alert", "silence", "add", "--match", "alertname=ban", "--for", "1h"},
	} {
		args = append(args, "--admin", srv.URL, "--key", "0123456789abcdef0123")
		code, stderr := runCLI(t, args...)
		if code != exitFailure || !strings.Contains(stderr, "alerting is off on this gateway: set alerting.smtp.host and alerting.smtp.to") ||
			strings.Contains(stderr, "404") {
			t.Errorf("portcullis %s: exit %d, %q", strings.Join(args, " "), code, stderr)
		}
	}
	// Another refusal keeps the API's own answer.
	code, stderr := runCLI(t, "alert", "test", "--admin", srv.URL, "--key", "wrong-key-wrong-key")
	if code != exitFailure || !strings.Contains(stderr, "POST /v1/alerts/test: 401 unauthorized") {
		t.Errorf("wrong key: exit %d, %q", code, stderr)
	}
}

// `portcullis health` is the container health check: 0 on 200, 1 else.
func TestHealthCommand(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	if code, stderr := runCLI(t, "health", "--url", srv.URL+"/healthz"); code != exitOK {
		t.Fatalf("healthy: exit %d %q", code, stderr)
	}
	status.Store(http.StatusServiceUnavailable)
	if code, stderr := runCLI(t, "health", "--url", srv.URL+"/healthz"); code != exitFailure || !strings.Contains(stderr, "answered 503") {
		t.Fatalf("unhealthy: exit %d %q", code, stderr)
	}
	srv.Close()
	if code, stderr := runCLI(t, "health", "--url", srv.URL+"/healthz"); code != exitFailure || !strings.Contains(stderr, "unhealthy: ") {
		t.Fatalf("down: exit %d %q", code, stderr)
	}
	if code, _ := runCLI(t, "health", "--url", "nonsense"); code != exitUsage {
		t.Fatalf("bad --url: exit %d", code)
	}
}
