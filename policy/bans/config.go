package bans

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/clientip"
)

// Defaults of docs/CONFIG.md (`bans:`). A zero Config field means its default.
const (
	DefaultFindTime         = 10 * time.Minute // window strikes are summed over
	DefaultMaxRetry         = 5                // strike weight within FindTime that bans
	DefaultBanTime          = 10 * time.Minute // length of a first ban
	DefaultFactor           = 2.0              // growth of each repeat ban
	DefaultMaxTime          = 168 * time.Hour  // cap on an automatic ban's length
	DefaultMaxStrikeEntries = 100_000          // addresses with live strikes held at most
)

// MaxMaxRetry bounds Config.MaxRetry, and with it the strikes one entry of
// the strike table holds.
const MaxMaxRetry = 1000

// Config tunes a Manager. A zero field means its default (never "unlimited"
// or "off"); Validate reports every bad field at once.
type Config struct {
	// FindTime is the sliding window strikes are summed over.
	FindTime time.Duration
	// MaxRetry is the strike weight within FindTime that bans an address.
	MaxRetry int
	// BanTime is the length of an address's first automatic ban.
	BanTime time.Duration
	// Factor multiplies each repeat ban: ban n (0-based) lasts
	// BanTime × Factor^n, capped at MaxTime. 1 means no growth.
	Factor float64
	// MaxTime caps the length of an automatic ban.
	MaxTime time.Duration
	// RepeatTime is how long, after a ban ends, it still counts as a previous
	// ban for growth (default MaxTime: with the defaults a week). An
	// address that stays quiet that long starts again at BanTime.
	RepeatTime time.Duration
	// DryRun counts strikes and reports automatic bans (Strike returns
	// banned=true, List shows them with DryRun set) but never enforces or
	// persists them. Manual bans (Add) are enforced regardless.
	DryRun bool
	// Weights overrides DefaultWeights per reason. Weight 0 means the reason
	// is not counted. Reasons absent here keep their default weight.
	Weights map[reason.Reason]int
	// IPv6Prefix is the IPv6 prefix length counted and banned as one client
	// (default clientip.DefaultIPv6Prefix, 64). IPv4 is always per /32.
	IPv6Prefix int
	// MaxStrikeEntries bounds the strike table (addresses with strikes in
	// the window); the least recently struck entry is evicted beyond it and
	// counted in Stats.Evictions.
	MaxStrikeEntries int
	// Allowed reports allow-listed addresses: they are never counted nor
	// banned. A manual ban of one (its client key or the single address) is
	// refused, a saved ban of one is dropped on restore, and Banned never
	// reports one even inside a banned CIDR.
	// Nil means nothing is allow-listed. It must be safe for concurrent use.
	Allowed func(netip.Addr) bool
}

