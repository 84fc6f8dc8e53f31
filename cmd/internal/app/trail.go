//go:build linux

package app

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/config"
)

// trail is the audit writer as a component. Opening it writes the
// trail's restart header, so it is opened only once the data dir is
// locked and the sockets are bound. Nothing of it changes live.
type trail struct {
	w   *audit.Writer
	dir string
}

func openTrail(cfg *config.Config, host string, log *logrus.Logger) (*trail, error) {
	dir := cfg.Audit.Dir
	if dir == "" {
		dir = filepath.Join(cfg.DataDir, "audit")
	}
	fsync, err := audit.ParseFsync(cfg.Audit.Fsync)
	if err != nil {
		return nil, fmt.Errorf("audit.fsync: %w", err)
	}
	onFailure, err := audit.ParseFailurePolicy(cfg.Audit.OnFailure)
	if err != nil {
		return nil, fmt.Errorf("audit.on_failure: %w", err)
	}
	w, err := audit.Open(audit.Options{
		Dir:           dir,
		KeyFile:       filepath.Join(cfg.DataDir, "audit.key"),
		Node:          host,
		Fsync:         fsync,
		RotateBytes:   cfg.Audit.RotateBytes,
		Retain:        cfg.Audit.Retain,
		RetainBytes:   cfg.Audit.RetainBytes,
		OnFailure:     onFailure,
		CheckpointDir: cfg.Audit.CheckpointDir,
		Log:           log,
	})
	if err != nil {
		return nil, fmt.Errorf("open audit trail: %w", err)
	}
	return &trail{w: w, dir: dir}, nil
}

func (t *trail) name() string { return "audit trail" }
func (t *trail) start() error { return nil }
func (t *trail) prepare(*config.Config, keySet) (func() error, error) {
	return nil, nil
}
func (t *trail) close() error {
	if err := t.w.Close(); err != nil {
		return fmt.Errorf("close audit trail: %w", err)
	}
	return nil
}

// tee sends every event to the audit trail and to the alert engine. It
// is an audit.Durable: an admin action waits for the trail's disk.
type tee struct {
	trail  audit.Durable
	alerts audit.Sink
}

// Emit implements audit.Sink.
func (t tee) Emit(e audit.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	t.trail.Emit(e)
	t.alerts.Emit(e)
}

// EmitDurable implements audit.Durable: e is on the trail's disk when it
// returns nil (manual bans and unbans go through here), and the alert
// engine sees it either way.
func (t tee) EmitDurable(ctx context.Context, e audit.Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	err := audit.EmitDurable(ctx, t.trail, e)
	t.alerts.Emit(e)
	return err
}
