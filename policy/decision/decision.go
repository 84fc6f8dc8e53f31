// Package decision is the one value every stage of the validation pipeline
// (docs/ARCHITECTURE.md) answers with: admit at accept, upgrade at the
// handshake, authorize for a message. A Decision either allows, or refuses
// with a reason.Reason and everything the gateway needs to act on the
// refusal without deciding anything itself: the HTTP status of a refused
// handshake, the close code of a refused connection (or none: the
// connection stays open and the request gets the protocol's error reply),
// the text the client reads, when it may retry, and the prefix the refusal
// is audited and struck under. The strike's weight is the reason's weight
// in policy/bans, applied by the Guard when the gateway records the
// refusal.
//
// The zero Decision refuses (reason.Internal's answer): a Decision nobody
// filled in never lets anything through. Build one with Allow or Deny.
//
// It imports only audit/reason from the project and must never import
// gateway/ or the rest of audit/: it knows nothing of sockets, protocols or
// the audit trail.
package decision

import (
	"net/netip"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Decision is a stage's answer. Values are small and passed by value;
// their methods return modified copies.
type Decision struct {
	// Reason is why the request was refused; reason.None when allowed.
	Reason reason.Reason
	// Retry is when a refused client may try again (Retry-After, whole
	// seconds rounded up); zero: not said.
	Retry time.Duration
	// Counted is the prefix the refusal is audited under when it is not
	// the client's own counted prefix (a ban's whole range); invalid: the
	// client's.
	Counted netip.Prefix
	// Status is the HTTP status of a refusal answered before the upgrade.
	Status int
	// Close is the WebSocket close code of a refusal that ends an open
	// connection; 0: the connection stays open and the request is answered
	// with the protocol's error reply.
	Close uint16
	// Reset says the connection is reset right after its close frame
	// instead of waiting for the peer's (a client that does not read).
	Reset bool
	// Message is the text the client reads (HTTP body, close reason or
	// error reply); "" for a message-stage refusal means the protocol's
	// own text for Reason. It never echoes client input.
	Message string

	allowed bool
}

// Allow is the Decision that lets the request through.
func Allow() Decision { return Decision{allowed: true} }

// Deny refuses for r with r's standard answer (see Answer). Deny(None)
// is a caller bug and refuses as reason.Internal.
func Deny(r reason.Reason) Decision {
	if r == reason.None {
		r = reason.Internal
	}
	a := answers[r]
	return Decision{Reason: r, Status: a.status, Close: a.close, Message: a.message}
}

// Reply refuses one request for r on an open connection, which stays
// open: the request gets its protocol's error reply (no HTTP status, no
// close code) with msg, or the protocol's own text for r when msg is "".
// Reply(None) refuses as reason.Internal.
func Reply(r reason.Reason, msg string) Decision {
	if r == reason.None {
		r = reason.Internal
	}
	return Decision{Reason: r, Message: msg}
}

// ReplyOf is Allow for reason.None and Reply(r, "") otherwise: for the
// message-stage checks that answer with a bare reason.
func ReplyOf(r reason.Reason) Decision {
	if r == reason.None {
		return Allow()
	}
	return Reply(r, "")
}

// Allowed reports whether d lets the request through.
func (d Decision) Allowed() bool { return d.allowed }

// Why is the reason of a refusal, and reason.Internal for the zero
// Decision; reason.None when d allows.
func (d Decision) Why() reason.Reason {
	switch {
	case d.allowed:
		return reason.None
	case d.Reason == reason.None:
		return reason.Internal
	}
	return d.Reason
}

// WithMessage returns d with the client's text replaced by msg.
func (d Decision) WithMessage(msg string) Decision {
	d.Message = msg
	return d
}

// WithRetry returns d with Retry-After set to retry.
func (d Decision) WithRetry(retry time.Duration) Decision {
	d.Retry = retry
	return d
}

// WithCounted returns d audited under prefix p.
func (d Decision) WithCounted(p netip.Prefix) Decision {
	d.Counted = p
	return d
}

// Closing returns d ending the connection with code and text msg (the
// close frame's reason).
func (d Decision) Closing(code uint16, msg string) Decision {
	d.Close, d.Message = code, msg
	return d
}

type answer struct {
	status  int
	close   uint16
	message string
}

// answers is the client side of every refusal, in one place: the HTTP
// status and text of the accept and handshake stages, the close code and
// close reason of the frame stage. Message-stage refusals keep the
// connection open (close 0) and get their protocol's text (native.MessageFor,
// WAMP error URIs).
var answers = [256]answer{
	// accept and handshake
	reason.Blocked:           {status: 403, close: 1008, message: "address refused"},
	reason.Banned:            {status: 403, close: 1008, message: "banned"},
	reason.ConnRate:          {status: 429, message: "too many requests from this address"},
	reason.PerIPConnections:  {status: 429, message: "too many requests from this address"},
	reason.HandshakeFailRate: {status: 429, message: "too many requests from this address"},
	reason.GlobalConnections: {status: 503, message: "server at its connection limit"},
	reason.AuditUnavailable:  {status: 503, message: "temporarily unavailable"},
	reason.HandshakeTimeout:  {status: 408, message: "upgrade request not complete in time"},
	reason.HandshakeTooLarge: {status: 431, message: "upgrade request too large"},
	reason.BadHandshake:      {status: 400, message: "not a valid WebSocket upgrade request"},
	reason.BadOrigin:         {status: 403, message: "origin not allowed"},
	reason.BadSubprotocol:    {status: 400, message: "no supported subprotocol offered (portcullis.v1, wamp, wamp.2.json, or none)"},
	reason.BadPath:           {status: 404, message: "no WebSocket endpoint at this path"},
	reason.BadClientIP:       {status: 400, message: "unreadable forwarding header"},
	reason.ProxyHeader:       {status: 400, message: "PROXY protocol header required"},
	reason.BadHeader:         {status: 400, message: "malformed header field"},
	reason.ShuttingDown:      {status: 503, close: 1001, message: "server shutting down"},
	reason.FDExhausted:       {status: 503, message: "temporarily unavailable"},

	// the cluster: cluster.on_redis_down: refuse while Redis is unreachable
	reason.ClusterUnavailable: {status: 503, message: "temporarily unavailable"},

	// frames: the connection closes
	reason.ProtocolError:   {close: 1002, message: "protocol error"},
	reason.InvalidUTF8:     {close: 1007, message: "invalid UTF-8"},
	reason.FrameTooLarge:   {close: 1009, message: "frame too large"},
	reason.MessageTooLarge: {close: 1009, message: "message too large"},
	reason.SlowConsumer:    {close: 1008, message: "slow consumer"},
	reason.PingTimeout:     {close: 1008, message: "no pong to two pings"},
	reason.MessageTimeout:  {close: 1008, message: "message not complete in time"},
	reason.InboundBudget:   {close: 1008, message: "inbound buffer budget exceeded"},
	reason.GlobalInbound:   {close: 1008, message: "inbound buffer budget exceeded"},
	reason.BytesRate:       {close: 1008, message: "byte rate exceeded"},
	// MsgRate: an error reply while the client slows down; Closing(1008)
	// once it keeps going.
	reason.MsgRate:  {status: 429},
	reason.Internal: {status: 500, close: 1011, message: "internal error"},
}
