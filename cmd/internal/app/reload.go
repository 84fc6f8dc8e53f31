//go:build linux

package app

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/admin"
)

// Reload re-reads the config file and applies every key that changed
// and can change live (SIGHUP, POST /v1/reload). A file that does not
// load or build, or a changed key that needs a restart, refuses the whole
// reload: nothing of it is applied and the config in force stays. The
// outcome is audited durably (config_reload with the changed keys, or
// config_reload_failed with the error) before it is returned. actor is
// who asked: "SIGHUP" or "api@<address>".
func (a *App) Reload(actor string) ([]string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed, detail, err := a.reload()
	if err != nil {
		e := audit.Event{Event: audit.KindConfigReloadFailed, Severity: audit.Warning, Stage: audit.StageSystem,
			Actor: actor, Detail: audit.Cap(err.Error())}
		if derr := a.emitDurable(e); derr != nil {
			return nil, &admin.ReloadError{Code: admin.ReloadFailed, Err: errors.Join(err, derr)}
		}
		return nil, err
	}
	e := audit.Event{Event: audit.KindConfigReload, Severity: audit.Notice, Stage: audit.StageSystem,
		Actor: actor, Detail: audit.Cap(detail)}
	if err := a.emitDurable(e); err != nil {
		return changed, &admin.ReloadError{Code: admin.ReloadFailed,
			Err: fmt.Errorf("the new config is in force, but its audit line could not be written: %w", err)}
	}
	a.log.WithFields(logrus.Fields{"actor": actor, "changed": changed}).Info("config reloaded")
	return changed, nil
}

// reload does Reload's work: it returns the changed keys and the audit
// detail, or a *admin.ReloadError.
func (a *App) reload() ([]string, string, error) {
	next, err := LoadConfig(a.o.ConfigPath)
	if err != nil {
		return nil, "", &admin.ReloadError{Code: admin.ReloadConfigInvalid, Key: firstKey(err), Err: err}
	}
	if a.o.DataDir != "" {
		next.DataDir = a.o.DataDir
	}
	changed := keySet(Diff(a.cfg, next))
	if keys := restartKeys(a.cfg, next, changed); len(keys) > 0 {
		return nil, "", &admin.ReloadError{Code: admin.ReloadNeedsRestart, Key: keys[0], Err: restartError(a.cfg, next, keys)}
	}
	// The gateway's rules are the only part whose apply can fail (it
	// checks them against what is fixed at start): it goes first, so
	// that a failure there leaves everything as it was.
	var applies []func() error
	for _, c := range a.built {
		apply, err := c.prepare(next, changed)
		if err != nil {
			return nil, "", &admin.ReloadError{Code: admin.ReloadConfigInvalid, Key: firstKey(err), Err: err}
		}
		switch {
		case apply == nil:
		case c == component(a.gw):
			applies = append([]func() error{apply}, applies...)
		default:
			applies = append(applies, apply)
		}
	}
	for i, apply := range applies {
		if err := apply(); err != nil {
			if i == 0 {
				return nil, "", &admin.ReloadError{Code: admin.ReloadFailed, Err: err}
			}
			return nil, "", &admin.ReloadError{Code: admin.ReloadFailed,
				Err: fmt.Errorf("partly applied (restart to be sure of the config in force): %w", err)}
		}
	}
	if changed.any("log_level") && a.o.LogLevel == "" {
		if lvl, err := logrus.ParseLevel(next.LogLevel); err == nil {
			a.log.SetLevel(lvl)
		}
	}
	if changed.any("shutdown.drain") {
		a.drain.Store(int64(next.Shutdown.Drain))
	}
	a.cfg = next
	detail := "changed: " + strings.Join(changed, ", ")
	if len(changed) == 0 {
		detail = "no key changed"
	}
	if len(next.Bans.BlockFiles) > 0 {
		block, allow := a.pipe.lists.cur.Load().Len()
		detail += fmt.Sprintf("; block files re-read: %d blocked, %d allowed prefixes", block, allow)
	}
	for _, d := range []string{a.gw.tlsDetail(), a.api.tlsDetail()} {
		if d != "" {
			detail += "; " + d
		}
	}
	return changed, detail, nil
}

// emitDurable writes e to the trail and the alert engine, and waits
// until the trail has it on disk.
func (a *App) emitDurable(e audit.Event) error {
	ctx, cancel := context.WithTimeout(context.Background(), audit.DefaultDurableTimeout)
	defer cancel()
	return a.sink.EmitDurable(ctx, e)
}
