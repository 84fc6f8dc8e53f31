// Package bans owns fail2ban-style automatic bans (docs/ARCHITECTURE.md):
// weighted strikes per client key (IPv4 /32, IPv6 /64 by default) within a
// sliding FindTime; MaxRetry strike weight bans for BanTime; each repeat ban
// within the repeat history lasts Factor times longer, capped by MaxTime.
// It also holds manual bans of any prefix (the admin API and `portcullis ban`),
// answers the accept-time question "is this address banned?" cheaply,
// and keeps bans and repeat history in a bbolt file (`<data>/state.db`) so
// they survive a restart with their remaining time.
//
// The package decides; it does not act or report. Callers close connections,
// write audit events (`ban`, `unban`, `admin`) and send alerts from the values
// it returns. It never imports gateway, audit or alerting (only the shared
// vocabulary audit/reason, which imports nothing).
//
// Time is always a parameter (`now time.Time`): the package reads no clock
// and starts no timer. Expired bans stop matching at once; Sweep forgets them.
package bans

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/portcullis-gw/portcullis/policy/statefile"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/clientip"
)

// ActorAuto is the Actor of bans created by strikes.
const ActorAuto = "auto"

// MaxTextLen caps a manual ban's note and actor, in bytes.
const MaxTextLen = 256

// Broadest prefixes a manual ban may name: wider ranges belong in the
// configured block list, not in a command typed under pressure.
const (
	MinBitsIPv4 = 8
	MinBitsIPv6 = 16
)

var (
	// ErrClosed is returned by Add and Remove after Close.
	ErrClosed = errors.New("bans: manager closed")
	// ErrAllowed is returned by Add for the client key or single address
	// of an allow-listed address.
	ErrAllowed = errors.New("address is allow-listed")
)

// Ban is one ban. Values are copies: changing one changes nothing.
type Ban struct {
	Prefix  netip.Prefix  // banned range: a client key, or any manual prefix
	Until   time.Time     // the ban ends at Until (exclusive)
	Reason  reason.Reason // auto: the reason of the strike that banned; manual: reason.Manual
	Note    string        // manual: the operator's text, "" if none
	Actor   string        // ActorAuto, or the admin actor of a manual ban
	Strikes int           // strike weight that caused an automatic ban; 0 if manual
	Repeat  int           // previous bans in the repeat history: 0 for the first ban
	Created time.Time
	DryRun  bool // reported but not enforced nor saved (Config.DryRun)
}

// Remaining is how long b still runs at now (0 once it has ended).
func (b Ban) Remaining(now time.Time) time.Duration {
	return max(b.Until.Sub(now), 0)
}

// history is the repeat history of one key: bans so far, forgotten at forget.
type history struct {
	count  int
	forget time.Time
}

