package audit

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriterLines(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	w, err := Open(Options{Dir: dir, Node: "n1", Fsync: 0})
	if err != nil {
		t.Fatal(err)
	}
	w.Emit(Event{Event: "auth_failed", Severity: Warning, IP: "127.0.0.1", Reason: "token_replayed", TokenFP: "abcd1234",
		UserID: "line\nbreak\u2028", Detail: strings.Repeat("x", 5000)})
	w.Emit(Event{Event: "conn_close", Code: 1000, DurationMS: 0})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "audit.log")); st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v", st.Mode().Perm())
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v", st.Mode().Perm())
	}
	f, _ := os.Open(filepath.Join(dir, "audit.log"))
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	var lines []map[string]any
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	a := lines[0]
	if a["event"] != "auth_failed" || a["severity"] != "warning" || a["seq"] != 1.0 || a["node"] != "n1" ||
		a["reason"] != "token_replayed" || a["token_fp"] != "abcd1234" || a["userId"] != "line\nbreak\u2028" {
		t.Fatalf("line %v", a)
	}
	if d := a["detail"].(string); len(d) > MaxFieldLen+4 {
		t.Fatalf("detail not capped: %d bytes", len(d))
	}
	if b := lines[1]; b["seq"] != 2.0 || b["code"] != 1000.0 || b["duration_ms"] != 0.0 {
		t.Fatalf("line %v", b)
	}
}

func TestEmitNeverBlocks(t *testing.T) {
	w, err := Open(Options{Dir: t.TempDir(), QueueSize: 4, Fsync: 0})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10000; i++ {
		w.Emit(Event{Event: "conn_open"})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	if st.Written+st.Dropped < 10000 {
		t.Fatalf("written %d + dropped %d < 10000: events vanished uncounted", st.Written, st.Dropped)
	}
}
