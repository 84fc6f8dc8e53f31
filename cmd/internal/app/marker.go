//go:build linux

package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
)

// runMarker is <data>/running: present while a gateway serves, removed on
// a clean stop. Finding it at start means the last run ended uncleanly
// (crash, kill -9, power loss): the gateway audits that it started after
// an unclean stop. A start that fails writes none.
func runMarker(dataDir string) string { return filepath.Join(dataDir, "running") }

// checkUncleanStop reports a marker left by the previous run.
func checkUncleanStop(dataDir string, sink audit.Sink) {
	if b, err := os.ReadFile(runMarker(dataDir)); err == nil {
		sink.Emit(audit.Event{Event: audit.KindUncleanStop, Severity: audit.Critical, Stage: audit.StageSystem,
			Detail: audit.Cap("the previous run did not stop cleanly (" + strings.TrimSpace(string(b)) + ")")})
	}
}

// writeMarker writes this run's marker, once it serves.
func writeMarker(dataDir string) {
	_ = os.WriteFile(runMarker(dataDir), []byte(fmt.Sprintf("pid %d started %s\n", os.Getpid(), time.Now().UTC().Format(time.RFC3339))), 0o600)
}

// removeMarker records a clean stop (or, after a failed start, that the
// previous run's marker has been reported).
func removeMarker(dataDir string) { _ = os.Remove(runMarker(dataDir)) }