// Manager counts strikes and holds bans. It is safe for concurrent use by
// multiple goroutines; Banned never waits for mu.
//
// LOCKORDER: wmu → mu → shard.mu. mu guards the tables and serializes
// writers of the ban index; a shard's RWMutex only lets Banned read it
// while mu's holder writes it. wmu serializes writes to the state file so
// that the newest state is always written last.
type Manager struct {
	cfg     Config
	weights [256]int32
	allowed func(netip.Addr) bool
	path    string

	keys  keyIndex                     // enforced client-key bans; written under mu
	cidrs atomic.Pointer[cidrSnapshot] // enforced other bans; replaced under mu

	allowedStrikes atomic.Uint64

	mu             sync.Mutex
	bans           map[netip.Prefix]*Ban     // guarded by mu; *Ban immutable
	history        map[netip.Prefix]history  // guarded by mu
	strikes        *strikeTable              // guarded by mu
	dirty          map[netip.Prefix]struct{} // keys whose saved state is stale; guarded by mu
	banEnds        deadlines                 // when bans end; guarded by mu
	historyEnds    deadlines                 // when history is forgotten; guarded by mu
	closed         bool                      // guarded by mu
	nStrikes       uint64                    // guarded by mu
	nCreated       uint64                    // guarded by mu
	persistErrors  uint64                    // guarded by mu
	lastPersistErr string                    // guarded by mu
	restored       int                       // set by Open
	restoreDropped int                       // set by Open

	// changes carries the bans this node created or lifted to the
	// cluster (cluster.go); nil: this node alone. Sent to under mu,
	// never blocking: a full channel drops the change and counts it.
	changes        chan Change
	changesDropped atomic.Uint64

	wmu      sync.Mutex
	db       *bolt.DB // nil: in memory only
	dbClosed bool     // guarded by wmu

	wake      chan struct{} // a flush is wanted (capacity 1)
	quit      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Open returns a Manager configured by cfg. With a non-empty path it opens
// (or creates, mode 0600) the bbolt state file there and restores, as of now,
// the bans still running (dropping expired and allow-listed ones) and the
// repeat history not yet forgotten. path "" keeps everything in memory.
//
// Bans are saved when they are created or removed, never per strike. A ban
// created by Strike is written by a background goroutine, so that a ban storm
// costs one fsync per batch and never blocks the caller; Add and Remove write
// before they return; Close writes whatever is left.
func Open(path string, cfg Config, now time.Time) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := &Manager{
		cfg:     cfg,
		weights: weightTable(cfg.Weights),
		allowed: cfg.Allowed,
		path:    path,
		bans:    make(map[netip.Prefix]*Ban),
		history: make(map[netip.Prefix]history),
		strikes: newStrikeTable(cfg.MaxStrikeEntries, cfg.MaxRetry),
		dirty:   make(map[netip.Prefix]struct{}),
	}
	if m.allowed == nil {
		m.allowed = func(netip.Addr) bool { return false }
	}
	m.cidrs.Store(emptyCIDRs)
	if path == "" {
		return m, nil
	}
	db, err := statefile.Open(path, statefile.Spec{What: "state db", Meta: bucketMeta, Version: storeVersion,
		Buckets: [][]byte{bucketBans, bucketHistory}, Hint: "move it aside to start without saved bans"})
	if err != nil {
		return nil, fmt.Errorf("bans: %w", err)
	}
	m.db = db
	if err := m.restore(now); err != nil {
		_ = db.Close()
		return nil, err
	}
	m.mu.Lock()
	for _, b := range m.bans {
		if m.isExact(b.Prefix) {
			m.keys.put(b)
		}
	}
	m.cidrs.Store(buildCIDRs(m.bans, m.isExact))
	m.mu.Unlock()
	m.wake = make(chan struct{}, 1)
	m.quit = make(chan struct{})
	m.done = make(chan struct{})
	go m.writer()
	return m, nil
}

// DryRun reports whether automatic bans are only reported (Config.DryRun).
func (m *Manager) DryRun() bool { return m.cfg.DryRun }

// Config returns the configuration in effect, defaults filled in.
func (m *Manager) Config() Config { return m.cfg }

// Key is the prefix addr is counted and banned under.
func (m *Manager) Key(addr netip.Addr) netip.Prefix {
	return clientip.Key(addr, m.cfg.IPv6Prefix)
}

// Weight is the strike weight of r (0: not counted).
func (m *Manager) Weight(r reason.Reason) int { return int(m.weights[r]) }

