package ratelimit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Defaults for a zero Config field (docs/ARCHITECTURE.md and docs/CONFIG.md). Zero never means
// "unlimited".
const (
	DefaultMaxEntries       = 100_000 // keys one Table holds at most
	DefaultPerIPConnections = 50      // open connections per key
)

// RefusedAllowance is how many refused sockets of one key may stay open at
// once waiting for their request, so that the refusal is answered (429 with
// Retry-After) rather than reset: enough for an honest client that retries
// a few times, too few to hold sockets with. Such sockets count against
// the key's PerIPConnections like admitted ones; see HoldRefused.
const RefusedAllowance = 4

// numShards is the number of independently locked parts of a Table:
// 1<<shardBits.
const (
	shardBits = 6
	numShards = 1 << shardBits
)

// sweepBatch is the most entries Sweep removes under one lock hold.
const sweepBatch = 256

// Config tunes a Table. A zero PerIPConnections or MaxEntries means its
// default; a Rate with PerSecond <= 0 disables that check (see Rate).
type Config struct {
	// ConnRate limits connection attempts per key (`limits.conn_rate`).
	ConnRate Rate
	// HandshakeFailRate limits failed handshakes per key
	// (`limits.handshake_fail_rate`); a key over it is refused at accept
	// until its bucket refills.
	HandshakeFailRate Rate
	// PerIPConnections caps open connections per key
	// (`limits.per_ip_connections`); 0 means DefaultPerIPConnections.
	PerIPConnections int
	// MaxEntries caps the keys held (entries, whole table); 0 means
	// DefaultMaxEntries. Memory is about 300 B per entry (measured: 28 MiB
	// for 100,000 entries).
	MaxEntries int
}

// Verdict is a Table's answer. The zero value is Allow.
type Verdict uint8

// Verdicts.
const (
	Allow          Verdict = iota // go ahead
	ConnRate                      // connection attempt rate exceeded (429 / close)
	PerIPConns                    // open connection cap of the key reached
	HandshakeFails                // handshake failure rate exceeded
	// TableFull: the key is new and every held entry has open
	// connections, so none can be evicted; answer 503 as for the global
	// connection cap. Raise MaxEntries above limits.max_connections to
	// make it unreachable.
	TableFull
	InvalidKey // the prefix is not valid: deny (a caller bug)
	numVerdicts
)

var verdictNames = [numVerdicts]string{
	Allow:          "allow",
	ConnRate:       "conn_rate",
	PerIPConns:     "per_ip_connections",
	HandshakeFails: "handshake_fail_rate",
	TableFull:      "table_full",
	InvalidKey:     "invalid_key",
}

