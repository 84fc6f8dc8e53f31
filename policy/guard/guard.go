// Package guard is the address-keyed part of the validation pipeline (pipeline
// steps 1 and 5, docs/ARCHITECTURE.md) seen from the gateway: allow-list, blocklist, bans,
// per-address rate and connection caps, and strikes that turn into bans.
// It composes policy/blocklist, policy/ratelimit and policy/bans, audits
// every ban and unban with its actor, and tells the gateway to close the
// live connections of a newly banned prefix. A ban or unban an operator
// asks for is acknowledged only once its audit line is on disk.
//
// guard imports audit (it emits events) but never gateway or alerting.
package guard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/bans"
	"github.com/portcullis-gw/portcullis/policy/clientip"
	"github.com/portcullis-gw/portcullis/policy/ratelimit"
)

// Lists are the static allow and deny lists (policy/blocklist.Set).
type Lists interface {
	Blocked(a netip.Addr) bool
	Allowed(a netip.Addr) bool
	AllowedWithin(p netip.Prefix) bool // any allow-listed address inside p
}

// Options wire a Guard.
type Options struct {
	Lists      Lists            // allow and deny lists; nil: none
	Limits     *ratelimit.Table // per-address rates and caps; required
	Bans       *bans.Manager    // strikes and bans; required
	IPv6Prefix int              // bits that count as one IPv6 client (64)
	Audit      audit.Sink
	Log        *logrus.Logger
	// Disconnect closes (1008) every live connection inside p, without
	// waiting: it is called from event loops.
	Disconnect func(p netip.Prefix)
	// KernelDropRate is how many refusals per second of one banned prefix
	// move its enforcement into the kernel (KernelDrop); 0: never.
	KernelDropRate int
	// KernelDrop replaces the set of prefixes whose packets the kernel
	// drops before accept (gateway.Server.DropInKernel); it must not block.
	KernelDrop func(prefixes []netip.Prefix)
}

// Guard answers the gateway's accept-stage questions. It is safe for
// simultaneous use by multiple goroutines.
type Guard struct {
	o Options

	// Kernel drops: a banned prefix refused KernelDropRate times within a
	// second is dropped in the kernel until its ban ends. LOCKORDER: dropMu
	// is never held while calling into bans or the audit sink.
	dropMu  sync.Mutex
	refused map[netip.Prefix]*refusals // banned prefixes refused recently; guarded by dropMu
	engaged map[netip.Prefix]time.Time // prefix → when its ban ends; guarded by dropMu
}

// refusals counts one banned prefix's refusals in a one-second window.
type refusals struct {
	start time.Time
	n     int
}

type noLists struct{}

func (noLists) Blocked(netip.Addr) bool         { return false }
func (noLists) Allowed(netip.Addr) bool         { return false }
func (noLists) AllowedWithin(netip.Prefix) bool { return false }

