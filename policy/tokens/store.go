// Package tokens is the `store` token source of docs/CONFIG.md: the gateway mints
// one-use tokens bound to a user (and optionally to topics), keeps only their
// SHA-256 digests, and lets exactly one connection redeem each of them.
//
// It imports nothing from gateway, audit or alerting.
package tokens

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// TokenBytes is the number of random bytes in a token: 192 bits, above the
// 128-bit floor of docs/CONFIG.md. Encoded with unpadded URL-safe base64 (32 chars).
const TokenBytes = 24

// ErrFull is returned by Mint when the table holds MaxEntries live tokens.
var ErrFull = errors.New("token table full")

// Grant is what a redeemed token proves. Grants are created at Mint and
// shared: callers must treat them as read-only.
//
// A Grant is held for every live token and by every connection that
// redeemed one, so it is kept to 48 bytes: the user id and the fingerprint
// share one string, and the topics are one string too.
type Grant struct {
	userFP  string // the user id, then the 8-hex-digit token fingerprint
	topics  string // the topics or patterns it is bound to, space-separated; "": any
	Expires int64  // when the token stops being valid, in Unix nanoseconds
	nUser   uint32 // length of the user id in userFP
}

// NewGrant returns the grant of a token for userID, bound to the given (valid
// topics or patterns, which contain no spaces; none: any topic), expiring
// at expires, with fingerprint fp (see audit.TokenFP).
func NewGrant(userID string, bound []string, expires time.Time, fp string) *Grant {
	return &Grant{userFP: userID + fp, topics: strings.Join(bound, " "),
		Expires: expires.UnixNano(), nUser: uint32(len(userID))}
}

// UserID is the user the token was minted for.
func (g *Grant) UserID() string { return g.userFP[:g.nUser] }

// FP is the token's fingerprint for logs: the first 8 hex digits of its
// SHA-256.
func (g *Grant) FP() string { return g.userFP[g.nUser:] }

// Bound reports whether the token is limited to some topics.
func (g *Grant) Bound() bool { return g.topics != "" }

// Topics yields the topics or patterns the token is limited to.
func (g *Grant) Topics() iter.Seq[string] {
	return func(yield func(string) bool) {
		if g.topics == "" {
			return
		}
		for t := range strings.SplitSeq(g.topics, " ") {
			if !yield(t) {
				return
			}
		}
	}
}

// Allows reports whether a token bound as g covers topic for userID (see
// topics.TokenAllowsSpaced); an unbound token covers every topic.
func (g *Grant) Allows(topic, userID string) bool {
	return g.topics == "" || topics.TokenAllowsSpaced(g.topics, topic, userID)
}

// ValidAt reports whether the grant has not expired at now.
func (g *Grant) ValidAt(now time.Time) bool { return now.UnixNano() < g.Expires }

// digest is the key of a token: the first 128 bits of its SHA-256. A
// 192-bit random token cannot be recovered from it, and two live tokens
// share a key with probability below 2^-88 at a million entries; half a
// digest keeps each map slot at 32 bytes.
type digest [16]byte

func digestOf(token string) digest {
	sum := sha256.Sum256([]byte(token))
	return digest(sum[:16])
}

// entry is stored by value in the map, keyed by the token's digest: one
// allocation per unredeemed token (its Grant), a second one (32 bytes)
// once redeemed.
type entry struct {
	grant    *Grant
	redeemed *Redemption // nil while unredeemed
}

// Options bound the store.
type Options struct {
	TTL        time.Duration // default lifetime (60 s)
	MaxTTL     time.Duration // longest lifetime a caller may ask for (1 h)
	MaxEntries int           // live tokens held at most (1,000,000)
}

// Store holds minted tokens by digest. It is safe for use by multiple
// goroutines.
//
// The tokens are spread by digest over shards, each a map under its own
// mutex, so that the loops redeeming tokens rarely wait for one another;
// a sweep (or a snapshot) holds one shard's lock over at most sweepChunk
// entries at a time, tens of microseconds whatever the store's size.
type Store struct {
	opts Options

	shards []shard
	mask   uint32       // len(shards)-1; len(shards) is a power of two
	n      atomic.Int64 // tokens held across all shards, live or not yet swept

	// sweepMu lets one sweep walk the store at a time, so that the
	// periodic sweep and the Mints that find the store full do not walk it
	// side by side. No shard lock is taken before it.
	sweepMu sync.Mutex

	// state writes the tokens to disk once OpenState ran; nil otherwise.
	state *stateFiles

	internMu sync.Mutex
	// interned holds one copy of each topic list tokens were recently
	// bound to, so that the tokens of a busy topic share it; guarded by
	// internMu.
	interned map[string]string
}