// String returns the verdict's metric label.
func (v Verdict) String() string {
	if v < numVerdicts {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// OK reports whether v is Allow.
func (v Verdict) OK() bool { return v == Allow }

// Reason is the reason a refusal is audited and struck under: ConnRate,
// PerIPConnections, HandshakeFailRate, GlobalConnections (TableFull),
// Internal (InvalidKey), or None for Allow.
func (v Verdict) Reason() reason.Reason {
	switch v {
	case Allow:
		return reason.None
	case ConnRate:
		return reason.ConnRate
	case PerIPConns:
		return reason.PerIPConnections
	case HandshakeFails:
		return reason.HandshakeFailRate
	case TableFull:
		return reason.GlobalConnections
	}
	return reason.Internal
}

// Stats is a snapshot of a Table's counters.
type Stats struct {
	Entries   int    // keys held
	Conns     int    // open sockets counted (Admit and HoldRefused minus their releases)
	Evictions uint64 // idle entries dropped to make room for a new key
	Swept     uint64 // idle entries dropped by Sweep
	// Refused counts refusals by verdict (index Verdict; Allow stays 0).
	Refused [numVerdicts]uint64
}

// Table holds the limits of each counted address prefix: a connection
// attempt bucket, a handshake failure bucket and an open connection count.
// It holds at most MaxEntries keys. A new key past that evicts the least
// recently used entry without open connections (of the key's shard, else
// of another shard); entries with open connections are never evicted, and
// if every entry has some, the new key is refused with TableFull.
//
// A Table is safe for simultaneous use by multiple goroutines: it is split
// into 64 shards by a seeded hash of the key, each guarded by its own
// mutex, held only for a map lookup and a bucket update.
//
// LOCKORDER: a shard's mu, then the mutex inside a rate.Limiter of that
// shard. No two shard locks are ever held at once.
type Table struct {
	connRate   Rate
	failRate   Rate
	perIP      int32
	maxEntries int64
	ttl        int64     // nanoseconds after which an untouched entry's buckets are full
	seed       [2]uint64 // shardIndex key

	n       atomic.Int64  // entries held, plus slots reserved by inserts in flight
	invalid atomic.Uint64 // InvalidKey refusals

	shards [numShards]shard
}

type shard struct {
	mu sync.Mutex
	// guarded by mu:
	m          map[netip.Prefix]*entry
	head, tail *entry // entries without open connections, most recently used first
	conns      int
	evictions  uint64
	swept      uint64
	refused    [numVerdicts]uint64
	_          [64]byte // keep neighbouring shards' locks off one cache line
}

// entry is one key's state, guarded by its shard's mu. It is on the
// shard's idle list exactly when conns == 0.
type entry struct {
	key        netip.Prefix
	prev, next *entry        // idle list links
	conn       *rate.Limiter // attempts; nil: full bucket
	fail       *rate.Limiter // handshake failures; nil: full bucket
	last       int64         // latest Admit/HandshakeFailed, Unix ns
	conns      int32         // open sockets: admitted ones and refused ones held
	refused    int32         // of conns, refused sockets held by HoldRefused
}

// NewTable returns an empty Table for cfg, or an error naming the bad
// field.
func NewTable(cfg Config) (*Table, error) {
	var errs []error
	if err := cfg.ConnRate.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("conn rate: %w", err))
	}
	if err := cfg.HandshakeFailRate.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("handshake fail rate: %w", err))
	}
	switch {
	case cfg.PerIPConnections == 0:
		cfg.PerIPConnections = DefaultPerIPConnections
	case cfg.PerIPConnections < 0 || cfg.PerIPConnections > math.MaxInt32:
		errs = append(errs, fmt.Errorf("ratelimit: per-IP connections %d: must be between 1 and %d (0 means %d)",
			cfg.PerIPConnections, math.MaxInt32, DefaultPerIPConnections))
	}
	switch {
	case cfg.MaxEntries == 0:
		cfg.MaxEntries = DefaultMaxEntries
	case cfg.MaxEntries < 0:
		errs = append(errs, fmt.Errorf("ratelimit: max entries %d: must be positive (0 means %d)",
			cfg.MaxEntries, DefaultMaxEntries))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ratelimit: new table: %w", err)
	}
	t := &Table{
		connRate:   cfg.ConnRate,
		failRate:   cfg.HandshakeFailRate,
		perIP:      int32(cfg.PerIPConnections),
		maxEntries: int64(cfg.MaxEntries),
		ttl:        int64(max(cfg.ConnRate.refill(), cfg.HandshakeFailRate.refill())),
		seed:       [2]uint64{rand.Uint64() | 1, rand.Uint64() | 1},
	}
	for i := range t.shards {
		t.shards[i].m = make(map[netip.Prefix]*entry)
	}
	return t, nil
}

// MaxEntries is the most keys t holds.
func (t *Table) MaxEntries() int { return int(t.maxEntries) }

