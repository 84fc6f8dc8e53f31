// Package ratelimit owns Portcullis's per-address and per-connection rate
// limits (pipeline steps 1 and 3, docs/ARCHITECTURE.md): the connection-attempt token bucket, the
// handshake-failure token bucket and the concurrent connection count of
// every counted address prefix, held in a bounded table (LRU eviction, TTL
// sweep), and the inline per-connection message bucket (ConnBucket).
//
// Buckets follow nginx `limit_req rate=r burst=B nodelay`: r events per
// second on average and B more at once, i.e. rate.NewLimiter(r, B+1) asked
// with AllowN(now, 1). Nothing here ever waits: a refused event is refused.
// Time is always a parameter (now), so tests drive a fake clock.
//
// Keys are the counted prefixes of clientip.Key (IPv4 /32, IPv6 /64 by
// default, ::ffff: forms unified); this package does not compute them.
// It imports only the standard library, golang.org/x/time/rate and
// audit/reason, and never imports gateway, alerting or the rest of audit: callers turn
// a Verdict into a close, an audit event and a strike.
package ratelimit

import (
	"fmt"
	"math"
	"time"

	"golang.org/x/time/rate"
)

// MaxBurst is the largest Rate.Burst accepted (events).
const MaxBurst = 1 << 30

// Defaults of docs/CONFIG.md (`limits:`), for callers that build a Config without
// the config package (tests, tools). The config package supplies its own.
var (
	DefaultConnRate          = Rate{PerSecond: 10, Burst: 20} // connection attempts per address
	DefaultHandshakeFailRate = Rate{PerSecond: 1, Burst: 10}  // failed handshakes per address
	DefaultMsgRate           = Rate{PerSecond: 20, Burst: 40} // messages per connection
)

// Rate is a token bucket with nginx limit_req ... nodelay semantics:
// PerSecond events per second on average, and Burst events above that
// rate allowed at once (so Burst+1 events pass at once from a full bucket).
//
// A Rate whose PerSecond is zero or negative disables its check: every
// event is allowed. This package applies no default to a Rate — the
// config layer supplies the defaults of docs/CONFIG.md and rejects a
// non-positive rate there, so "disabled" is only reachable on purpose.
type Rate struct {
	PerSecond float64 // events per second; <= 0 disables the check
	Burst     int     // events above the rate allowed at once; >= 0
}

// Enabled reports whether r limits anything (PerSecond > 0).
func (r Rate) Enabled() bool { return r.PerSecond > 0 }

// Validate reports a Rate that cannot be used: a NaN or infinite
// PerSecond, or a Burst outside 0..MaxBurst.
func (r Rate) Validate() error {
	switch {
	case math.IsNaN(r.PerSecond) || math.IsInf(r.PerSecond, 0):
		return fmt.Errorf("ratelimit: rate %v per second: must be a finite number", r.PerSecond)
	case r.Burst < 0 || r.Burst > MaxBurst:
		return fmt.Errorf("ratelimit: burst %d: must be between 0 and %d", r.Burst, MaxBurst)
	}
	return nil
}

// String formats r as "10/s burst 20", or "off" when disabled.
func (r Rate) String() string {
	if !r.Enabled() {
		return "off"
	}
	return fmt.Sprintf("%g/s burst %d", r.PerSecond, r.Burst)
}

// NewLimiter returns a full bucket for r: rate.NewLimiter(PerSecond,
// Burst+1). Ask it with AllowN(now, 1), never Wait. A disabled r gives a
// limiter that allows every event.
func (r Rate) NewLimiter() *rate.Limiter {
	if !r.Enabled() {
		return rate.NewLimiter(rate.Inf, 1)
	}
	return rate.NewLimiter(rate.Limit(r.PerSecond), r.Burst+1)
}

// refill is the time an empty bucket of r takes to be full again; zero
// when r is disabled.
func (r Rate) refill() time.Duration {
	if !r.Enabled() {
		return 0
	}
	d := float64(r.Burst+1) / r.PerSecond * float64(time.Second)
	if d >= math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(math.Ceil(d))
}

// Idle reports whether l is a full bucket at now, so that dropping it and
// later starting over with r.NewLimiter() changes nothing. A nil l is a
// full bucket; a limiter of a disabled Rate is always idle.
func Idle(l *rate.Limiter, now time.Time) bool {
	if l == nil || l.Limit() == rate.Inf {
		return true
	}
	return l.TokensAt(now) >= float64(l.Burst())
}

// ConnBucket is one connection's message-rate bucket (`limits.msg_rate`):
// 8 bytes, held inline in the connection, never allocating. The
// per-address tables use x/time/rate, but a rate.Limiter per connection
// (~80 B on the heap) would cost an idle connection a third of its memory
// budget. The zero value is a full bucket.
//
// Its clock is the time since the connection opened, in milliseconds, in
// 32 bits: it wraps after 49 days, so a long-lived connection calls
// Settle now and then (the ping tick) to keep it recent. Pass the same
// Rate every time.
//
// A ConnBucket is not safe for concurrent use; it belongs to the
// goroutine that reads the connection.
type ConnBucket struct {
	used float32 // tokens taken and not yet refilled
	last uint32  // when used was computed: ms since the connection opened
}

// Settle refills b under r up to since, the time since the connection
// opened. A disabled r leaves b as it is.
func (b *ConnBucket) Settle(r Rate, since time.Duration) {
	if !r.Enabled() {
		return
	}
	ms := uint32(since / time.Millisecond)
	used := float64(b.used) - float64(ms-b.last)/1000*r.PerSecond
	b.used, b.last = float32(max(used, 0)), ms
}

// Allow takes one event from b under r at since, the time since the
// connection opened, and reports whether the bucket had it. A disabled r
// allows every event and leaves b as it is.
func (b *ConnBucket) Allow(r Rate, since time.Duration) bool {
	if !r.Enabled() {
		return true
	}
	b.Settle(r, since)
	if float64(b.used)+1 > float64(r.Burst+1) {
		return false
	}
	b.used++
	return true
}
