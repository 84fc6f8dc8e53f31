package e2e

// Two gateways on two data dirs, each with its own trail: `audit query`
// reads both merged by time, `audit verify` checks each as its own chain
// and names the broken trail's file:line (docs/AUDIT.md, "The trails of
// several nodes").

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

func TestAuditMultiTrailQueryAndVerify(t *testing.T) {
	a, b := startServer(t, ""), startServer(t, "")
	nodes := []*server{a, b}
	// Events on both: a refused client message each, then bans made
	// alternately on a and b. A ban is on its trail's disk when the API
	// answers, so the six ban lines' times alternate a, b, a, b, a, b.
	for _, s := range nodes {
		rc := dialRaw(t, s)
		rc.frame(true, 1, []byte(`{"op":`), true)
		if m := rc.readMsg(); m["code"] != "bad_request" {
			t.Fatalf("bad JSON: %v", m)
		}
	}
	var want []string // prefixes banned, in order
	for i := 1; i <= 6; i++ {
		s := nodes[(i-1)%2]
		p := fmt.Sprintf("198.51.100.%d/32", i)
		if code, out := s.api("POST", "/v1/bans", fmt.Sprintf(`{"prefix":%q,"for":"1h","reason":"multi-trail e2e"}`, p)); code != 201 {
			t.Fatalf("POST /v1/bans %s: %d %v", p, code, out)
		}
		want = append(want, p)
	}
	for _, s := range nodes {
		s.waitAudit(map[string]any{"event": "message_rejected", "reason": "bad_json"})
		s.stop()
	}

	// The lines of each trail, as written, by banned prefix.
	written := map[string]string{}
	for _, s := range nodes {
		lines, _ := audLines(audRead(t, filepath.Join(s.data, "audit", "audit.log")))
		for _, l := range lines {
			var m map[string]any
			if json.Unmarshal(l, &m) == nil && m["event"] == "ban" {
				if n, _ := m["node"].(string); n == "" {
					t.Fatalf("ban line without node: %s", l)
				}
				written[m["counted_prefix"].(string)] = string(l)
			}
		}
	}

	out, errOut, code := portcullis(t, nil, "audit", "query", "--data", a.data, "--data", b.data, "--event", "ban", "--json")
	if code != 0 {
		t.Fatalf("query of two trails: exit %d %s", code, errOut)
	}
	var wantLines []string
	for _, p := range want {
		wantLines = append(wantLines, written[p])
	}
	if got := strings.TrimSuffix(out, "\n"); got != strings.Join(wantLines, "\n") {
		t.Fatalf("merged ban lines:\n%s\nwant (a, b, a, b, a, b, as written):\n%s", got, strings.Join(wantLines, "\n"))
	}
	out, errOut, code = portcullis(t, nil, "audit", "query", "--data", a.data, "--data", b.data, "--event", "message_rejected,ban")
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(rows) != 9 || !strings.Contains(rows[0], "NODE") || strings.Count(out, "bad_json") != 2 {
		t.Fatalf("table of two trails: exit %d %s\n%s", code, errOut, out)
	}

	out, code = audVerify(t, a.data, "--data", b.data)
	if code != 0 || strings.Count(out, ": intact: ") != 2 ||
		!strings.Contains(out, filepath.Join(a.data, "audit")+": intact: ") || !strings.Contains(out, filepath.Join(b.data, "audit")+": intact: ") {
		t.Fatalf("verify of two intact trails: exit %d\n%s", code, out)
	}
	t.Logf("intact:\n%s", out)

	// Tamper with b's second ban in a copy of b: verify exits 1 and names
	// that file and line; a's trail is still reported intact.
	bc := audCopyDir(t, b.data)
	active := filepath.Join(bc, "audit", "audit.log")
	lines, tail := audLines(audRead(t, active))
	k := -1
	for i, l := range lines {
		if bytes.Contains(l, []byte(`"counted_prefix":"198.51.100.4/32"`)) {
			k = i
		}
	}
	if k < 0 {
		t.Fatalf("no ban of 198.51.100.4/32 in %s", active)
	}
	lines[k] = bytes.Replace(lines[k], []byte("198.51.100.4/32"), []byte("198.51.100.5/32"), 1)
	audRewrite(t, active, lines, tail)
	out, code = audVerify(t, a.data, "--data", bc)
	if code != 1 || audProblem(out, fmt.Sprintf("%s:%d: ", active, k+1), "mac mismatch") == "" ||
		!strings.Contains(out, filepath.Join(a.data, "audit")+": intact: ") || !strings.Contains(out, "audit trail broken: 1 of 2 trails") {
		t.Fatalf("verify with b tampered: exit %d, want 1 naming %s:%d\n%s", code, active, k+1, out)
	}
	t.Logf("tampered:\n%s", out)
}