// Len is the number of keys t holds.
func (t *Table) Len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// decide runs f on p's entry under its shard's lock (TableFull when no
// entry can be had, InvalidKey for an invalid p) and counts the verdict.
func (t *Table) decide(p netip.Prefix, f func(s *shard, e *entry) Verdict) Verdict {
	if !p.IsValid() {
		t.invalid.Add(1)
		return InvalidKey
	}
	s := t.shard(p)
	s.mu.Lock()
	v := TableFull
	if e := t.getLocked(s, p); e != nil {
		v = f(s, e)
	}
	s.refused[v]++
	s.mu.Unlock()
	return v
}

// Admit decides a connection attempt from p at now, the accept path's
// single call, under one lock: HandshakeFails while p's handshake failure
// bucket is empty (nothing is taken from it), else ConnRate if p's attempt
// bucket is empty (one token is taken when it is not), else PerIPConns
// when p already has PerIPConnections open sockets (refused ones held by
// HoldRefused included), else Allow, counting one more open connection of
// p. On Allow the caller holds it and must Release it; a refused attempt
// holds nothing (but did take its attempt token, as every attempt counts)
// unless the caller then holds it with HoldRefused.
func (t *Table) Admit(p netip.Prefix, now time.Time) Verdict {
	return t.decide(p, func(s *shard, e *entry) Verdict {
		if v := t.allowLocked(s, e, now); v != Allow {
			return v
		}
		return t.acquireLocked(s, e)
	})
}

// Release gives back one open connection of p taken by Admit. A Release
// without a matching Admit is ignored.

// RefundAttempt gives back the attempt token that Admit took from p's
// attempt bucket at now, for an attempt that must not count (a health
// probe of a load balancer): the bucket gains one token, but never
// beyond full, and only while a full token fits.
func (t *Table) RefundAttempt(p netip.Prefix, now time.Time) {
	if !p.IsValid() || !t.connRate.Enabled() {
		return
	}
	s := t.shard(p)
	s.mu.Lock()
	if e := s.m[p]; e != nil && e.conn != nil && e.conn.TokensAt(now) <= float64(e.conn.Burst()-1) {
		e.conn.AllowN(now, -1) // a negative take puts a token back
	}
	s.mu.Unlock()
}
func (t *Table) Release(p netip.Prefix) {
	t.release(p, false)
}

