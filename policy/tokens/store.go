// Package tokens is the `store` token source of SPEC §6: the gateway mints
// one-use tokens bound to a user (and optionally to topics), keeps only their
// SHA-256 digests, and lets exactly one connection redeem each of them.
//
// It imports nothing from gateway, audit or alerting.
package tokens

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"iter"
	"strings"
	"sync"
	"time"

	"github.com/portcullis-gw/portcullis/policy/reason"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// TokenBytes is the number of random bytes in a token: 192 bits, above the
// 128-bit floor of SPEC §6. Encoded with unpadded URL-safe base64 (32 chars).
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
// topics.TokenAllows); an unbound token covers every topic.
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
	TTL        time.Duration // default lifetime (SPEC: 60 s)
	MaxTTL     time.Duration // longest lifetime a caller may ask for (1 h)
	MaxEntries int           // live tokens held at most (1,000,000)
}

// Store holds minted tokens by digest. It is safe for use by multiple
// goroutines.
type Store struct {
	opts Options

	mu      sync.Mutex
	entries map[digest]entry // guarded by mu
	// interned holds one copy of each topic list tokens were recently
	// bound to, so that the tokens of a busy topic share it; guarded by mu.
	interned map[string]string
}

// maxInterned bounds Store.interned.
const maxInterned = 4096

// NewStore returns an empty store. Zero options take the SPEC defaults.
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
	return &Store{opts: o, entries: make(map[digest]entry), interned: make(map[string]string)}
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
	e := entry{grant: g}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.interned[g.topics]; ok {
		g.topics = t
	} else if g.topics != "" && len(s.interned) < maxInterned {
		g.topics = strings.Clone(g.topics) // not a substring of a request body
		s.interned[g.topics] = g.topics
	}
	if len(s.entries) >= s.opts.MaxEntries {
		s.sweepLocked(now)
		if len(s.entries) >= s.opts.MaxEntries {
			return "", time.Time{}, ErrFull
		}
	}
	s.entries[d] = e
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
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[d]
	// The map is keyed by SHA-256 digests: a lookup's timing can reveal at most
	// something about a digest, never about a token, and the hash comparison
	// that found the key compares digests, not tokens.
	if !ok {
		return refused(reason.TokenUnknown, "not a token this gateway minted, or swept after expiring")
	}
	if !e.grant.ValidAt(now) {
		delete(s.entries, d)
		return refused(reason.TokenExpired, "token expired")
	}
	if e.redeemed == nil {
		red := NewRedemption(p, now)
		e.redeemed = &red
		s.entries[d] = e
		return Result{Grant: e.grant}
	}
	if res := e.redeemed.Again(p, e.grant.UserID()); res.Reason != reason.None {
		return res
	}
	return Result{Grant: e.grant}
}

// Sweep drops expired tokens and returns how many it dropped.
func (s *Store) Sweep(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sweepLocked(now)
}

// sweepLocked requires that s.mu is held.
func (s *Store) sweepLocked(now time.Time) int {
	n := 0
	for d, e := range s.entries {
		if !e.grant.ValidAt(now) {
			delete(s.entries, d)
			n++
		}
	}
	if n > 0 && len(s.interned) >= maxInterned {
		clear(s.interned) // refilled by the topics still in use
	}
	return n
}

// Len returns the number of tokens held, live or not yet swept.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

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