// Strike counts a failure of reason r from addr at now. It returns the new
// ban and true only on the strike that creates it; in dry-run mode that ban
// has DryRun set and is not enforced. Strikes of weight 0, from allow-listed
// or invalid addresses, or from an address already banned, are not counted.
// No file I/O happens here.
func (m *Manager) Strike(addr netip.Addr, r reason.Reason, now time.Time) (Ban, bool) {
	w := m.weights[r]
	if w <= 0 || !addr.IsValid() {
		return Ban{}, false
	}
	addr = addr.Unmap().WithZone("")
	if m.allowed(addr) {
		m.allowedStrikes.Add(1)
		return Ban{}, false
	}
	key := clientip.Key(addr, m.cfg.IPv6Prefix)
	// A banned address is refused at accept; late failures of its
	// connections being closed do not count towards the next ban.
	if m.lookup(addr, key, now) != nil {
		return Ban{}, false
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if b := m.bans[key]; b != nil && now.Before(b.Until) { // dry-run bans
		return Ban{}, false
	}
	m.nStrikes++
	at := now.UnixNano()
	sum := m.strikes.get(key).add(at, at-int64(m.cfg.FindTime), w)
	if sum < m.cfg.MaxRetry {
		return Ban{}, false
	}
	m.strikes.remove(key)
	n := 0
	if h, ok := m.history[key]; ok && now.Before(h.forget) {
		n = h.count
	}
	b := &Ban{
		Prefix:  key,
		Until:   now.Add(m.banDuration(n)),
		Reason:  r,
		Actor:   ActorAuto,
		Strikes: sum,
		Repeat:  n,
		Created: now,
		DryRun:  m.cfg.DryRun,
	}
	m.setHistory(key, history{count: n + 1, forget: b.Until.Add(m.cfg.RepeatTime)})
	m.setBan(b)
	m.nCreated++
	if !b.DryRun {
		m.publish(b)
		m.markDirty(key)
		m.kick()
		m.replicate(b, false)
	}
	return *b, true
}

// banDuration is BanTime × Factor^n, capped at MaxTime.
func (m *Manager) banDuration(n int) time.Duration {
	f := float64(m.cfg.BanTime) * math.Pow(m.cfg.Factor, float64(n))
	if !(f < float64(m.cfg.MaxTime)) { // also +Inf
		return m.cfg.MaxTime
	}
	return time.Duration(f)
}

// Banned reports the enforced ban covering addr at now: a ban of its client
// key or a manual prefix containing it. Allow-listed addresses are never
// banned, and an invalid address is not banned (the caller refuses it on its
// own grounds). It allocates nothing and takes at most one read lock of one
// of 256 shards (never Manager's lock); the allow-list is consulted only on
// a match. With nothing banned it is two atomic loads.
func (m *Manager) Banned(addr netip.Addr, now time.Time) (Ban, bool) {
	if !addr.IsValid() || (m.keys.n.Load() == 0 && m.cidrs.Load() == emptyCIDRs) {
		return Ban{}, false
	}
	addr = addr.Unmap().WithZone("")
	b := m.lookup(addr, clientip.Key(addr, m.cfg.IPv6Prefix), now)
	if b == nil || m.allowed(addr) {
		return Ban{}, false
	}
	return *b, true
}

// lookup returns the enforced ban in force at now covering addr (unmapped,
// without zone), whose client key is key, or nil. It takes no lock but a
// shard's read lock.
func (m *Manager) lookup(addr netip.Addr, key netip.Prefix, now time.Time) *Ban {
	if m.keys.n.Load() > 0 {
		if b := m.keys.get(key); b != nil && now.Before(b.Until) {
			return b
		}
	}
	if c := m.cidrs.Load(); c != emptyCIDRs {
		return c.lookup(addr, now)
	}
	return nil
}

// Add bans prefix p for d from now on behalf of actor (required, for the
// audit trail), replacing any ban of exactly p and clearing the strikes
// inside p. d 0 means BanTime; manual bans are not capped by MaxTime and do
// not count as repeats. Its Reason is reason.Manual; note is the
// operator's text, if any. The ban is saved before Add returns; if saving
// fails it is still enforced and the error says so.
func (m *Manager) Add(p netip.Prefix, d time.Duration, note, actor string, now time.Time) (Ban, error) {
	p, err := normalize(p)
	if err != nil {
		return Ban{}, err
	}
	if p.Bits() < MinBitsIPv4 || (p.Addr().Is6() && p.Bits() < MinBitsIPv6) {
		return Ban{}, fmt.Errorf("bans: prefix %s is too broad for a ban (at least /%d for IPv4, /%d for IPv6)", p, MinBitsIPv4, MinBitsIPv6)
	}
	if d < 0 {
		return Ban{}, fmt.Errorf("bans: ban of %s: negative duration %s", p, d)
	}
	if d == 0 {
		d = m.cfg.BanTime
	}
	if err := checkText("note", note); err != nil {
		return Ban{}, err
	}
	if err := checkActor(actor); err != nil {
		return Ban{}, err
	}
	if m.allowedKey(p) {
		return Ban{}, fmt.Errorf("bans: ban of %s: %w", p, ErrAllowed)
	}
	b := &Ban{Prefix: p, Until: now.Add(d), Reason: reason.Manual, Note: note, Actor: actor, Created: now}

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Ban{}, ErrClosed
	}
	m.setBan(b)
	m.clearStrikes(p)
	m.publish(b)
	m.markDirty(p)
	m.replicate(b, false)
	m.mu.Unlock()

	if err := m.flush(); err != nil {
		return *b, fmt.Errorf("bans: %s is banned but not saved: %w", p, err)
	}
	return *b, nil
}