// HoldRefused counts one more open socket of p that Admit refused and that
// stays open until its refusal is answered. It reports false, holding
// nothing, when p already holds RefusedAllowance such sockets or no entry
// can be had (TableFull, an invalid p): the caller then resets the socket
// at once. A held socket counts against p's PerIPConnections until
// ReleaseRefused(p), which every true must be paired with.
func (t *Table) HoldRefused(p netip.Prefix) bool {
	if !p.IsValid() {
		return false
	}
	s := t.shard(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := t.getLocked(s, p)
	if e == nil || e.refused >= RefusedAllowance {
		return false
	}
	if e.conns == 0 {
		s.unlink(e)
	}
	e.conns++
	e.refused++
	s.conns++
	return true
}

// ReleaseRefused gives back a socket held by HoldRefused. One without a
// matching HoldRefused is ignored.
func (t *Table) ReleaseRefused(p netip.Prefix) {
	t.release(p, true)
}

// release gives back one open socket of p: a refused one held by
// HoldRefused, else an admitted one.
func (t *Table) release(p netip.Prefix, refused bool) {
	if !p.IsValid() {
		return
	}
	s := t.shard(p)
	s.mu.Lock()
	if e := s.m[p]; e != nil && e.conns > 0 && (!refused || e.refused > 0) && (refused || e.conns > e.refused) {
		e.conns--
		if refused {
			e.refused--
		}
		s.conns--
		if e.conns == 0 {
			s.pushFront(e)
		}
	}
	s.mu.Unlock()
}

// HandshakeFailed counts one failed handshake of p at now. It returns
// HandshakeFails once p's failure rate is exceeded (this failure found the
// bucket empty), Allow while it is within the rate. From then on
// Admit refuses p until its failure bucket has a token again.
func (t *Table) HandshakeFailed(p netip.Prefix, now time.Time) Verdict {
	if p.IsValid() && !t.failRate.Enabled() {
		return Allow
	}
	return t.decide(p, func(s *shard, e *entry) Verdict {
		s.touch(e, now)
		if e.fail == nil {
			e.fail = t.failRate.NewLimiter()
		}
		if !e.fail.AllowN(now, 1) {
			return HandshakeFails
		}
		return Allow
	})
}

// RetryAfter is how long from now until Admit would let p try again
// (zero if it would now), for a Retry-After header.
func (t *Table) RetryAfter(p netip.Prefix, now time.Time) time.Duration {
	if !p.IsValid() {
		return 0
	}
	s := t.shard(p)
	s.mu.Lock()
	var d time.Duration
	if e := s.m[p]; e != nil {
		d = max(wait(e.conn, t.connRate, now), wait(e.fail, t.failRate, now))
	}
	s.mu.Unlock()
	return d
}

// wait is how long until l has one token.
func wait(l *rate.Limiter, r Rate, now time.Time) time.Duration {
	if l == nil || !r.Enabled() {
		return 0
	}
	missing := 1 - l.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(math.Ceil(missing / r.PerSecond * float64(time.Second)))
}

// Sweep drops the entries without open connections that were not asked
// about for long enough that their buckets are full again, as a new entry
// would be: dropping them changes no decision. It returns how many it
// dropped. Call it now and then (every minute, say); it holds each shard
// lock for at most a small batch of entries.
func (t *Table) Sweep(now time.Time) int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		for {
			s.mu.Lock()
			k := 0
			for k < sweepBatch && s.tail != nil && t.expired(s.tail, now) {
				s.remove(s.tail)
				k++
			}
			s.swept += uint64(k)
			s.mu.Unlock()
			t.n.Add(-int64(k))
			n += k
			if k < sweepBatch {
				break
			}
		}
	}
	return n
}

// expired reports whether idle entry e may be dropped at now. Requires
// that its shard's mu is held.
func (t *Table) expired(e *entry, now time.Time) bool {
	return now.UnixNano()-e.last >= t.ttl && Idle(e.conn, now) && Idle(e.fail, now)
}

// Stats returns a snapshot of t's counters.
func (t *Table) Stats() Stats {
	var st Stats
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		st.Entries += len(s.m)
		st.Conns += s.conns
		st.Evictions += s.evictions
		st.Swept += s.swept
		for v := ConnRate; v < numVerdicts; v++ {
			st.Refused[v] += s.refused[v]
		}
		s.mu.Unlock()
	}
	st.Refused[InvalidKey] += t.invalid.Load()
	return st
}

func (t *Table) shard(p netip.Prefix) *shard {
	return &t.shards[t.shardIndex(p)]
}

// shardIndex is a keyed hash of p (wyhash's multiply-fold of the address
// halves under two random words) reduced to a shard index, so that
// nobody can aim keys at one shard. The reduction takes the top bits of a
// Fibonacci multiply of the fold, not its low bits: for IPv6 /64 keys the
// low half is the same for every key, and the fold's low bits then depend
// on few key bits, so some seeds spread keys unevenly.
func (t *Table) shardIndex(p netip.Prefix) int {
	a := p.Addr().As16()
	hi := binary.BigEndian.Uint64(a[:8]) ^ t.seed[0]
	lo := binary.BigEndian.Uint64(a[8:]) ^ t.seed[1] ^ uint64(p.Bits())
	h1, h0 := bits.Mul64(hi, lo)
	return int(((h1 ^ h0) * 0x9E3779B97F4A7C15) >> (64 - shardBits))
}

