//go:build linux

package app

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/config"
	"github.com/portcullis-gw/portcullis/policy/bans"
	"github.com/portcullis-gw/portcullis/policy/blocklist"
	"github.com/portcullis-gw/portcullis/policy/guard"
	"github.com/portcullis-gw/portcullis/policy/ratelimit"
)

// pipelineEvery is how often expired bans and idle limiter entries are
// swept and the block files are looked at.
const pipelineEvery = 5 * time.Second

// pipeline is the address-keyed part of the validation pipeline as a
// component: the static lists, the per-address limits, the bans
// (<data>/state.db) and the guard composing them. The lists change live
// (bans.allow, bans.block, bans.block_files, and the block files' content
// on every reload and when they change on disk); the ban ladder and the
// per-address limits need a restart.
type pipeline struct {
	lists *listSwitch
	bans  *bans.Manager
	guard *guard.Guard
	sink  audit.Sink
	log   *logrus.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	watch  context.CancelFunc // stops the watcher of the lists in force; guarded by wmu
	wmu    sync.Mutex
}

// buildPipeline opens <data>/state.db and builds the guard. gw is the
// gateway the guard acts on; it is wired before anything starts.
func buildPipeline(cfg *config.Config, sink audit.Sink, log *logrus.Logger, gw *gatewayLink) (*pipeline, error) {
	b := cfg.Bans
	set, err := blocklist.NewSet(b.Block, b.Allow, b.BlockFiles)
	if err != nil {
		return nil, fmt.Errorf("bans: %w", err)
	}
	lists := &listSwitch{}
	lists.cur.Store(set)
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
	mgr, err := bans.Open(filepath.Join(cfg.DataDir, "state.db"), bans.Config{
		FindTime: b.FindTime, MaxRetry: b.MaxRetry, BanTime: b.BanTime, Factor: b.Factor, MaxTime: b.MaxTime,
		DryRun: b.DryRun, IPv6Prefix: l.IPv6Prefix, Allowed: lists.Allowed,
	}, time.Now())
	if err != nil {
		return nil, err // "bans: ..." already
	}
	g, err := guard.New(guard.Options{
		Lists: lists, Limits: table, Bans: mgr, IPv6Prefix: l.IPv6Prefix, Audit: sink, Log: log,
		// Called from event loops: never wait for them here.
		Disconnect:     func(p netip.Prefix) { go gw.srv.DisconnectPrefix(p, "banned") },
		KernelDropRate: b.KernelDropRate,
		KernelDrop:     func(ps []netip.Prefix) { gw.srv.DropInKernel(ps) },
	})
	if err != nil {
		_ = mgr.Close()
		return nil, fmt.Errorf("bans: %w", err)
	}
	if st := mgr.Stats(); st.Restored > 0 {
		log.WithField("bans", st.Restored).Info("bans restored from state.db with their remaining time")
	}
	return &pipeline{lists: lists, bans: mgr, guard: g, sink: sink, log: log}, nil
}

func (p *pipeline) name() string { return "ban pipeline" }

// start sweeps expired bans and idle limiter entries, and re-reads the
// block files when they change, until close.
func (p *pipeline) start() error {
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.guard.Run(p.ctx, pipelineEvery)
	}()
	p.watchLists(p.lists.cur.Load())
	return nil
}

// watchLists watches set's files (stopping the watcher of the set before).
func (p *pipeline) watchLists(set *blocklist.Set) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.watch != nil {
		p.watch()
	}
	ctx, cancel := context.WithCancel(p.ctx)
	p.watch = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		set.Watch(ctx, pipelineEvery, func(err error) { p.fileChanged(set, err) })
	}()
}

// fileChanged audits a reload of the block files that the watcher did
// when one changed on disk.
func (p *pipeline) fileChanged(set *blocklist.Set, err error) {
	if err != nil {
		p.log.WithError(err).Error("block files not reloaded; the previous lists stay in force")
		p.sink.Emit(audit.Event{Event: audit.KindConfigReloadFailed, Severity: audit.Warning, Stage: audit.StageSystem,
			Actor: "file change", Detail: audit.Cap("bans.block_files: " + err.Error())})
		return
	}
	block, allow := set.Len()
	p.log.WithFields(logrus.Fields{"block": block, "allow": allow}).Info("block files reloaded")
	p.sink.Emit(audit.Event{Event: audit.KindConfigReload, Severity: audit.Notice, Stage: audit.StageSystem,
		Actor: "file change", Detail: fmt.Sprintf("block files re-read: %d blocked, %d allowed prefixes", block, allow)})
}

// prepare builds the lists anew whenever there are block files (a reload
// re-reads them even when no key changed) or a list key changed; a bad
// entry or file refuses the whole reload.
func (p *pipeline) prepare(next *config.Config, changed keySet) (func() error, error) {
	b := next.Bans
	if len(b.BlockFiles) == 0 && !changed.any("bans.allow", "bans.block", "bans.block_files") {
		return nil, nil
	}
	set, err := blocklist.NewSet(b.Block, b.Allow, b.BlockFiles)
	if err != nil {
		return nil, fmt.Errorf("bans: %w", err)
	}
	return func() error {
		p.lists.cur.Store(set)
		p.watchLists(set)
		return nil
	}, nil
}

// close stops the sweeps and saves the ban state.
func (p *pipeline) close() error {
	if p.cancel != nil {
		p.cancel()
		p.wg.Wait()
	}
	if err := p.bans.Close(); err != nil {
		return fmt.Errorf("bans: save state.db: %w", err)
	}
	return nil
}

// listSwitch is the static lists in force (guard.Lists), replaced as a
// whole by a reload.
type listSwitch struct {
	cur atomic.Pointer[blocklist.Set]
}

// Blocked implements guard.Lists.
func (l *listSwitch) Blocked(a netip.Addr) bool { return l.cur.Load().Blocked(a) }

// Allowed implements guard.Lists.
func (l *listSwitch) Allowed(a netip.Addr) bool { return l.cur.Load().Allowed(a) }

// AllowedWithin implements guard.Lists.
func (l *listSwitch) AllowedWithin(p netip.Prefix) bool { return l.cur.Load().AllowedWithin(p) }