// Remove lifts the ban of exactly prefix p (an address means its client key,
// as ParsePrefix gives it) on behalf of actor, and clears the strikes inside
// p. Repeat history is kept: a later automatic ban still grows. It reports
// whether a ban in force at now was removed; a ban of a wider prefix that
// contains p is not touched. The change is saved before Remove returns.
func (m *Manager) Remove(p netip.Prefix, actor string, now time.Time) (bool, error) {
	p, err := normalize(p)
	if err != nil {
		return false, err
	}
	if err := checkActor(actor); err != nil {
		return false, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return false, ErrClosed
	}
	b := m.bans[p]
	m.clearStrikes(p)
	if b != nil {
		delete(m.bans, p)
		if !b.DryRun {
			m.unpublish(b)
			m.markDirty(p)
			m.replicate(b, true)
		}
	}
	m.mu.Unlock()
	if b == nil {
		return false, nil
	}
	if err := m.flush(); err != nil {
		return now.Before(b.Until), fmt.Errorf("bans: ban of %s lifted but not saved: %w", p, err)
	}
	return now.Before(b.Until), nil
}

// List returns the bans in force at now, dry-run ones included, sorted by
// Until (then by prefix).
func (m *Manager) List(now time.Time) []Ban {
	m.mu.Lock()
	out := make([]Ban, 0, len(m.bans))
	for _, b := range m.bans {
		if now.Before(b.Until) {
			out = append(out, *b)
		}
	}
	m.mu.Unlock()
	sortBans(out)
	return out
}

// Sweep forgets the bans that ended at or before now and returns them sorted
// by Until (the caller audits each as `unban` by "expiry"). It also forgets
// repeat history and strikes that have aged out. Its work is proportional to
// what ended, not to what is held. Call it periodically, e.g. every few
// seconds; an ended ban stops matching at once, Sweep or not.
func (m *Manager) Sweep(now time.Time) (expired []Ban) {
	m.mu.Lock()
	cidrChanged := false
	at := now.UnixNano()
	for {
		d, ok := m.banEnds.popDue(at)
		if !ok {
			break
		}
		b := m.bans[d.p]
		if b != d.b { // replaced or removed since
			continue
		}
		p := d.p
		expired = append(expired, *b)
		delete(m.bans, p)
		if !b.DryRun {
			if m.isExact(p) {
				m.keys.del(p)
			} else {
				cidrChanged = true
			}
			m.markDirty(p)
		}
	}
	for {
		d, ok := m.historyEnds.popDue(at)
		if !ok {
			break
		}
		if h, ok := m.history[d.p]; !ok || h.forget.UnixNano() != d.at {
			continue // forgotten or extended since
		}
		delete(m.history, d.p)
		if !m.cfg.DryRun {
			m.markDirty(d.p)
		}
	}
	m.strikes.expire(at - int64(m.cfg.FindTime))
	if cidrChanged {
		m.cidrs.Store(buildCIDRs(m.bans, m.isExact))
	}
	if len(m.dirty) > 0 {
		m.kick()
	}
	m.mu.Unlock()
	sortBans(expired)
	return expired
}

// Stats is a point-in-time view of a Manager.
type Stats struct {
	Bans             int    // enforced bans held, ended ones not yet swept included
	DryRunBans       int    // dry-run bans held
	History          int    // keys with repeat history
	StrikeEntries    int    // keys with strikes in the strike table
	Strikes          uint64 // strikes counted
	AllowedStrikes   uint64 // strikes ignored because the address is allow-listed
	BansCreated      uint64 // automatic bans created (dry-run ones included)
	Evictions        uint64 // strike entries evicted by MaxStrikeEntries
	Pending          int    // keys whose change is not yet saved
	PersistErrors    uint64 // failed writes to the state file
	LastPersistError string // the latest of them, "" if none
	Restored         int    // bans restored by Open
	RestoreDropped   int    // saved bans Open dropped: ended, allow-listed or unreadable
}

// Stats returns counters and table sizes.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Stats{
		History:          len(m.history),
		StrikeEntries:    len(m.strikes.m),
		Strikes:          m.nStrikes,
		AllowedStrikes:   m.allowedStrikes.Load(),
		BansCreated:      m.nCreated,
		Evictions:        m.strikes.evictions,
		Pending:          len(m.dirty),
		PersistErrors:    m.persistErrors,
		LastPersistError: m.lastPersistErr,
		Restored:         m.restored,
		RestoreDropped:   m.restoreDropped,
	}
	for _, b := range m.bans {
		if b.DryRun {
			s.DryRunBans++
		} else {
			s.Bans++
		}
	}
	return s
}

