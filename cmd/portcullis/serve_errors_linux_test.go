//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serve's start-up failures say what failed once, too: the components'
// own errors already name themselves ("bans: ...", "alerting: ...",
// "topics[0] ..."), so nothing wraps them in the same word again.
func TestServeErrorsNotDoubled(t *testing.T) {
	cases := []struct {
		name, yaml string
		setup      func(data string)
		want       string
	}{
		{"state.db unusable", "", func(data string) {
			if err := os.MkdirAll(filepath.Join(data, "state.db"), 0o700); err != nil {
				t.Fatal(err)
			}
		}, "bans: open state db "},
		{"smtp password unset", "alerting:\n  smtp: {host: smtp.example.com, from: a@example.com, to: [b@example.com], username: u, " +
			"password_env: PORTCULLIS_TEST_UNSET_SECRET}\n", nil, "alerting: smtp.password_env: variable \"PORTCULLIS_TEST_UNSET_SECRET\" is empty or unset"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			if err := os.MkdirAll(data, 0o700); err != nil {
				t.Fatal(err)
			}
			if c.setup != nil {
				c.setup(data)
			}
			cfg := filepath.Join(dir, "c.yaml")
			body := "listen: \"127.0.0.1:0\"\nadmin: {listen: \"127.0.0.1:0\"}\ndata_dir: " + data + "\n" + c.yaml
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			code, stderr := runCLI(t, "serve", "--config", cfg)
			if code != exitFailure || !strings.Contains(stderr, c.want) {
				t.Fatalf("exit %d, %q; want 1 and %q", code, stderr, c.want)
			}
			if d := doubled(stderr); d != "" {
				t.Errorf("doubled prefix %q in %q", d, stderr)
			}
		})
	}
}
