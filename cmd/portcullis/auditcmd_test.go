package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/audit"
)

func TestAuditVerifyCommand(t *testing.T) {
	data := t.TempDir()
	w, err := audit.Open(audit.Options{Dir: filepath.Join(data, "audit"), KeyFile: filepath.Join(data, "audit.key"), Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		w.Emit(audit.Event{Event: audit.KindConnOpen, Conn: uint64(i + 1)})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cmd := auditVerifyCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(args)
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		err := cmd.Execute()
		return out.String(), err
	}
	out, err := run("--data", data)
	if err != nil || !strings.Contains(out, "intact: 11 lines (seq 1..11) in 1 files") {
		t.Fatalf("%q %v", out, err)
	}
	active := filepath.Join(data, "audit", "audit.log")
	if out, err := run("--data", data, active); err != nil || !strings.Contains(out, "intact") {
		t.Fatalf("file arg: %q %v", out, err)
	}
	raw, _ := os.ReadFile(active)
	os.WriteFile(active, bytes.Replace(raw, []byte(`"conn":5`), []byte(`"conn":6`), 1), 0o600)
	out, err = run("--data", data)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitFailure || !strings.Contains(out, "audit.log:6: mac mismatch") {
		t.Fatalf("%q %v", out, err)
	}
	t.Log(out, err)
}