// New returns a Guard.
func New(o Options) (*Guard, error) {
	if o.Limits == nil || o.Bans == nil {
		return nil, fmt.Errorf("guard: Limits and Bans are required")
	}
	if o.Lists == nil {
		o.Lists = noLists{}
	}
	if o.Audit == nil {
		o.Audit = audit.Discard{}
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if o.Disconnect == nil {
		o.Disconnect = func(netip.Prefix) {}
	}
	if o.KernelDrop == nil {
		o.KernelDrop = func([]netip.Prefix) {}
	}
	return &Guard{o: o, refused: make(map[netip.Prefix]*refusals), engaged: make(map[netip.Prefix]time.Time)}, nil
}

// Counted is the prefix addr is limited and banned under.
func (g *Guard) Counted(addr netip.Addr) netip.Prefix { return clientip.Key(addr, g.o.IPv6Prefix) }

// IPv6Prefix is the configured IPv6 client prefix length.
func (g *Guard) IPv6Prefix() int {
	if g.o.IPv6Prefix == 0 {
		return clientip.DefaultIPv6Prefix
	}
	return g.o.IPv6Prefix
}

// Admit decides for a new connection from addr (pipeline step 1, docs/ARCHITECTURE.md): an
// allow-listed address always passes and is never counted; a blocked or
// banned one is refused; with limit, the address's connection rate and
// open-connection cap apply and a success holds a slot until Release.
//
// counted is the prefix a refusal is audited under: the whole banned
// prefix for a ban, else the address's counted key.
func (g *Guard) Admit(addr netip.Addr, limit bool, now time.Time) (refused reason.Reason, retry time.Duration, counted netip.Prefix) {
	if g.o.Lists.Allowed(addr) {
		return reason.None, 0, netip.Prefix{}
	}
	if g.o.Lists.Blocked(addr) {
		return reason.Blocked, 0, g.Counted(addr)
	}
	if b, banned := g.o.Bans.Banned(addr, now); banned {
		g.noteRefusal(b, now)
		return reason.Banned, 0, b.Prefix
	}
	if !limit {
		return reason.None, 0, netip.Prefix{}
	}
	key := g.Counted(addr)
	v := g.o.Limits.Admit(key, now)
	if v.OK() {
		return reason.None, 0, netip.Prefix{}
	}
	return v.Reason(), g.o.Limits.RetryAfter(key, now), key
}

// Release gives back the slot Admit took for addr.
func (g *Guard) Release(addr netip.Addr) {
	if g.o.Lists.Allowed(addr) {
		return
	}
	g.o.Limits.Release(g.Counted(addr))
}

// HoldRefused counts a socket from addr that Admit refused for a rate or
// cap and that stays open until its refusal is answered (429): at most
// ratelimit.RefusedAllowance per counted prefix at once, each counting
// against the prefix's open-connection cap. False means the socket must
// be reset now. Every true must be paired with ReleaseRefused(addr).
func (g *Guard) HoldRefused(addr netip.Addr) bool {
	if g.o.Lists.Allowed(addr) {
		return false // never refused, so never held
	}
	return g.o.Limits.HoldRefused(g.Counted(addr))
}

// ReleaseRefused gives back a socket held by HoldRefused for addr.
func (g *Guard) ReleaseRefused(addr netip.Addr) {
	if g.o.Lists.Allowed(addr) {
		return
	}
	g.o.Limits.ReleaseRefused(g.Counted(addr))
}

// RefundAttempt gives back the connection attempt Admit counted against
// addr's rate at now, for a health probe: a load balancer's probes never
// count toward a refusal or a ban.
func (g *Guard) RefundAttempt(addr netip.Addr, now time.Time) {
	if g.o.Lists.Allowed(addr) {
		return
	}
	g.o.Limits.RefundAttempt(g.Counted(addr), now)
}

// handshakeReasons are the failures that count against an address's
// handshake failure rate.
func isHandshakeFailure(r reason.Reason) bool {
	switch r {
	case reason.HandshakeTimeout, reason.HandshakeTooLarge, reason.BadHandshake, reason.BadOrigin,
		reason.BadSubprotocol, reason.BadPath, reason.ProxyHeader, reason.BadHeader, reason.TLSHandshake:
		return true
	}
	return false
}

// Strike counts failure r against addr (pipeline step 5, docs/ARCHITECTURE.md). Allow-listed
// addresses are never counted. A strike that bans is audited (critical)
// and the prefix's live connections are closed.
//
// It reports whether this strike created an enforced ban (not a dry run),
// so that the caller closes the striking connection at once.
func (g *Guard) Strike(addr netip.Addr, r reason.Reason, now time.Time) bool {
	if !addr.IsValid() || g.o.Lists.Allowed(addr) {
		return false
	}
	if isHandshakeFailure(r) {
		g.o.Limits.HandshakeFailed(g.Counted(addr), now)
	}
	b, banned := g.o.Bans.Strike(addr, r, now)
	if !banned {
		return false
	}
	g.o.Audit.Emit(banEvent(b, addr, now))
	g.banned(b)
	return !b.DryRun
}

// Exempt reports whether addr is allow-listed: never limited, counted or
// banned, and its connections survive a ban of a range around it.
func (g *Guard) Exempt(addr netip.Addr) bool { return g.o.Lists.Allowed(addr) }

// singleAddr is the address of p when p is one address (a /32 or /128),
// else the zero Addr: the ip of a line about p, so that `audit query --ip`
// and the per-file address filters find it.
func singleAddr(p netip.Prefix) netip.Addr {
	if p.IsSingleIP() {
		return p.Addr()
	}
	return netip.Addr{}
}

// banEvent is the audit event of a new ban; ip is the address whose strike
// banned, or the zero Addr for a manual ban.
func banEvent(b bans.Ban, ip netip.Addr, now time.Time) audit.Event {
	detail := fmt.Sprintf("banned for %s until %s (repeat %d)", b.Until.Sub(now).Round(time.Second),
		b.Until.UTC().Format(time.RFC3339), b.Repeat)
	if b.DryRun {
		detail = "dry run, not enforced: would be " + detail
	}
	if b.Note != "" {
		detail = fmt.Sprintf("%q; %s", b.Note, detail)
	}
	if !ip.IsValid() {
		ip = singleAddr(b.Prefix)
	}
	return audit.Event{Time: now, Event: audit.KindBan, Severity: audit.Critical, Stage: audit.StageSystem,
		IP: ip, CountedPrefix: b.Prefix, Reason: b.Reason, Detail: detail, Actor: b.Actor, Strikes: int64(b.Strikes)}
}

// banned logs a new ban and, unless it is a dry run, closes the live
// connections inside it; the caller audits it.
func (g *Guard) banned(b bans.Ban) {
	g.o.Log.WithFields(logrus.Fields{"prefix": b.Prefix.String(), "until": b.Until.UTC().Format(time.RFC3339),
		"reason": b.Reason.String(), "actor": b.Actor, "dry_run": b.DryRun}).Warn("address banned")
	if !b.DryRun {
		g.o.Disconnect(b.Prefix)
	}
}

// Ban bans prefix p for d (0: bantime) on behalf of actor, with the
// operator's note (may be ""): the admin API and `portcullis ban add`. It
// returns once the ban's audit line is on disk; when that cannot be known
// in time (ctx), the ban is in force anyway and the error wraps
// audit.ErrNotDurable.
func (g *Guard) Ban(ctx context.Context, p netip.Prefix, d time.Duration, note, actor string, now time.Time) (bans.Ban, error) {
	if g.o.Lists.Allowed(p.Addr()) {
		return bans.Ban{}, fmt.Errorf("ban %s: %w", p, bans.ErrAllowed)
	}
	b, err := g.o.Bans.Add(p, d, note, actor, now)
	if !b.Prefix.IsValid() {
		return b, err
	}
	// Enforced, saved or not: audit it, and say what failed.
	g.banned(b)
	if aerr := audit.EmitDurable(ctx, g.o.Audit, banEvent(b, netip.Addr{}, now)); aerr != nil {
		err = errors.Join(err, fmt.Errorf("ban %s: %w", b.Prefix, aerr))
	}
	return b, err
}

// Unban lifts the ban of exactly p on behalf of actor. A lifted ban
// returns once its audit line is on disk; when that cannot be known in
// time (ctx), the ban is lifted anyway and the error wraps
// audit.ErrNotDurable.
func (g *Guard) Unban(ctx context.Context, p netip.Prefix, actor string, now time.Time) (bool, error) {
	removed, err := g.o.Bans.Remove(p, actor, now)
	g.release(func(q netip.Prefix, _ time.Time) bool { return q == p })
	if removed {
		e := audit.Event{Time: now, Event: audit.KindUnban, Severity: audit.Notice, Stage: audit.StageAdmin,
			IP: singleAddr(p), CountedPrefix: p, Reason: reason.Manual, Actor: actor, Detail: "ban lifted"}
		if aerr := audit.EmitDurable(ctx, g.o.Audit, e); aerr != nil {
			err = errors.Join(err, fmt.Errorf("unban %s: %w", p, aerr))
		}
	}
	return removed, err
}

// Bans lists the bans in force.
func (g *Guard) Bans(now time.Time) []bans.Ban { return g.o.Bans.List(now) }

// Lifted stops dropping p in the kernel after its ban was lifted
// elsewhere (another node of the cluster; the caller audits it).
func (g *Guard) Lifted(p netip.Prefix) {
	g.release(func(q netip.Prefix, _ time.Time) bool { return q == p })
}

// Sweep forgets expired bans (each audited as `unban` by "expiry") and
// idle limiter entries.
func (g *Guard) Sweep(now time.Time) {
	for _, b := range g.o.Bans.Sweep(now) {
		g.o.Audit.Emit(audit.Event{Time: now, Event: audit.KindUnban, Severity: audit.Notice, Stage: audit.StageSystem,
			IP: singleAddr(b.Prefix), CountedPrefix: b.Prefix, Actor: "expiry", Reason: b.Reason, Detail: "ban ended"})
	}
	g.o.Limits.Sweep(now)
	g.release(func(_ netip.Prefix, until time.Time) bool { return !now.Before(until) })
	g.dropMu.Lock()
	for p, r := range g.refused {
		if now.Sub(r.start) > time.Minute {
			delete(g.refused, p)
		}
	}
	g.dropMu.Unlock()
}

// noteRefusal counts a refusal of banned prefix b and, at KernelDropRate
// refusals within a second, moves b's enforcement into the kernel.
// LOCKORDER: dropMu, then the lists' own (atomic) reads.
func (g *Guard) noteRefusal(b bans.Ban, now time.Time) {
	rate := g.o.KernelDropRate
	if rate <= 0 || b.DryRun {
		return
	}
	g.dropMu.Lock()
	r := g.refused[b.Prefix]
	if r == nil || now.Sub(r.start) >= time.Second {
		if r == nil {
			r = &refusals{}
			g.refused[b.Prefix] = r
		}
		r.start, r.n = now, 0
	}
	r.n++
	_, already := g.engaged[b.Prefix]
	// A range holding an allow-listed address is never dropped in the
	// kernel: the filter cannot tell its allowed addresses apart, the
	// accept stage can.
	engage := r.n >= rate && !already && !g.o.Lists.AllowedWithin(b.Prefix)
	var set []netip.Prefix
	if engage {
		g.engaged[b.Prefix] = b.Until
		set = g.engagedLocked()
	}
	g.dropMu.Unlock()
	if !engage {
		return
	}
	g.o.KernelDrop(set)
	g.o.Audit.Emit(audit.Event{Time: now, Event: audit.KindKernelDrop, Severity: audit.Warning, Stage: audit.StageAccept,
		IP: singleAddr(b.Prefix), CountedPrefix: b.Prefix, Reason: reason.Banned, Count: int64(r.n),
		Detail: fmt.Sprintf("%d refusals within a second: the kernel now drops this banned prefix's connection attempts "+
			"until the ban ends at %s (no answer, no per-attempt audit line)", r.n, b.Until.UTC().Format(time.RFC3339))})
}

// release stops dropping in the kernel the prefixes for which done says
// so, and installs the new set.
func (g *Guard) release(done func(p netip.Prefix, until time.Time) bool) {
	g.dropMu.Lock()
	changed := false
	for p, until := range g.engaged {
		if done(p, until) {
			delete(g.engaged, p)
			delete(g.refused, p)
			changed = true
		}
	}
	set := g.engagedLocked()
	g.dropMu.Unlock()
	if changed {
		g.o.KernelDrop(set)
	}
}

// engagedLocked lists the prefixes dropped in the kernel; dropMu held.
func (g *Guard) engagedLocked() []netip.Prefix {
	set := make([]netip.Prefix, 0, len(g.engaged))
	for p := range g.engaged {
		set = append(set, p)
	}
	return set
}

// Run sweeps every interval until ctx is done.
func (g *Guard) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			g.Sweep(now)
		}
	}
}

