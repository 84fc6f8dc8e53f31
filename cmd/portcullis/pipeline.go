//go:build linux

package main

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/config"
	"github.com/portcullis-gw/portcullis/policy/bans"
	"github.com/portcullis-gw/portcullis/policy/blocklist"
	"github.com/portcullis-gw/portcullis/policy/guard"
	"github.com/portcullis-gw/portcullis/policy/ratelimit"
)

// pipeline is the address-keyed part of the validation pipeline built
// from the config: lists, limits, bans and the guard composing them.
type pipeline struct {
	lists *blocklist.Set
	bans  *bans.Manager
	guard *guard.Guard
}

// buildPipeline opens <data>/state.db and builds the guard. disconnect and
// kernelDrop reach the gateway once it runs (before that, bans restored at
// start have no live connections to close and no flood has been seen).
func buildPipeline(cfg *config.Config, aw audit.Sink, log *logrus.Logger, disconnect func(netip.Prefix),
	kernelDrop func([]netip.Prefix)) (*pipeline, error) {
	b := cfg.Bans
	lists, err := blocklist.NewSet(b.Block, b.Allow, b.BlockFiles)
	if err != nil {
		return nil, fmt.Errorf("bans: %w", err)
	}
	l := cfg.Limits
	table, err := ratelimit.NewTable(ratelimit.Config{
		ConnRate:          ratelimit.Rate{PerSecond: l.ConnRate.Rate, Burst: l.ConnRate.Burst},
		HandshakeFailRate: ratelimit.Rate{PerSecond: l.HandshakeFailRate.Rate, Burst: l.HandshakeFailRate.Burst},
		PerIPConnections:  l.PerIPConnections,
		// Never refuse a new address because the table is full of
		// addresses with open connections below the global cap.
		MaxEntries: max(ratelimit.DefaultMaxEntries, l.MaxConnections+l.MaxConnections/4),
	})
	if err != nil {
		return nil, fmt.Errorf("limits: %w", err)
	}
	now := time.Now()
	mgr, err := bans.Open(filepath.Join(cfg.DataDir, "state.db"), bans.Config{
		FindTime: b.FindTime, MaxRetry: b.MaxRetry, BanTime: b.BanTime, Factor: b.Factor, MaxTime: b.MaxTime,
		DryRun: b.DryRun, IPv6Prefix: l.IPv6Prefix, Allowed: lists.Allowed,
	}, now)
	if err != nil {
		return nil, fmt.Errorf("bans: %w", err)
	}
	g, err := guard.New(guard.Options{
		Lists: lists, Limits: table, Bans: mgr, IPv6Prefix: l.IPv6Prefix, Audit: aw, Log: log,
		Disconnect:     disconnect,
		KernelDropRate: b.KernelDropRate,
		KernelDrop:     kernelDrop,
	})
	if err != nil {
		mgr.Close()
		return nil, err
	}
	if st := mgr.Stats(); st.Restored > 0 {
		log.WithField("bans", st.Restored).Info("bans restored from state.db with their remaining time")
	}
	return &pipeline{lists: lists, bans: mgr, guard: g}, nil
}

// run sweeps expired bans and idle limiter entries, and re-reads the block
// files when they change, until ctx is done.
func (p *pipeline) run(ctx context.Context, aw audit.Sink, log *logrus.Logger) {
	go p.guard.Run(ctx, 5*time.Second)
	go p.lists.Watch(ctx, 5*time.Second, func(err error) { p.reloaded(err, "file change", aw, log) })
}

// reload re-reads the block files (SIGHUP).
func (p *pipeline) reload(aw audit.Sink, log *logrus.Logger) {
	p.reloaded(p.lists.Reload(), "SIGHUP", aw, log)
}

func (p *pipeline) reloaded(err error, why string, aw audit.Sink, log *logrus.Logger) {
	if err != nil {
		log.WithError(err).Error("block files not reloaded; the previous lists stay in force")
		aw.Emit(audit.Event{Event: audit.KindConfigReload, Severity: audit.Warning, Stage: audit.StageSystem,
			Actor: why, Reason: "reload_failed", Detail: audit.Cap(err.Error())})
		return
	}
	block, allow := p.lists.Len()
	log.WithFields(logrus.Fields{"block": block, "allow": allow}).Info("block files reloaded")
	aw.Emit(audit.Event{Event: audit.KindConfigReload, Severity: audit.Notice, Stage: audit.StageSystem,
		Actor: why, Detail: fmt.Sprintf("block lists reloaded: %d blocked, %d allowed prefixes", block, allow)})
}

// close saves the ban state.
func (p *pipeline) close() error { return p.bans.Close() }
