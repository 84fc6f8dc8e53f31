// Package redistokens is the token source of a cluster: minted one-use
// tokens kept in Redis, so that a token minted through any node is
// redeemable exactly once on any node.
//
// Redis holds a token under the SHA-256 digest of the token, never the
// token: one hash per token with its user, the topics it is bound to and its
// expiry, living until shortly after the expiry. Redemption is one Lua script,
// atomic on the Redis server: it marks the token spent with the redeeming
// node, connection, client address and time, and answers the state it found,
// so that of any number of nodes presenting a token at once exactly one
// redeems it, and a later presentation is judged like on one node
// (tokens.Redemption.Again: token_replayed for a reconnect, token_theft_suspected
// otherwise).
//
// Every call does network I/O bounded by Options.Timeout; an error or a
// timeout refuses the token with reason.TokenSourceUnavailable (fail
// closed). The gateway therefore never calls Redeem on an event loop (see
// Source.RedeemsRemotely).
//
// It imports nothing from gateway, audit or alerting.
package redistokens

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// Defaults of Options.
const (
	DefaultTTL     = 60 * time.Second
	DefaultMaxTTL  = time.Hour
	DefaultTimeout = time.Second
	// Linger is how long a token's record outlives its expiry, so that a
	// late presentation is refused as token_expired rather than
	// token_unknown (the single-node store keeps an expired token until
	// its next sweep, at most 30 s).
	Linger = 30 * time.Second
)

// Options configure a Source.
type Options struct {
	Client  redis.UniversalClient // the cluster's Redis; required
	Prefix  string                // key prefix (cluster.redis.key_prefix), e.g. "portcullis:"
	Node    string                // this node's name, recorded with each redemption; required
	TTL     time.Duration         // default lifetime (60 s)
	MaxTTL  time.Duration         // longest lifetime a caller may ask for (1 h)
	Timeout time.Duration         // bound of each Redis call (1 s)
	// Degraded reports that the cluster knows Redis to be unreachable:
	// redemptions are then refused at once, without waiting for a
	// timeout. Nil: always ask.
	Degraded func() bool
}

// Source mints and redeems tokens in Redis. It is safe for concurrent use.
type Source struct {
	opts Options
}

// New returns a Source over o.Client. Zero durations take the defaults.
func New(o Options) (*Source, error) {
	if o.Client == nil {
		return nil, errors.New("redistokens: no Redis client")
	}
	if o.Node == "" {
		return nil, errors.New("redistokens: no node name")
	}
	if strings.ContainsAny(o.Node, "\x00\n") {
		return nil, fmt.Errorf("redistokens: node name %q contains a NUL or newline", o.Node)
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = DefaultMaxTTL
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	return &Source{opts: o}, nil
}

// RedeemsRemotely marks a token source whose Redeem waits for the network:
// the gateway calls it off its event loops.
func (s *Source) RedeemsRemotely() bool { return true }

// key is the Redis key of token: the prefix, "token:", and the hex SHA-256
// of the token.
func (s *Source) key(sum *[sha256.Size]byte) string {
	return s.opts.Prefix + "token:" + hex.EncodeToString(sum[:])
}

// A token's record is a hash. Mint writes u (the user id), t (the bound
// topics, space-separated; "": any), e (the expiry, Unix nanoseconds) and
// x (the expiry in Unix milliseconds, which the script compares: exact in
// a Lua number); the redemption adds n (the redeeming node), c (its
// connection id there), a (the client address; "" when unknown) and r
// (the time, Unix nanoseconds).

// mintScript writes a token's record and its expiry in one step.
// KEYS[1] the key; ARGV user, topics, expiry ns, expiry ms, key deadline ms.
var mintScript = redis.NewScript(`
redis.call('HSET', KEYS[1], 'u', ARGV[1], 't', ARGV[2], 'e', ARGV[3], 'x', ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
return 1
`)

// redeemScript redeems a token atomically. KEYS[1] the key; ARGV now ms,
// node, conn, addr, now ns. It answers {0} unknown, {1} expired,
// {2, u, t, e} redeemed now, or {3, u, t, e, n, c, a, r} already redeemed
// (the record unchanged).
var redeemScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'u', 't', 'e', 'x', 'n', 'c', 'a', 'r')
if not v[1] then return {0} end
if tonumber(v[4]) <= tonumber(ARGV[1]) then return {1} end
if not v[5] then
  redis.call('HSET', KEYS[1], 'n', ARGV[2], 'c', ARGV[3], 'a', ARGV[4], 'r', ARGV[5])
  return {2, v[1], v[2], v[3]}