// DefaultWeights returns the strike weight of every reason: a fresh map the
// caller may change. A suspected token theft bans at once; schema abuse
// weighs more than a rate hit; a replayed token from the address and user
// that redeemed it (a browser reconnecting) weighs like a rate hit, so a
// few reconnects from an office behind one NAT do not ban it; reasons an
// honest client or our own side cause (the client hung up,
// a slow network, shutdown, a global cap, a misbehaving trusted proxy) weigh
// 0 and are not counted.
func DefaultWeights() map[reason.Reason]int {
	return map[reason.Reason]int{
		// accept and handshake
		reason.ConnRate:          1,
		reason.PerIPConnections:  1,
		reason.HandshakeTimeout:  1,
		reason.HandshakeTooLarge: 2,
		reason.BadHandshake:      1,
		reason.BadOrigin:         1,
		reason.BadSubprotocol:    1,
		reason.BadPath:           1,
		reason.HandshakeFailRate: 1,
		reason.BadHeader:         1,
		reason.TLSHandshake:      1, // not TLS, or no version, suite or ALPN in common
		// frames
		reason.ProtocolError:   1,
		reason.InvalidUTF8:     1,
		reason.FrameTooLarge:   2,
		reason.MessageTooLarge: 2,
		reason.MsgRate:         1,
		reason.MessageTimeout:  1, // a message left unfinished
		reason.InboundBudget:   1, // unfinished messages over the buffer budget
		reason.BytesRate:       1, // inbound bytes over limits.bytes_rate
		// messages
		reason.BadJSON:              1,
		reason.TooDeep:              2,
		reason.SchemaViolation:      2,
		reason.UnknownOp:            1,
		reason.TokenMissing:         1,
		reason.TokenUnknown:         1,
		reason.TokenExpired:         1,
		reason.TokenReplayed:        1,           // a spent token from its redeemer's address and user: a reconnect
		reason.TokenTheft:           MaxMaxRetry, // a spent token from elsewhere: bans at once under any maxretry
		reason.TokenUserMismatch:    2,
		reason.TokenTopicMismatch:   2,
		reason.TokenInvalid:         2,
		reason.TopicDenied:          1,
		reason.TopicOtherUser:       2,
		reason.PublishDenied:        1,
		reason.TooManySubscriptions: 1,
		reason.Unsupported:          1, // RPC and binary frames; a few in a row close
		// Weight 0 (listed for the record): None, Blocked, Banned,
		// GlobalConnections, BadClientIP, ProxyHeader, AuditUnavailable,
		// ShuttingDown, SlowConsumer, PingTimeout, ClientClosed, ReadError,
		// NotSubscribed, Internal, ClusterUnavailable, TLSClientAlert (an alert from the
		// client usually means our certificate is wrong, not the client).
	}
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.FindTime == 0 {
		c.FindTime = DefaultFindTime
	}
	if c.MaxRetry == 0 {
		c.MaxRetry = DefaultMaxRetry
	}
	if c.BanTime == 0 {
		c.BanTime = DefaultBanTime
	}
	if c.Factor == 0 {
		c.Factor = DefaultFactor
	}
	if c.MaxTime == 0 {
		c.MaxTime = DefaultMaxTime
	}
	if c.RepeatTime == 0 {
		c.RepeatTime = c.MaxTime
	}
	if c.IPv6Prefix == 0 {
		c.IPv6Prefix = clientip.DefaultIPv6Prefix
	}
	if c.MaxStrikeEntries == 0 {
		c.MaxStrikeEntries = DefaultMaxStrikeEntries
	}
	return c
}

// Validate reports every invalid field of c (after defaults), joined.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("bans: "+format, a...)) }
	if c.FindTime < 0 {
		bad("findtime %s is negative", c.FindTime)
	}
	if c.MaxRetry < 0 || c.MaxRetry > MaxMaxRetry {
		bad("maxretry %d must be between 1 and %d", c.MaxRetry, MaxMaxRetry)
	}
	if c.BanTime < 0 {
		bad("bantime %s is negative", c.BanTime)
	}
	if c.MaxTime < 0 {
		bad("maxtime %s is negative", c.MaxTime)
	}
	if c.RepeatTime < 0 {
		bad("repeat time %s is negative", c.RepeatTime)
	}
	if !(c.Factor >= 1) || c.Factor > 1e6 { // also catches NaN
		bad("factor %g must be between 1 and 1e6", c.Factor)
	}
	if c.BanTime > 0 && c.MaxTime > 0 && c.MaxTime < c.BanTime {
		bad("maxtime %s cannot be below bantime %s", c.MaxTime, c.BanTime)
	}
	if c.IPv6Prefix < 1 || c.IPv6Prefix > 128 {
		bad("ipv6_prefix %d must be between 1 and 128", c.IPv6Prefix)
	}
	if c.MaxStrikeEntries < 0 {
		bad("max strike entries %d is negative", c.MaxStrikeEntries)
	}
	for r, w := range c.Weights {
		if w < 0 || w > 1<<20 {
			bad("weight %d for %s must be between 0 and %d", w, r, 1<<20)
		}
	}
	return errors.Join(errs...)
}

// weightTable flattens DefaultWeights overridden by w into an array indexed
// by reason (reasons are small integers).
func weightTable(w map[reason.Reason]int) [256]int32 {
	var t [256]int32
	for r, v := range DefaultWeights() {
		t[r] = int32(v)
	}
	for r, v := range w {
		t[r] = int32(v)
	}
	return t
}
