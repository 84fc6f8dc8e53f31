// Package wamp owns the wire formats of WAMP v1 (subprotocol "wamp", the
// dialect of Ratchet WampServer and AutobahnJS 0.8) and of WAMP v2 in its
// JSON serialization (subprotocol "wamp.2.json", basic profile, broker
// role): parsing client messages, encoding server messages, CURIE
// expansion, the seed-pattern JSON topic and WAMP v2 ids.
//
// Parsers take one complete text message and return a value or a
// *ParseError whose text never quotes the input: a WAMP v1 topic can carry
// a token (the seed pattern), so nothing a client sent may reach a log
// through an error. Encoders append to a caller's buffer.
//
// wamp decides nothing: who may subscribe or publish is the gateway's and
// policy's business. It imports only the standard library and
// gateway/native (for its JSON string encoder); it must never import
// policy, audit or the gateway itself.
package wamp

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/portcullis-gw/portcullis/gateway/native"
)

// Subprotocol names negotiated in Sec-WebSocket-Protocol. The ".batched"
// variants of v2 are never selected.
const (
	SubprotocolV1 = "wamp"
	SubprotocolV2 = "wamp.2.json"
)

// Limits on what a client may send, beyond the gateway's message size cap.
const (
	// MaxListLen is the most session ids one exclude or eligible list may
	// hold.
	MaxListLen = 1024
	// MaxURIBytes is the longest URI (topic, PREFIX target, realm, reason)
	// accepted in bytes; a seed JSON topic has its own cap, MaxSeedBytes.
	MaxURIBytes = 512
)

// Size caps of client messages by type, in bytes, applied before a
// message is parsed: the gateway refuses a larger one by its type code
// alone (PeekType), so a message whose body is never used cannot cost
// more than reading it.
const (
	// MaxSmallBytes caps messages made of a few ids and a URI: WAMP v2
	// UNSUBSCRIBE, ABORT and GOODBYE.
	MaxSmallBytes = 1024
	// MaxCallBytes caps RPC requests (v1 CALL, v2 CALL and REGISTER),
	// which are refused: only their call or request id is read.
	MaxCallBytes = 2048
	// MaxTopicMsgBytes caps messages that carry one topic and no data:
	// v1 PREFIX, SUBSCRIBE and UNSUBSCRIBE (a topic may be a seed JSON
	// topic of up to MaxSeedBytes, escaped inside a JSON string; a longer
	// one within this cap is refused by the seed rules) and v2 SUBSCRIBE.
	MaxTopicMsgBytes = 8192
	// MaxAuthBytes caps v2 HELLO and AUTHENTICATE (details with roles, a
	// ticket of up to 4 KiB).
	MaxAuthBytes = 8192
)

// PeekType reads the type code of a WAMP message, `[` code followed by
// `,` or `]` (JSON whitespace allowed), without looking further; ok is
// false when b does not begin so. It never allocates.
func PeekType(b []byte) (code int, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return 0, false
	}
	i = skipSpace(b, i+1)
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' && i-start < 4 {
		code = code*10 + int(b[i]-'0')
		i++
	}
	n := i - start
	if n == 0 || n > 3 || (n > 1 && b[start] == '0') || code > 255 {
		return 0, false
	}
	i = skipSpace(b, i)
	if i >= len(b) || (b[i] != ',' && b[i] != ']') {
		return 0, false
	}
	return code, true
}

// skipSpace returns the index of the first byte of b at or after i that is
// not JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// ErrKind classifies a parse failure; the gateway maps it to a reason.
type ErrKind uint8

const (
	// ErrInvalid is the zero kind, never returned.
	ErrInvalid ErrKind = iota
	// ErrJSON: the message is not JSON.
	ErrJSON
	// ErrShape: JSON, but not a message of the protocol (not an array,
	// wrong element types or count, a value over a cap).
	ErrShape
	// ErrUnknownType: an array whose type code the server does not accept
	// from a client.
	ErrUnknownType
	// ErrTooLarge: a value over its size cap (MaxSeedBytes, MaxURIBytes).
	ErrTooLarge
)

// ParseError says why a message was refused. Its text names the element
// and the rule, never the input.
type ParseError struct {
	Kind ErrKind
	Msg  string
}

func (e *ParseError) Error() string { return e.Msg }

func shapeErr(msg string) *ParseError { return &ParseError{Kind: ErrShape, Msg: msg} }

// splitArray decodes b as a JSON array of raw elements (aliasing b).
func splitArray(b []byte) ([]json.RawMessage, *ParseError) {
	b = bytes.TrimSpace(b)
	if !json.Valid(b) {
		return nil, &ParseError{Kind: ErrJSON, Msg: "message is not valid JSON"}
	}
	if len(b) == 0 || b[0] != '[' {
		return nil, shapeErr("message is not a JSON array")
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(b, &arr); err != nil {
		return nil, shapeErr("message is not a JSON array")
	}
	if len(arr) == 0 {
		return nil, shapeErr("message is an empty array")
	}
	return arr, nil
}

// typeCode reads element 0: a non-negative integer literal.
func typeCode(e json.RawMessage) (int, *ParseError) {
	n, ok := parseUint(e, 255)
	if !ok {
		return 0, shapeErr("element 0 (message type) is not a small non-negative integer")
	}
	return int(n), nil
}

// parseUint reads a plain JSON integer literal (no sign, fraction or
// exponent) not above max.
func parseUint(e json.RawMessage, max uint64) (uint64, bool) {
	if len(e) == 0 || len(e) > 20 {
		return 0, false
	}
	for _, c := range e {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	if len(e) > 1 && e[0] == '0' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(e), 10, 64)
	if err != nil || n > max {
		return 0, false
	}
	return n, true
}

// str decodes a JSON string element.
func str(e json.RawMessage, what string) (string, *ParseError) {
	if len(e) == 0 || e[0] != '"' {
		return "", shapeErr(what + " is not a string")
	}
	var s string
	if err := json.Unmarshal(e, &s); err != nil {
		return "", shapeErr(what + " is not a string")
	}
	return s, nil
}

// isObject reports whether e is a JSON object.
func isObject(e json.RawMessage) bool { return len(e) > 0 && e[0] == '{' }

// isArray reports whether e is a JSON array.
func isArray(e json.RawMessage) bool { return len(e) > 0 && e[0] == '[' }

// AppendString appends s as a JSON string (see native.AppendString).
func AppendString(dst []byte, s string) []byte { return native.AppendString(dst, s) }