// Close saves pending changes and closes the state file. Strike, Banned,
// List and Sweep keep working in memory afterwards; Add and Remove return
// ErrClosed. Close is idempotent.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		if m.db == nil {
			return
		}
		close(m.quit)
		<-m.done
		err := m.flush()
		m.wmu.Lock()
		m.dbClosed = true
		if cerr := m.db.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("bans: close state db %s: %w", m.path, cerr))
		}
		m.wmu.Unlock()
		m.closeErr = err
	})
	return m.closeErr
}

// setBan stores b and schedules its end. Requires mu.
func (m *Manager) setBan(b *Ban) {
	m.bans[b.Prefix] = b
	m.banEnds.push(deadline{at: b.Until.UnixNano(), p: b.Prefix, b: b})
}

// setHistory stores p's repeat history and schedules forgetting it.
// Requires mu.
func (m *Manager) setHistory(p netip.Prefix, h history) {
	m.history[p] = h
	m.historyEnds.push(deadline{at: h.forget.UnixNano(), p: p})
}

// isExact reports whether p is a client key, looked up by exact match.
func (m *Manager) isExact(p netip.Prefix) bool {
	if p.Addr().Is4() {
		return p.Bits() == 32
	}
	return p.Bits() == m.cfg.IPv6Prefix
}

// allowedKey reports whether p is one client key (or a single address)
// whose address is allow-listed. Wider prefixes may hold allow-listed
// addresses: Banned exempts those one by one.
func (m *Manager) allowedKey(p netip.Prefix) bool {
	return (m.isExact(p) || p.IsSingleIP()) && m.allowed(p.Addr())
}

// publish makes b, just stored in m.bans, visible to Banned. Requires mu.
func (m *Manager) publish(b *Ban) {
	if b.DryRun {
		return
	}
	if m.isExact(b.Prefix) {
		m.keys.put(b)
		return
	}
	m.cidrs.Store(buildCIDRs(m.bans, m.isExact))
}

// unpublish hides b, just deleted from m.bans, from Banned. Requires mu.
func (m *Manager) unpublish(b *Ban) {
	if m.isExact(b.Prefix) {
		m.keys.del(b.Prefix)
		return
	}
	m.cidrs.Store(buildCIDRs(m.bans, m.isExact))
}

// clearStrikes forgets the strikes inside p. Requires mu.
func (m *Manager) clearStrikes(p netip.Prefix) {
	if m.isExact(p) {
		m.strikes.remove(p)
		return
	}
	m.strikes.removeOverlapping(p)
}

// markDirty records that p's saved state is stale. Requires mu.
func (m *Manager) markDirty(p netip.Prefix) {
	if m.db != nil && !m.closed {
		m.dirty[p] = struct{}{}
	}
}

// kick wakes the writer goroutine without blocking.
func (m *Manager) kick() {
	if m.wake == nil {
		return
	}
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// writer saves changes in batches until Close.
func (m *Manager) writer() {
	defer close(m.done)
	for {
		select {
		case <-m.wake:
			_ = m.flush() // counted in Stats; retried with the next flush
		case <-m.quit:
			return
		}
	}
}

func sortBans(bs []Ban) {
	slices.SortFunc(bs, func(a, b Ban) int {
		if c := a.Until.Compare(b.Until); c != 0 {
			return c
		}
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
}

// normalize validates p and returns it masked, IPv4-mapped prefixes as IPv4.
func normalize(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("bans: invalid prefix %q", p.String())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

func checkActor(actor string) error {
	if actor == "" {
		return errors.New("bans: actor is required")
	}
	return checkText("actor", actor)
}

// checkText refuses text that would be awkward in the audit trail, a shell
// or a mail: too long, not UTF-8, or with control characters.
func checkText(what, s string) error {
	if len(s) > MaxTextLen {
		return fmt.Errorf("bans: %s is %d bytes, more than %d", what, len(s), MaxTextLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("bans: %s %q is not UTF-8", what, s)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("bans: %s %q contains a control character", what, s)
		}
	}
	return nil
}