end
return {3, v[1], v[2], v[3], v[5], v[6], v[7], v[8]}
`)

// Mint creates a token for userID, limited to the bound topics when
// non-empty, living ttl (the default when zero), with the checks of
// tokens.Store.Mint. It returns the token, which Redis never sees, and its
// expiry; the token is redeemable on every node once Mint returns.
func (s *Source) Mint(userID string, bound []string, ttl time.Duration, now time.Time) (string, time.Time, error) {
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
	for _, t := range bound {
		if t == "" || strings.ContainsRune(t, ' ') {
			return "", time.Time{}, fmt.Errorf("topic %q: not a topic or pattern", t)
		}
	}
	var raw [tokens.TokenBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("mint token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	sum := sha256.Sum256([]byte(tok))
	exp := now.Add(ttl)
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	err := mintScript.Run(ctx, s.opts.Client, []string{s.key(&sum)},
		userID, strings.Join(bound, " "), exp.UnixNano(), exp.UnixMilli(), exp.Add(Linger).UnixMilli()).Err()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("mint token: store it in Redis: %w", err)
	}
	return tok, exp, nil
}

// Redeem presents token for the connection p describes, with the
// semantics of tokens.Store.Redeem across the cluster: the first
// connection on any node redeems it; later presentations on that
// connection (same node, same connection id) succeed again; anywhere
// else the token is spent (tokens.Redemption.Again). A Redis error or
// timeout refuses it with reason.TokenSourceUnavailable.
func (s *Source) Redeem(token string, p tokens.Presenter, now time.Time) tokens.Result {
	if token == "" {
		return tokens.Result{Reason: reason.TokenMissing, Detail: "no token"}
	}
	if s.opts.Degraded != nil && s.opts.Degraded() {
		return unavailable(errDegraded)
	}
	sum := sha256.Sum256([]byte(token))
	addr := ""
	if p.Addr.IsValid() {
		addr = p.Addr.Unmap().WithZone("").String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	v, err := redeemScript.Run(ctx, s.opts.Client, []string{s.key(&sum)},
		now.UnixMilli(), s.opts.Node, p.Conn, addr, now.UnixNano()).Slice()
	if err != nil {
		return unavailable(err)
	}
	st, rec, err := parseReply(v)
	if err != nil {
		return unavailable(err)
	}
	switch st {
	case stateUnknown:
		return tokens.Result{Reason: reason.TokenUnknown, Detail: "not a token this cluster minted, or expired and dropped"}
	case stateExpired:
		return tokens.Result{Reason: reason.TokenExpired, Detail: "token expired"}
	}
	g := tokens.NewGrant(rec.user, rec.topics, time.Unix(0, rec.expires), hex.EncodeToString(sum[:4]))
	if st == stateRedeemed || (rec.node == s.opts.Node && rec.conn == p.Conn) {
		return tokens.Result{Grant: g}
	}
	// Redeemed by another connection, here or on another node: a
	// restored redemption (no connection of ours) judges it alike.
	red := tokens.RestoredRedemption(rec.by, time.Unix(0, rec.at))
	return red.Again(p, rec.user)
}

// errDegraded is the error of a redemption refused while the cluster is
// degraded.
var errDegraded = errors.New("the cluster is degraded (Redis unreachable)")

// unavailable is the fail-closed answer to a failed Redis call.
func unavailable(err error) tokens.Result {
	d := "token store (Redis) unavailable: " + err.Error()
	if len(d) > 200 {
		d = d[:200]
	}
	return tokens.Result{Reason: reason.TokenSourceUnavailable, Detail: d}
}

// States answered by redeemScript.
const (
	stateUnknown  = 0
	stateExpired  = 1
	stateRedeemed = 2 // by this call
	stateSpent    = 3 // before this call
)

// record is a token's record as redeemScript answered it.
type record struct {
	user    string
	topics  []string
	expires int64 // Unix nanoseconds
	node    string
	conn    uint64
	by      netip.Addr
	at      int64 // Unix nanoseconds
}

// parseReply reads redeemScript's answer; an answer it did not expect
// (a record written by something else under our prefix) is an error.
func parseReply(v []any) (int64, record, error) {
	var rec record
	if len(v) == 0 {
		return 0, rec, errors.New("empty answer from the redeem script")
	}
	st, ok := v[0].(int64)
	if !ok {
		return 0, rec, fmt.Errorf("redeem script: state %T, not an integer", v[0])
	}
	want := map[int64]int{stateUnknown: 1, stateExpired: 1, stateRedeemed: 4, stateSpent: 8}[st]
	if want == 0 || len(v) != want {
		return 0, rec, fmt.Errorf("redeem script: answer of %d values for state %d", len(v), st)
	}
	if st < stateRedeemed {
		return st, rec, nil
	}
	s := make([]string, len(v)-1)
	for i, x := range v[1:] {
		if s[i], ok = x.(string); !ok {
			return 0, rec, fmt.Errorf("redeem script: value %d is %T, not a string", i+1, x)
		}
	}
	rec.user = s[0]
	if s[1] != "" {
		rec.topics = strings.Split(s[1], " ")
	}
	var err error
	if rec.expires, err = strconv.ParseInt(s[2], 10, 64); err != nil {
		return 0, rec, fmt.Errorf("redeem script: expiry: %w", err)
	}
	if st == stateRedeemed {
		return st, rec, nil
	}
	rec.node = s[3]
	if rec.conn, err = strconv.ParseUint(s[4], 10, 64); err != nil {
		return 0, rec, fmt.Errorf("redeem script: connection id: %w", err)
	}
	if s[5] != "" {
		if rec.by, err = netip.ParseAddr(s[5]); err != nil {
			return 0, rec, fmt.Errorf("redeem script: address: %w", err)
		}
	}
	if rec.at, err = strconv.ParseInt(s[6], 10, 64); err != nil {
		return 0, rec, fmt.Errorf("redeem script: redemption time: %w", err)
	}
	return st, rec, nil
}

// capID cuts an attacker-supplied user id for an error message.
func capID(id string) string {
	if len(id) > topics.MaxUserIDLen+8 {
		return id[:topics.MaxUserIDLen] + "…"
	}
	return id
}