// allowLocked decides an attempt of e's key at now (Admit's rates).
// Requires that s.mu is held.
func (t *Table) allowLocked(s *shard, e *entry, now time.Time) Verdict {
	s.touch(e, now)
	if e.fail != nil && t.failRate.Enabled() && e.fail.TokensAt(now) < 1 {
		return HandshakeFails
	}
	if !t.connRate.Enabled() {
		return Allow
	}
	if e.conn == nil {
		e.conn = t.connRate.NewLimiter()
	}
	if !e.conn.AllowN(now, 1) {
		return ConnRate
	}
	return Allow
}

// acquireLocked counts one more open connection of e's key, or refuses
// with PerIPConns at the cap (Admit's). Requires that s.mu is held.
func (t *Table) acquireLocked(s *shard, e *entry) Verdict {
	if e.conns >= t.perIP {
		return PerIPConns
	}
	if e.conns == 0 {
		s.unlink(e)
	}
	e.conns++
	s.conns++
	return Allow
}

// getLocked returns p's entry, inserting it if needed, or nil when the
// table is full of entries with open connections. Requires that s.mu is
// held; it may release and reacquire it.
func (t *Table) getLocked(s *shard, p netip.Prefix) *entry {
	if e := s.m[p]; e != nil {
		return e
	}
	var e *entry
	if !t.reserve() {
		if e = s.evictLocked(); e == nil {
			// Every entry of s has open connections: take the slot of an
			// idle entry of another shard, holding no two locks at once.
			s.mu.Unlock()
			ok := t.steal(s)
			s.mu.Lock()
			if !ok {
				return nil
			}
			if e := s.m[p]; e != nil { // inserted meanwhile: give the slot back
				t.n.Add(-1)
				return e
			}
		}
	}
	if e == nil {
		e = new(entry)
	}
	*e = entry{key: p} // an evicted entry is reused: nothing else refers to it
	s.m[p] = e
	s.pushFront(e)
	return e
}

// reserve takes a free slot if the table is below MaxEntries.
func (t *Table) reserve() bool {
	for {
		n := t.n.Load()
		if n >= t.maxEntries {
			return false
		}
		if t.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// steal reserves a slot for an insert into s, by evicting an idle entry
// of another shard if the table is full. Requires that no shard lock is
// held.
func (t *Table) steal(s *shard) bool {
	if t.reserve() {
		return true
	}
	first := t.indexOf(s)
	for i := 1; i < numShards; i++ {
		o := &t.shards[(first+i)%numShards]
		o.mu.Lock()
		e := o.evictLocked()
		o.mu.Unlock()
		if e != nil {
			return true
		}
	}
	return t.reserve()
}

func (t *Table) indexOf(s *shard) int {
	for i := range t.shards {
		if &t.shards[i] == s {
			return i
		}
	}
	panic("ratelimit: shard not of this table")
}

// touch marks e as used at now. Requires that s.mu is held.
func (s *shard) touch(e *entry, now time.Time) {
	if ns := now.UnixNano(); ns > e.last {
		e.last = ns
	}
	if e.conns == 0 && s.head != e {
		s.unlink(e)
		s.pushFront(e)
	}
}

// evictLocked drops the least recently used entry without open
// connections and returns it, keeping its slot for the caller's insert;
// nil if there is none. Requires that s.mu is held.
func (s *shard) evictLocked() *entry {
	e := s.tail
	if e == nil {
		return nil
	}
	s.remove(e)
	s.evictions++
	return e
}

// remove deletes idle entry e from s. Requires that s.mu is held.
func (s *shard) remove(e *entry) {
	s.unlink(e)
	delete(s.m, e.key)
}

// pushFront puts e first on the idle list. Requires that s.mu is held and
// that e is not on the list.
func (s *shard) pushFront(e *entry) {
	e.prev = nil
	e.next = s.head
	if s.head != nil {
		s.head.prev = e
	} else {
		s.tail = e
	}
	s.head = e
}

// unlink takes e off the idle list. Requires that s.mu is held and that e
// is on the list.
func (s *shard) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
}