// shard is one part of a Store: the tokens whose digest selects it.
type shard struct {
	mu      sync.Mutex
	entries map[digest]entry // guarded by mu; nil until the first token
	_       [64 - 16]byte    // one cache line per shard: loops redeeming in neighbouring shards do not share one
}

// maxInterned bounds Store.interned.
const maxInterned = 4096

// Sharding bounds. A full store has about shardTarget tokens per shard, so
// that loops redeeming at the same time rarely share one; minShards
// spreads the loops of a small store, and maxShards bounds the fixed cost
// (64 bytes per shard) of a very large one, whose shards then hold
// MaxEntries/maxShards tokens each. The lock holds of a sweep do not
// depend on it: sweepChunk bounds them.
const (
	shardTarget = 512
	minShards   = 64
	maxShards   = 1 << 14
)

// shardCount is the number of shards for a store of at most maxEntries
// tokens: a power of two within [minShards, maxShards], at least
// maxEntries/shardTarget.
func shardCount(maxEntries int) int {
	n := minShards
	for n < maxShards && n*shardTarget < maxEntries {
		n *= 2
	}
	return n
}

// NewStore returns an empty store. Zero options take the defaults.
func NewStore(o Options) *Store {
	if o.TTL <= 0 {
		o.TTL = 60 * time.Second
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = time.Hour
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 1_000_000
	}
	n := shardCount(o.MaxEntries)
	return &Store{opts: o, shards: make([]shard, n), mask: uint32(n - 1), interned: make(map[string]string)}
}

// shardOf returns the shard that holds the token with digest d. The
// digest's first bytes are the token's fingerprint; the shard is chosen by
// its last ones.
func (s *Store) shardOf(d *digest) *shard {
	return &s.shards[binary.LittleEndian.Uint32(d[12:])&s.mask]
}

// reserve counts one more token if the store has room for it.
func (s *Store) reserve() bool {
	for {
		c := s.n.Load()
		if c >= int64(s.opts.MaxEntries) {
			return false
		}
		if s.n.CompareAndSwap(c, c+1) {
			return true
		}
	}
}

// intern makes g share the copy of its topic list other tokens use.
func (s *Store) intern(g *Grant) {
	if g.topics == "" {
		return
	}
	s.internMu.Lock()
	defer s.internMu.Unlock()
	if t, ok := s.interned[g.topics]; ok {
		g.topics = t
	} else if len(s.interned) < maxInterned {
		g.topics = strings.Clone(g.topics) // not a substring of a request body
		s.interned[g.topics] = g.topics
	}
}