// Stats is the guard's part of /v1/stats.
type Stats struct {
	Bans           int    `json:"bans"`             // in force
	BansCreated    uint64 `json:"bans_created"`     // automatic bans since start
	Strikes        uint64 `json:"strikes"`          // strikes counted since start
	StrikeEntries  int    `json:"strike_entries"`   // addresses with strikes in the window
	StrikeEvicted  uint64 `json:"strike_evictions"` // strike entries evicted by the table bound
	PersistErrors  uint64 `json:"ban_persist_errors"`
	LimitEntries   int    `json:"limit_entries"`   // addresses in the limiter table
	LimitEvicted   uint64 `json:"limit_evictions"` // idle limiter entries evicted by the bound
	RefusedRate    uint64 `json:"refused_conn_rate"`
	RefusedPerIP   uint64 `json:"refused_per_ip_connections"`
	RefusedFailing uint64 `json:"refused_handshake_fail_rate"`
}

// Stats returns current counters.
func (g *Guard) Stats() Stats {
	b, l := g.o.Bans.Stats(), g.o.Limits.Stats()
	return Stats{
		Bans: b.Bans, BansCreated: b.BansCreated, Strikes: b.Strikes, StrikeEntries: b.StrikeEntries,
		StrikeEvicted: b.Evictions, PersistErrors: b.PersistErrors,
		LimitEntries: l.Entries, LimitEvicted: l.Evictions,
		RefusedRate: l.Refused[ratelimit.ConnRate], RefusedPerIP: l.Refused[ratelimit.PerIPConns],
		RefusedFailing: l.Refused[ratelimit.HandshakeFails],
	}
}
