// Package audit owns the audit trail: the Event model of docs/AUDIT.md, the sinks
// that write events, and (in sub-packages) verification and querying.
//
// audit imports nothing from gateway, policy, alerting or audit/query: they
// emit events into it, or read the trail back with its vocabulary (query),
// never the other way round.
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"time"
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
	Reason        string    // precise machine-readable reason (token_replayed, …)
	Detail        string    // short human-readable detail
	TokenFP       string    // first 8 hex digits of SHA-256 of the token
	Code          int       // close code or HTTP status, where one was sent
	DurationMS    int64     // connection lifetime for conn_close
	Count         int64     // for summary events: how many were folded into this one
	Actor         string    // who did it, for admin actions
	First, Last   time.Time // for summary events: when the first and last folded event happened
	// RedeemedIP is, for a spent token presented again (token_replayed,
	// token_theft_suspected), the client address of the connection that
	// redeemed it; RedeemedAgoS is how long before, in whole seconds
	// (written whenever RedeemedIP is, zero included).
	RedeemedIP   string
	RedeemedAgoS int64
}

// Sink receives events. Emit never blocks on I/O and is safe for use by
// multiple goroutines.
type Sink interface {
	Emit(Event)
}

// Discard is a Sink that drops every event.
type Discard struct{}

// Emit drops e.
func (Discard) Emit(Event) {}

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
