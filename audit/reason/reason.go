// Package reason is the one spelling of why Portcullis refused, closed or
// counted something, or why an operator or the gateway itself acted. A
// Reason feeds the audit event's "reason" field, the metric label, the
// client-visible code and the strike weight — never three spellings of the
// same thing. Every name has a row in docs/AUDIT.md (a test in policy/bans
// checks). It is the vocabulary every layer shares, so it is a leaf. It
// imports nothing from the project.
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

	// the trail itself: audit_header and audit_retention lines
	TrailNew        // the first line of a trail (prev is 64 zeros)
	TrailRotated    // a new file; detail names the previous one
	TrailResumed    // a writer restarted and appends to the existing file
	TrailRepaired   // a writer restarted after a crash left an incomplete tail
	RetentionAge    // a rotated file older than audit.retain
	RetentionSize   // a rotated file beyond audit.retain_bytes
	FeedRequest     // a feed's URL does not make a request
	FeedUnreachable // a feed's server could not be reached or read
	FeedStatus      // a feed answered a non-2xx status
	FeedTooLarge    // a feed's body over limits.max_message_bytes
	FeedBadUTF8     // a feed's body not UTF-8
	FeedBadJSON     // a feed's body not JSON
	FeedTooDeep     // a feed's body nested too deep
	FeedPublish     // a feed's body fetched but not published

	// the admin API and operators
	AdminKeyMissing // no Authorization: Bearer header
	AdminKeyWrong   // a Bearer key that is not the admin key
	BadRequest      // a request body or parameter the API refuses
	TokensFromSite  // POST /v1/tokens while tokens come from site-signed JWTs
	TokenTableFull  // the minted-token table is full
	PublishFailed   // a publication could not be queued
	AllowListed     // a ban of an allow-listed address
	NotBanned       // an unban of a prefix that is not banned
	Manual          // a ban or unban an operator asked for; their text is in detail
	SilenceAdd      // an alert silence added
	SilenceExpire   // an alert silence ended by hand

	// alert mails: what the alert pipeline did with a notification
	AlertQueued    // saved in the outbox
	AlertSent      // accepted by the SMTP server
	AlertInhibited // muted while an inhibiting rule fires
	AlertSilenced  // muted by a silence
	AlertCapped    // held back by alerting.max_per_hour
	AlertDigest    // the digest of held-back notifications was queued
	AlertRetry     // an attempt failed; another follows
	AlertRefused   // an attempt failed for good
	AlertExpired   // not delivered in time
	AlertDropped   // could not be saved in the outbox

	// the TLS front (gateway/tlsfront), before the HTTP handshake
	TLSHandshake   // the client broke the TLS handshake: not TLS, no common version, suite or ALPN
	TLSClientAlert // the client aborted the TLS handshake with an alert (it refused our certificate)

	// the cluster
	TokenSourceUnavailable // the shared token store could not answer a redemption in time: refused (fail closed)
	ClusterUnavailable     // cluster.on_redis_down: refuse while Redis is unreachable: new connections refused
	AlertSentElsewhere     // an alert mail not sent: another node sent its group's mail meanwhile
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
	TrailNew:             "new_trail",
	TrailRotated:         "rotated",
	TrailResumed:         "resumed",
	TrailRepaired:        "repaired",
	RetentionAge:         "age",
	RetentionSize:        "size",
	FeedRequest:          "feed_request",
	FeedUnreachable:      "feed_unreachable",
	FeedStatus:           "feed_status",
	FeedTooLarge:         "feed_too_large",
	FeedBadUTF8:          "feed_bad_utf8",
	FeedBadJSON:          "feed_bad_json",
	FeedTooDeep:          "feed_too_deep",
	FeedPublish:          "feed_publish",
	AdminKeyMissing:      "admin_key_missing",
	AdminKeyWrong:        "admin_key_wrong",
	BadRequest:           "bad_request",
	TokensFromSite:       "tokens_from_site",
	TokenTableFull:       "unavailable",
	PublishFailed:        "publish_failed",
	AllowListed:          "allow_listed",
	NotBanned:            "not_banned",
	Manual:               "manual",
	SilenceAdd:           "silence_add",
	SilenceExpire:        "silence_expire",
	AlertQueued:          "queued",
	AlertSent:            "sent",
	AlertInhibited:       "inhibited",
	AlertSilenced:        "silenced",
	AlertCapped:          "capped",
	AlertDigest:          "digest",
	AlertRetry:           "retry",
	AlertRefused:         "refused",
	AlertExpired:         "expired",
	AlertDropped:         "dropped",
	TLSHandshake:         "tls_handshake",
	TLSClientAlert:       "tls_client_alert",

	TokenSourceUnavailable: "token_source_unavailable",
	ClusterUnavailable:     "cluster_unavailable",
	AlertSentElsewhere:     "sent_by_other_node",
}

// String returns the audit spelling of r.
func (r Reason) String() string {
	if r < count {
		return names[r]
	}
	return "unknown"
}

// Parse returns the Reason whose name is s (a line read back, a config
// value); false for a name that is no Reason, "none" and "unknown" included.
func Parse(s string) (Reason, bool) {
	for r := Reason(1); r < count; r++ {
		if names[r] == s {
			return r, true
		}
	}
	return None, false
}

// IsAuth reports whether r is a token problem: the client only ever learns
// "auth_failed", the audit trail gets r.
func (r Reason) IsAuth() bool { return r >= TokenMissing && r <= TokenInvalid }
