// Package reason is the one spelling of why Portcullis refused, closed or
// counted something. A Reason feeds the audit event, the metric label, the
// client-visible code and the strike weight — never three spellings of the
// same thing. It imports nothing from the project.
package reason

// Reason is a precise, machine-readable cause. The zero value is None.
type Reason uint8

// Reasons. Append only: the numbers are not persisted, the names are.
const (
	None Reason = iota

	// accept and handshake
	Blocked           // address on the blocklist
	Banned            // address banned
	ConnRate          // per-address connection rate exceeded
	PerIPConnections  // per-address concurrent connection cap
	GlobalConnections // global connection cap
	HandshakeTimeout  // request not complete in time
	HandshakeTooLarge // request headers over the cap
	BadHandshake      // not a valid WebSocket upgrade
	BadOrigin         // Origin not allowed
	BadSubprotocol    // no subprotocol of ours offered
	BadPath           // request path is not the WebSocket path
	BadClientIP       // forwarding header garbage from a trusted proxy
	ProxyHeader       // PROXY protocol header missing, malformed or from an untrusted peer
	AuditUnavailable  // audit sink failing under fail_closed
	ShuttingDown      // server going away
	HandshakeFailRate // too many failed handshakes from this address
	BadHeader         // duplicated Host or Sec-WebSocket-Key, or a forbidden byte in a field
	FDExhausted       // the process is out of file descriptors

	// frames
	ProtocolError // RFC 6455 violation (1002)
	InvalidUTF8   // text not UTF-8 (1007)
	FrameTooLarge // frame over max_frame_bytes (1009)
	MessageTooLarge
	MsgRate        // per-connection message rate
	SlowConsumer   // out queue over its cap or stalled
	PingTimeout    // two missed pongs
	ClientClosed   // the client sent a close frame or hung up
	ReadError      // socket error
	MessageTimeout // a started message not completed within limits.message_timeout
	InboundBudget  // inbound bytes held by one address over its budget
	GlobalInbound  // inbound bytes held by everyone over the global budget (not the client's fault alone)
	BytesRate      // per-address inbound byte rate exceeded

	// messages
	BadJSON         // not JSON
	TooDeep         // JSON nesting over the cap
	SchemaViolation // JSON Schema failure
	UnknownOp       // op not known to the protocol
	TokenMissing
	TokenUnknown
	TokenExpired
	TokenReplayed
	TokenTheft         // a spent token presented again from another address or user
	TokenUserMismatch  // token bound to another userId
	TokenTopicMismatch // token not valid for this topic
	TokenInvalid       // JWT: bad signature, alg, claims
	TopicDenied        // topic rule says deny / no rule matched
	TopicOtherUser     // {userId} rule for another user
	PublishDenied
	NotSubscribed
	Unsupported
	Internal
	TooManySubscriptions // per-connection subscription cap
	count
)

var names = [count]string{
	None:                 "none",
	Blocked:              "blocked",
	Banned:               "banned",
	ConnRate:             "conn_rate",
	PerIPConnections:     "per_ip_connections",
	GlobalConnections:    "global_connections",
	HandshakeTimeout:     "handshake_timeout",
	HandshakeTooLarge:    "handshake_too_large",
	BadHandshake:         "bad_handshake",
	BadOrigin:            "bad_origin",
	BadSubprotocol:       "bad_subprotocol",
	BadPath:              "bad_path",
	BadClientIP:          "bad_client_ip",
	ProxyHeader:          "proxy_header",
	AuditUnavailable:     "audit_unavailable",
	ShuttingDown:         "shutting_down",
	HandshakeFailRate:    "handshake_fail_rate",
	BadHeader:            "bad_header",
	FDExhausted:          "fd_exhausted",
	ProtocolError:        "protocol_error",
	InvalidUTF8:          "invalid_utf8",
	FrameTooLarge:        "frame_too_large",
	MessageTooLarge:      "message_too_large",
	MsgRate:              "msg_rate",
	SlowConsumer:         "slow_consumer",
	PingTimeout:          "ping_timeout",
	ClientClosed:         "client_closed",
	ReadError:            "read_error",
	MessageTimeout:       "message_timeout",
	InboundBudget:        "inbound_budget",
	GlobalInbound:        "global_inbound_budget",
	BytesRate:            "bytes_rate",
	BadJSON:              "bad_json",
	TooDeep:              "too_deep",
	SchemaViolation:      "schema_violation",
	UnknownOp:            "unknown_op",
	TokenMissing:         "token_missing",
	TokenUnknown:         "token_unknown",
	TokenExpired:         "token_expired",
	TokenReplayed:        "token_replayed",
	TokenTheft:           "token_theft_suspected",
	TokenUserMismatch:    "token_user_mismatch",
	TokenTopicMismatch:   "token_topic_mismatch",
	TokenInvalid:         "token_invalid",
	TopicDenied:          "topic_denied",
	TopicOtherUser:       "topic_other_user",
	PublishDenied:        "publish_denied",
	NotSubscribed:        "not_subscribed",
	Unsupported:          "unsupported",
	Internal:             "internal",
	TooManySubscriptions: "too_many_subscriptions",
}

// String returns the audit spelling of r.
func (r Reason) String() string {
	if r < count {
		return names[r]
	}
	return "unknown"
}

// IsAuth reports whether r is a token problem: the client only ever learns
// "auth_failed", the audit trail gets r.
func (r Reason) IsAuth() bool { return r >= TokenMissing && r <= TokenInvalid }
