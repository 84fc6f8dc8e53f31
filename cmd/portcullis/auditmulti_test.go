package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
)

// nodeData writes the trail of node into a fresh data dir: conn_open
// events at the given seconds after base, conn numbered from 1.
func nodeData(t *testing.T, node string, base time.Time, secs ...int) string {
	t.Helper()
	data := t.TempDir()
	w, err := audit.Open(audit.Options{Dir: filepath.Join(data, "audit"), KeyFile: filepath.Join(data, "audit.key"), Node: node})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range secs {
		w.Emit(audit.Event{Time: base.Add(time.Duration(s) * time.Second), Event: audit.KindConnOpen, Conn: uint64(i + 1)})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return data
}

// runOut runs the command line as the binary does and returns stdout,
// stderr and the exit code.
func runOut(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	root := rootCommand()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	_, err := root.ExecuteC()
	code := exitOK
	if err != nil {
		fmt.Fprintln(&errb, "portcullis:", err)
		code = exitUsage
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
	}
	return out.String(), errb.String(), code
}

// `audit verify --data A --data B` checks each node's trail as its own
// chain with its own key, says which trail is which, and exits 1 when one
// is broken (naming its file:line), 2 when one could not be checked and
// none is broken.
func TestAuditVerifySeveralTrails(t *testing.T) {
	base := time.Now().Add(-time.Hour)
	a := nodeData(t, "a", base, 0, 2, 4)
	b := nodeData(t, "b", base, 1, 3)
	out, errOut, code := runOut(t, "audit", "verify", "--data", a, "--data", b)
	if code != exitOK || !strings.Contains(out, filepath.Join(a, "audit")+": intact: 4 lines") ||
		!strings.Contains(out, filepath.Join(b, "audit")+": intact: 3 lines") {
		t.Fatalf("two intact trails: exit %d\n%s%s", code, out, errOut)
	}

	broken := t.TempDir()
	copyTree(t, b, broken)
	active := filepath.Join(broken, "audit", "audit.log")
	raw, err := os.ReadFile(active)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(active, bytes.Replace(raw, []byte(`"conn":2`), []byte(`"conn":9`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "gone")
	for _, c := range []struct {
		name    string
		args    []string
		code    int
		out     []string
		stderr  string
		without string
	}{
		{"one broken", []string{"--data", a, "--data", broken}, exitFailure,
			[]string{active + ":3: mac mismatch", filepath.Join(a, "audit") + ": intact: ", filepath.Join(broken, "audit") + ": broken: 1 problem(s)"},
			"audit trail broken: 1 of 2 trails (" + filepath.Join(broken, "audit") + ")", ""},
		{"one missing", []string{"--data", missing, "--data", a}, exitCannotVerify,
			[]string{filepath.Join(missing, "audit") + ": could not verify: audit key: ", filepath.Join(a, "audit") + ": intact: "},
			"could not verify 1 of 2 trails (" + filepath.Join(missing, "audit") + ")", ""},
		{"broken outranks missing", []string{"--data", missing, "--data", broken}, exitFailure,
			[]string{filepath.Join(missing, "audit") + ": could not verify", active + ":3: mac mismatch"},
			"audit trail broken: 1 of 2 trails", ""},
		{"--key is one trail's", []string{"--data", a, "--data", b, "--key", filepath.Join(a, "audit.key")}, exitCannotVerify,
			nil, "--key applies to one trail", "intact"},
		{"PATH is one trail", []string{"--data", a, "--data", b, filepath.Join(a, "audit")}, exitCannotVerify,
			nil, "PATH arguments are checked as one trail", "intact"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, code := runOut(t, append([]string{"audit", "verify"}, c.args...)...)
			if code != c.code || !strings.Contains(errOut, c.stderr) {
				t.Fatalf("exit %d, want %d; stderr %q, want %q\n%s", code, c.code, errOut, c.stderr, out)
			}
			for _, w := range c.out {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if c.without != "" && strings.Contains(out, c.without) {
				t.Errorf("stdout has %q:\n%s", c.without, out)
			}
		})
	}
}

// `audit query --data A --data B` merges the trails by time, shows NODE in
// the table, and --node and --count-by node see the nodes.
func TestAuditQuerySeveralTrails(t *testing.T) {
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	a := nodeData(t, "a", base, 0, 2, 4)
	b := nodeData(t, "b", base, 1, 3)
	out, errOut, code := runOut(t, "audit", "query", "--data", a, "--data", b, "--event", "conn_open", "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m struct {
			Node string
			Conn int
			Time time.Time
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		got = append(got, fmt.Sprintf("%s%d@%d", m.Node, m.Conn, m.Time.Sub(base)/time.Second))
	}
	if s := strings.Join(got, " "); s != "a1@0 b1@1 a2@2 b2@3 a3@4" {
		t.Fatalf("merged: %s", s)
	}

	out, errOut, code = runOut(t, "audit", "query", "--dir", filepath.Join(a, "audit"), "--data", b, "--event", "conn_open")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 6 || !strings.HasPrefix(lines[0], "TIME ") || !strings.Contains(lines[0], " NODE ") ||
		!strings.Contains(lines[1], " a ") || !strings.Contains(lines[2], " b ") {
		t.Fatalf("table: exit %d %s\n%s", code, errOut, out)
	}
	out, _, code = runOut(t, "audit", "query", "--data", a, "--event", "conn_open")
	if code != exitOK || strings.Contains(out, "NODE") {
		t.Fatalf("one trail's table has no NODE column: exit %d\n%s", code, out)
	}

	out, errOut, code = runOut(t, "audit", "query", "--data", a, "--data", b, "--event", "conn_open", "--node", "b", "--json")
	if code != exitOK || strings.Count(out, "\n") != 2 || strings.Contains(out, `"node":"a"`) {
		t.Fatalf("--node b: exit %d %s\n%s", code, errOut, out)
	}
	out, errOut, code = runOut(t, "audit", "query", "--data", a, "--data", b, "--event", "conn_open", "--count-by", "node", "--json")
	if code != exitOK || out != "{\"count\":3,\"node\":\"a\"}\n{\"count\":2,\"node\":\"b\"}\n" {
		t.Fatalf("--count-by node: exit %d %s\n%s", code, errOut, out)
	}

	_, errOut, code = runOut(t, "audit", "query", "--data", a, "--data", b, filepath.Join(a, "audit"))
	if code != exitUsage || !strings.Contains(errOut, "PATH arguments are read as one trail") {
		t.Fatalf("PATH with two trails: exit %d %s", code, errOut)
	}
	_, errOut, code = runOut(t, "audit", "tail", "--data", a, "--data", b)
	if code != exitUsage || !strings.Contains(errOut, "reads one trail, and 2 are given") {
		t.Fatalf("tail of two trails: exit %d %s", code, errOut)
	}
}
