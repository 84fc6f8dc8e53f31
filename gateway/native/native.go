// Package native encodes the server side of the `portcullis.v1` wire protocol
// (docs/PROTOCOL.md) and maps refusal reasons to its client-visible error codes.
// Decoding and validation of client messages live in policy/schema.
//
// Encoders append to a caller's buffer and never allocate beyond its growth.
// native imports only audit/reason and audit (its JSON string encoder)
// from the project.
package native

import (
	"strconv"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Subprotocol is the name negotiated in Sec-WebSocket-Protocol.
const Subprotocol = "portcullis.v1"

// Code is a client-visible error code of docs/PROTOCOL.md.
type Code string

// Error codes.
const (
	BadRequest  Code = "bad_request"
	AuthFailed  Code = "auth_failed"
	Forbidden   Code = "forbidden"
	RateLimited Code = "rate_limited"
	TooLarge    Code = "too_large"
	Unsupported Code = "unsupported"
	Internal    Code = "internal"
)

// CodeFor maps a precise reason to what the client may learn. Every token
// problem is auth_failed: the client never learns which one.
func CodeFor(r reason.Reason) Code {
	switch {
	case r.IsAuth():
		return AuthFailed
	}
	switch r {
	case reason.BadJSON, reason.TooDeep, reason.SchemaViolation, reason.NotSubscribed:
		return BadRequest
	case reason.UnknownOp, reason.Unsupported:
		return Unsupported
	case reason.TopicDenied, reason.TopicOtherUser, reason.PublishDenied, reason.TooManySubscriptions:
		return Forbidden
	case reason.MsgRate:
		return RateLimited
	case reason.MessageTooLarge:
		return TooLarge
	}
	return Internal
}

// MessageFor is the developer-facing text sent with CodeFor(r). It names no
// secret and echoes no payload.
func MessageFor(r reason.Reason) string {
	switch {
	case r.IsAuth():
		return "authentication failed"
	}
	switch r {
	case reason.BadJSON:
		return "message is not valid JSON"
	case reason.TooDeep:
		return "message nesting too deep"
	case reason.NotSubscribed:
		return "not subscribed to this topic"
	case reason.UnknownOp:
		return "unknown op"
	case reason.TopicDenied, reason.TopicOtherUser:
		return "subscription to this topic is not allowed"
	case reason.PublishDenied:
		return "publishing to this topic is not allowed"
	case reason.TooManySubscriptions:
		return "too many subscriptions on this connection"
	case reason.MsgRate:
		return "too many messages, slow down"
	case reason.MessageTooLarge:
		return "message too large"
	case reason.TokenSourceUnavailable:
		return "token service unavailable, try again"
	}
	return "internal error"
}

// AppendWelcome appends the first frame payload of a session.
func AppendWelcome(dst []byte, session, server string) []byte {
	dst = append(dst, `{"op":"welcome","session":`...)
	dst = AppendString(dst, session)
	dst = append(dst, `,"server":`...)
	dst = AppendString(dst, server)
	return append(dst, '}')
}

// AppendSubscribed appends the reply to a successful subscribe.
func AppendSubscribed(dst []byte, id int64, hasID bool, topic string) []byte {
	return appendAck(dst, "subscribed", id, hasID, topic)
}

// AppendUnsubscribed appends the reply to a successful unsubscribe.
func AppendUnsubscribed(dst []byte, id int64, hasID bool, topic string) []byte {
	return appendAck(dst, "unsubscribed", id, hasID, topic)
}

// AppendPublished appends the reply to a client publish.
func AppendPublished(dst []byte, id int64, hasID bool, topic string) []byte {
	return appendAck(dst, "published", id, hasID, topic)
}

func appendAck(dst []byte, op string, id int64, hasID bool, topic string) []byte {
	dst = append(dst, `{"op":"`...)
	dst = append(dst, op...)
	dst = append(dst, '"')
	if hasID {
		dst = append(dst, `,"id":`...)
		dst = strconv.AppendInt(dst, id, 10)
	}
	dst = append(dst, `,"topic":`...)
	dst = AppendString(dst, topic)
	return append(dst, '}')
}

// AppendPong appends the reply to a ping.
func AppendPong(dst []byte, id int64, hasID bool) []byte {
	dst = append(dst, `{"op":"pong"`...)
	if hasID {
		dst = append(dst, `,"id":`...)
		dst = strconv.AppendInt(dst, id, 10)
	}
	return append(dst, '}')
}

// AppendEvent appends a publication; data must be valid JSON.
func AppendEvent(dst []byte, topic string, data []byte) []byte {
	dst = append(dst, `{"op":"event","topic":`...)
	dst = AppendString(dst, topic)
	dst = append(dst, `,"data":`...)
	dst = append(dst, data...)
	return append(dst, '}')
}

// AppendError appends an error reply for reason r.
func AppendError(dst []byte, id int64, hasID bool, r reason.Reason, message string) []byte {
	if message == "" {
		message = MessageFor(r)
	}
	dst = append(dst, `{"op":"error"`...)
	if hasID {
		dst = append(dst, `,"id":`...)
		dst = strconv.AppendInt(dst, id, 10)
	}
	dst = append(dst, `,"code":"`...)
	dst = append(dst, CodeFor(r)...)
	dst = append(dst, `","message":`...)
	dst = AppendString(dst, message)
	return append(dst, '}')
}

// AppendString appends s as a JSON string, escaped as encoding/json does
// without HTML escaping (the audit trail's encoder): invalid UTF-8 becomes
// U+FFFD; U+2028 and U+2029 are escaped so the output is safe inside
// <script> too.
func AppendString(dst []byte, s string) []byte { return audit.AppendJSONString(dst, s) }
