package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/audit"
)

// `audit verify` exits 0 on an intact trail, 1 on a broken one and 2 when
// it could not check anything, through the same path as the binary (run),
// so that a script can tell a tampered trail from a wrong path.
func TestAuditVerifyExitCodes(t *testing.T) {
	data := t.TempDir()
	w, err := audit.Open(audit.Options{Dir: filepath.Join(data, "audit"), KeyFile: filepath.Join(data, "audit.key"), Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		w.Emit(audit.Event{Event: audit.KindConnOpen, Conn: uint64(i + 1)})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	broken := t.TempDir()
	copyTree(t, data, broken)
	active := filepath.Join(broken, "audit", "audit.log")
	raw, err := os.ReadFile(active)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(active, bytes.Replace(raw, []byte(`"conn":3`), []byte(`"conn":4`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	// A key that cannot be read: a directory where the file should be.
	unreadable := t.TempDir()
	copyTree(t, data, unreadable)
	key := filepath.Join(unreadable, "audit.key")
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(key, 0o700); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "nothing-here")

	for _, c := range []struct {
		name   string
		args   []string
		code   int
		stderr string // a part of what it says on stderr
	}{
		{"intact", []string{"--data", data}, exitOK, ""},
		{"broken", []string{"--data", broken}, exitFailure, "audit trail broken: 1 problem(s)"},
		{"missing data dir", []string{"--data", missing}, exitCannotVerify, "audit key: "},
		{"missing path", []string{"--data", data, filepath.Join(data, "audit", "no-such.log")}, exitCannotVerify, "no-such.log: no such file or directory"},
		{"unreadable key", []string{"--data", unreadable}, exitCannotVerify, "is a directory"},
		{"bad flag", []string{"--data", data, "--no-such-flag"}, exitCannotVerify, "unknown flag: --no-such-flag"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(append([]string{"audit", "verify"}, c.args...), &stderr)
			if code != c.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, c.code, stderr.String())
			}
			if c.stderr == "" && stderr.Len() != 0 || !strings.Contains(stderr.String(), c.stderr) {
				t.Fatalf("stderr %q, want it to contain %q", stderr.String(), c.stderr)
			}
			if d := doubled(stderr.String()); d != "" {
				t.Errorf("doubled prefix %q in %q", d, stderr.String())
			}
		})
	}
}

// copyTree copies the files under src into dst, keeping the layout.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
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
}
