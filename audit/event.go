// Package audit owns the audit trail: the Event model of docs/AUDIT.md, the sinks
// that write events, and (in sub-packages) verification and querying.
//
// audit imports nothing from gateway, policy, alerting or audit/query: they
// emit events into it, or read the trail back with its vocabulary (query),
// never the other way round.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Severity ranks an event for readers and for alert rules.
type Severity uint8

// Severities, from least to most urgent. The zero value is Info.
const (
	Info Severity = iota
	Notice
	Warning
	Critical
)

var severityNames = [...]string{"info", "notice", "warning", "critical"}

// String returns the docs/AUDIT.md spelling of s.
func (s Severity) String() string {
	if int(s) < len(severityNames) {
		return severityNames[s]
	}
	return "unknown"
}

// Level returns the logrus level name written as a line's "level" field, the
// term log pipelines and SIEMs key on: info and notice are "info", warning
// is "warning", critical is "error".
func (s Severity) Level() string {
	switch s {
	case Warning:
		return "warning"
	case Critical:
		return "error"
	}
	return "info"
}

// ParseSeverity parses the docs/AUDIT.md spelling of a severity.
func ParseSeverity(s string) (Severity, bool) {
	for i, n := range severityNames {
		if n == s {
			return Severity(i), true
		}
	}
	return 0, false
}

// Stage says where in a connection's life an event happened.
type Stage string

// Stages of a connection.
const (
	StageAccept    Stage = "accept"
	StageHandshake Stage = "handshake"
	StageMessage   Stage = "message"
	StageClose     Stage = "close"
	StageAdmin     Stage = "admin"
	StageSystem    Stage = "system"
)

// MaxFieldLen caps every attacker-supplied string stored in an event, in bytes.
const MaxFieldLen = 256

// Event is one audit record. Only metadata: never a message body, never a
// token (TokenFP carries its fingerprint). Fields that do not apply are left
// zero and omitted from the written line.
type Event struct {
	Time     time.Time // when it happened; set by the sink if zero
	Event    Kind      // what happened: KindConnOpen, KindAuthFailed, …
	Severity Severity
	// Reason is the precise machine-readable cause (reason.TokenReplayed,
	// …); the format workers write its name, None is left out. (Beside
	// Event and Severity, the three bytes share one word.)
	Reason reason.Reason
	// IP is the derived client address, PeerIP the raw socket peer
	// (differs behind a proxy), CountedPrefix the prefix limits and bans
	// count this address under. They stay typed until the audit writer's
	// format workers turn them into text: an emitter on an event loop
	// never formats an address. The zero values are left out of the line.
	IP            netip.Addr
	PeerIP        netip.Addr
	CountedPrefix netip.Prefix
	Conn          uint64 // connection id, unique within a boot
	Proto         string // wire protocol: portcullis.v1, wamp, wamp.2.json
	Stage         Stage
	UserID        string
	Topic         string
	Detail        string // short human-readable detail
	TokenFP       string // first 8 hex digits of SHA-256 of the token
	Code          int    // close code or HTTP status, where one was sent
	DurationMS    int64  // connection lifetime for conn_close
	// Count is, for a summary event, how many events were folded into it
	// (and for a few episode events, how many things it reports); it is
	// never a weight: one ban line is one ban, its strikes are in Strikes.
	Count       int64
	Strikes     int64     // for a ban: the strike weight that caused it (0 for a manual ban)
	Actor       string    // who did it, for admin actions
	First, Last time.Time // for summary events: when the first and last folded event happened
	// RedeemedIP is, for a spent token presented again (token_replayed,
	// token_theft_suspected), the client address of the connection that
	// redeemed it; RedeemedAgoS is how long before, in whole seconds
	// (written whenever RedeemedIP is, zero included).
	RedeemedIP   netip.Addr
	RedeemedAgoS int64
}

// Sink receives events. Emit never blocks on I/O and is safe for use by
// multiple goroutines.
type Sink interface {
	Emit(Event)
}

// Durable is a Sink that can also record an event and wait until it is on
// disk, whatever audit.fsync says: an admin action (a ban, an unban, a
// silence, a reload, a token mint) is acknowledged only once its line would
// survive a crash. *Writer implements it.
type Durable interface {
	Sink
	// EmitDurable writes e and returns once its line is written and
	// fsynced; an error (ErrNotDurable wrapped) when that did not happen
	// before ctx ended or DefaultDurableTimeout passed, or the writer is
	// closed or failing. The event may still be written later.
	EmitDurable(ctx context.Context, e Event) error
}

// EmitDurable records e through s and waits until it is on disk when s is
// a Durable sink (see Durable). Any other sink gets e through Emit and the
// answer is an error wrapping ErrNotDurable: a caller that must not
// acknowledge an action before its line is durable refuses to (the admin
// API answers 503 audit_unavailable).
func EmitDurable(ctx context.Context, s Sink, e Event) error {
	if d, ok := s.(Durable); ok {
		return d.EmitDurable(ctx, e)
	}
	s.Emit(e)
	return fmt.Errorf("%w: the audit sink %T cannot wait for the disk", ErrNotDurable, s)
}

// Discard is a Sink that drops every event.
type Discard struct{}

// Emit drops e.
func (Discard) Emit(Event) {}

// EmitDurable drops e: a gateway configured without a trail has nothing to
// wait for.
func (Discard) EmitDurable(context.Context, Event) error { return nil }

// TokenFP returns the fingerprint of a token that may appear in logs and
// audit events: the first 8 hex digits of its SHA-256 digest.
func TokenFP(token string) string {
	if token == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:4])
}

// Cap returns s cut to at most MaxFieldLen bytes on a UTF-8 boundary, with
// "…" appended when it was cut.
func Cap(s string) string {
	if len(s) <= MaxFieldLen {
		return s
	}
	cut := MaxFieldLen
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}
