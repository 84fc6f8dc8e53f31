package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Block files are re-read on SIGHUP: an address added to one is refused at
// accept from then on, and the reload is audited.
func TestBlockFileReloadOnSIGHUP(t *testing.T) {
	list := filepath.Join(t.TempDir(), "drop.txt")
	if err := os.WriteFile(list, []byte("# Spamhaus-style list\n198.51.100.0/24 ; SBL1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, fmt.Sprintf("bans: {allow: [\"127.0.0.1\"], block_files: [%q]}\n", list))
	if got := dialOutcome(t, s, "127.0.0.33"); got != "open" {
		t.Fatalf("before the reload: %s", got)
	}
	if err := os.WriteFile(list, []byte("198.51.100.0/24 ; SBL1\n127.0.0.33 # added\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	s.waitAudit(map[string]any{"event": "config_reload", "actor": "SIGHUP"})
	checkFor(t, 5*time.Second, func() error {
		if got := dialOutcome(t, s, "127.0.0.33"); got != "reset" {
			return fmt.Errorf("after the reload: %s, want reset at accept", got)
		}
		return nil
	})
	s.waitAudit(map[string]any{"event": "conn_rejected", "reason": "blocked", "ip": "127.0.0.33", "stage": "accept"})
	// A broken file keeps the lists in force and says why.
	if err := os.WriteFile(list, []byte("not-a-cidr\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitAudit(map[string]any{"event": "config_reload_failed", "actor": "SIGHUP"})
	if got := dialOutcome(t, s, "127.0.0.33"); got != "reset" {
		t.Fatalf("after a failed reload: %s, want the old list still in force", got)
	}
}