// Mint creates a token for userID, limited to the bound topics when non-empty, living
// ttl (the default when zero). It returns the token, which the store does not
// keep, and its expiry. userID must be a topics.ValidUserID: one topic
// segment, so that no user id can reach into another user's namespace.
func (s *Store) Mint(userID string, bound []string, ttl time.Duration, now time.Time) (string, time.Time, error) {
	if !topics.ValidUserID(userID) {
		return "", time.Time{}, fmt.Errorf("user id %q: not 1-%d characters of [A-Za-z0-9_:@-] (a user id is one topic segment, never containing \".\")",
			capID(userID), topics.MaxUserIDLen)
	}
	if ttl == 0 {
		ttl = s.opts.TTL
	}
	if ttl < 0 || ttl > s.opts.MaxTTL {
		return "", time.Time{}, fmt.Errorf("ttl %s outside (0, %s]", ttl, s.opts.MaxTTL)
	}
	var raw [TokenBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("mint token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	for _, t := range bound {
		if t == "" || strings.ContainsRune(t, ' ') {
			return "", time.Time{}, fmt.Errorf("topic %q: not a topic or pattern", t)
		}
	}
	d := digestOf(tok)
	exp := now.Add(ttl)
	g := NewGrant(userID, bound, exp, fingerprint(d))
	s.intern(g)
	if !s.reserve() && !s.sweepAndReserve(now) {
		return "", time.Time{}, ErrFull
	}
	sh := s.shardOf(&d)
	sh.mu.Lock()
	if sh.entries == nil {
		sh.entries = make(map[digest]entry)
	}
	if _, dup := sh.entries[d]; dup {
		s.n.Add(-1) // replaced, not added (two digests alike: below 2^-88)
	}
	sh.entries[d] = entry{grant: g}
	sh.mu.Unlock()
	if st := s.state; st != nil {
		st.minted(&d, g) // before the token is handed out, so before any redemption of it
	}
	return tok, exp, nil
}

// Redeem checks token for the connection p describes. The first
// connection that presents a live token redeems it, and the store
// remembers that connection, its address and the time; later
// presentations on the same connection succeed again. On any other
// connection the token is spent: see Redemption.Again for the
// reason.TokenReplayed (an honest reconnect) or reason.TokenTheft verdict,
// and Result.Spent says who redeemed it and when. Other failures:
// TokenMissing, TokenUnknown, TokenExpired. A Presenter without an
// address (only Conn set) makes every spent token a replay.
func (s *Store) Redeem(token string, p Presenter, now time.Time) Result {
	if token == "" {
		return refused(reason.TokenMissing, "no token")
	}
	d := digestOf(token)
	sh := s.shardOf(&d)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.entries[d]
	// The map is keyed by SHA-256 digests: a lookup's timing can reveal at most
	// something about a digest, never about a token, and the hash comparison
	// that found the key compares digests, not tokens.
	if !ok {
		return refused(reason.TokenUnknown, "not a token this gateway minted, or swept after expiring")
	}
	if !e.grant.ValidAt(now) {
		delete(sh.entries, d)
		s.n.Add(-1)
		return refused(reason.TokenExpired, "token expired")
	}
	if e.redeemed == nil {
		red := NewRedemption(p, now)
		e.redeemed = &red
		sh.entries[d] = e
		if st := s.state; st != nil {
			st.redeemed(&d, &red)
		}
		return Result{Grant: e.grant}
	}
	if res := e.redeemed.Again(p, e.grant.UserID()); res.Reason != reason.None {
		return res
	}
	return Result{Grant: e.grant}
}

// Sweep drops expired tokens and returns how many it dropped. It walks
// the store one shard at a time, holding one shard's lock over at most
// sweepChunk entries at a time, so that Redeem and Mint wait at most for
// that, never for a whole shard or the whole store.
func (s *Store) Sweep(now time.Time) int {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	return s.sweepLocked(now)
}

// sweepAndReserve makes room for one more token in a full store: unless a
// sweep that ran meanwhile made some, it sweeps. It reports whether the
// token was counted.
func (s *Store) sweepAndReserve(now time.Time) bool {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	if s.reserve() {
		return true
	}
	s.sweepLocked(now)
	return s.reserve()
}

// sweepLocked requires that s.sweepMu is held.
func (s *Store) sweepLocked(now time.Time) int {
	n := 0
	for i := range s.shards {
		k := s.shards[i].sweep(now.UnixNano(), nil)
		s.n.Add(int64(-k))
		n += k
	}
	if n > 0 {
		s.internMu.Lock()
		if len(s.interned) >= maxInterned {
			clear(s.interned) // refilled by the topics still in use
		}
		s.internMu.Unlock()
	}
	return n
}

// sweepChunk is the most entries a walk of a shard (a sweep, a snapshot)
// visits under one hold of the shard's lock: at about a cache miss per
// entry, tens of microseconds, whatever the shard's size.
const sweepChunk = 128

// walk calls f with every entry of the shard, deleting those for which it
// returns true. It holds the lock over at most sweepChunk entries at a
// time, then lets the goroutines waiting for it in (Unlock, then Gosched:
// an Unlock followed at once by a Lock would usually take the lock back
// before a woken waiter gets to it). The map iteration resumes where it
// stopped: Go's map iteration allows the map to change between two steps
// (an entry added meanwhile may or may not be seen, one deleted meanwhile
// is not), and every step is taken under the lock. hold, when not nil, is
// called right after each Lock with true and right before each Unlock
// with false (benchmarks time the holds with it).
func (sh *shard) walk(f func(d digest, e entry) (drop bool), hold func(locked bool)) {
	sh.mu.Lock()
	if hold != nil {
		hold(true)
	}
	seen := 0
	for d, e := range sh.entries {
		if f(d, e) {
			delete(sh.entries, d)
		}
		if seen++; seen == sweepChunk {
			seen = 0
			if hold != nil {
				hold(false)
			}
			sh.mu.Unlock()
			runtime.Gosched()
			sh.mu.Lock()
			if hold != nil {
				hold(true)
			}
		}
	}
	if hold != nil {
		hold(false)
	}
	sh.mu.Unlock()
}

// sweep drops the shard's tokens expired at now (Unix nanoseconds) and
// returns how many, sweepChunk entries per lock hold (see walk).
func (sh *shard) sweep(now int64, hold func(locked bool)) int {
	n := 0
	sh.walk(func(_ digest, e entry) bool {
		if now >= e.grant.Expires {
			n++
			return true
		}
		return false
	}, hold)
	return n
}

// Len returns the number of tokens held, live or not yet swept.
func (s *Store) Len() int { return int(s.n.Load()) }

// capID cuts an attacker-supplied user id for an error message.
func capID(id string) string {
	if len(id) > topics.MaxUserIDLen+8 {
		return id[:topics.MaxUserIDLen] + "…"
	}
	return id
}

const hexdigits = "0123456789abcdef"

func fingerprint(d digest) string {
	var b [8]byte
	for i := 0; i < 4; i++ {
		b[2*i] = hexdigits[d[i]>>4]
		b[2*i+1] = hexdigits[d[i]&0xf]
	}
	return string(b[:])
}
