package statefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{What: "test file", Meta: []byte("meta"), Version: "1", Buckets: [][]byte{[]byte("a")}, Hint: "move it aside"}
	path := filepath.Join(dir, "x.db")
	db, err := Open(path, spec)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	spec.Version = "2"
	if _, err := Open(path, spec); err == nil || !strings.Contains(err.Error(), `unsupported test file version "1"`) {
		t.Fatalf("version mismatch: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.db")
	_ = os.WriteFile(garbage, []byte(strings.Repeat("not bbolt ", 1000)), 0o600)
	if _, err := Open(garbage, spec); err == nil || !strings.Contains(err.Error(), garbage) || !strings.Contains(err.Error(), "move it aside") {
		t.Fatalf("garbage file: %v", err)
	}
}
