package wamp

import (
	"encoding/json"
	"math"
	"strings"
)

// V1Type is a WAMP v1 message type code.
type V1Type uint8

// WAMP v1 message types.
const (
	V1Welcome     V1Type = 0 // server → client, first message
	V1Prefix      V1Type = 1
	V1Call        V1Type = 2
	V1CallResult  V1Type = 3 // server → client
	V1CallError   V1Type = 4 // server → client
	V1Subscribe   V1Type = 5
	V1Unsubscribe V1Type = 6
	V1Publish     V1Type = 7
	V1Event       V1Type = 8 // server → client
)

// ErrorUnsupported is the CALLERROR URI for RPC, which Portcullis lacks.
const ErrorUnsupported = "http://portcullis.dev/error#unsupported"

// V1MaxBytes is the largest client message of type t accepted for
// parsing, in bytes: a size cap per type (the gateway's message size limit
// alone for PUBLISH, whose data is relayed). ok is false for a type a
// client may not send.
func V1MaxBytes(t V1Type) (n int, ok bool) {
	switch t {
	case V1Prefix, V1Subscribe, V1Unsubscribe:
		return MaxTopicMsgBytes, true
	case V1Call:
		return MaxCallBytes, true
	case V1Publish:
		return math.MaxInt, true
	}
	return 0, false
}

// V1Message is a parsed client message of WAMP v1. Strings are copies;
// Event aliases the parsed input and is valid only as long as that buffer
// is: copy it to keep it.
type V1Message struct {
	Type V1Type

	// Topic is the topic URI exactly as sent (SUBSCRIBE, UNSUBSCRIBE,
	// PUBLISH), the procedure URI (CALL) or the URI (PREFIX). Possibly a
	// CURIE or a seed JSON topic: never log it.
	Topic  string
	Prefix string // PREFIX
	CallID string // CALL

	Event     json.RawMessage // PUBLISH payload, any JSON
	ExcludeMe bool            // PUBLISH [7,t,e,true]
	Exclude   []string        // PUBLISH exclude list (session ids)
	Eligible  []string        // PUBLISH eligible list (session ids)
	// HasEligible says an eligible list was sent: only the sessions in it
	// (none, if it is empty) may receive the event.
	HasEligible bool
}

// ParseV1 parses one client message: PREFIX, CALL, SUBSCRIBE, UNSUBSCRIBE
// or PUBLISH in all four forms. Server message types and unknown codes are
// ErrUnknownType; everything else that is not exactly one of these layouts
// is ErrShape (ErrJSON when not JSON at all). Ratchet closes with 1007 on
// all of them.
func ParseV1(b []byte) (V1Message, error) {
	arr, perr := splitArray(b)
	if perr != nil {
		return V1Message{}, perr
	}
	code, perr := typeCode(arr[0])
	if perr != nil {
		return V1Message{}, perr
	}
	m := V1Message{Type: V1Type(code)}
	switch m.Type {
	case V1Prefix:
		if len(arr) != 3 {
			return m, shapeErr("PREFIX has 3 elements")
		}
		if m.Prefix, perr = str(arr[1], "PREFIX prefix"); perr != nil {
			return m, perr
		}
		if m.Topic, perr = str(arr[2], "PREFIX uri"); perr != nil {
			return m, perr
		}
	case V1Call:
		if len(arr) < 3 {
			return m, shapeErr("CALL has at least 3 elements")
		}
		if m.CallID, perr = str(arr[1], "CALL callID"); perr != nil {
			return m, perr
		}
		if len(m.CallID) > MaxURIBytes {
			return m, &ParseError{Kind: ErrTooLarge, Msg: "CALL callID too long"}
		}
		if m.Topic, perr = str(arr[2], "CALL procURI"); perr != nil {
			return m, perr
		}
	case V1Subscribe, V1Unsubscribe:
		if len(arr) != 2 {
			return m, shapeErr("SUBSCRIBE and UNSUBSCRIBE have 2 elements")
		}
		if m.Topic, perr = str(arr[1], "topic"); perr != nil {
			return m, perr
		}
	case V1Publish:
		if len(arr) < 3 || len(arr) > 5 {
			return m, shapeErr("PUBLISH has 3 to 5 elements")
		}
		if m.Topic, perr = str(arr[1], "topic"); perr != nil {
			return m, perr
		}
		m.Event = arr[2]
		switch len(arr) {
		case 4:
			switch string(arr[3]) {
			case "true":
				m.ExcludeMe = true
			case "false":
			default:
				if m.Exclude, perr = sessionList(arr[3], "PUBLISH exclude"); perr != nil {
					return m, perr
				}
			}
		case 5:
			if m.Exclude, perr = sessionList(arr[3], "PUBLISH exclude"); perr != nil {
				return m, perr
			}
			if m.Eligible, perr = sessionList(arr[4], "PUBLISH eligible"); perr != nil {
				return m, perr
			}
			m.HasEligible = true
		}
	default:
		return m, &ParseError{Kind: ErrUnknownType, Msg: "message type not accepted from a client"}
	}
	return m, nil
}

// sessionList decodes a list of v1 session ids (strings).
func sessionList(e json.RawMessage, what string) ([]string, *ParseError) {
	if !isArray(e) {
		return nil, shapeErr(what + " is not a list")
	}
	var l []string
	if err := json.Unmarshal(e, &l); err != nil {
		return nil, shapeErr(what + " is not a list of session id strings")
	}
	if len(l) > MaxListLen {
		return nil, &ParseError{Kind: ErrTooLarge, Msg: what + " too long"}
	}
	if l == nil {
		l = []string{}
	}
	return l, nil
}

// AppendV1Welcome appends WELCOME [0, session, 1, serverIdent].
func AppendV1Welcome(dst []byte, session, serverIdent string) []byte {
	dst = append(dst, "[0,"...)
	dst = AppendString(dst, session)
	dst = append(dst, ",1,"...)
	dst = AppendString(dst, serverIdent)
	return append(dst, ']')
}

// AppendV1Event appends EVENT [8, topic, event]; topic is the exact string
// the subscriber sent, event valid JSON.
func AppendV1Event(dst []byte, topic string, event []byte) []byte {
	dst = append(dst, "[8,"...)
	dst = AppendString(dst, topic)
	dst = append(dst, ',')
	dst = append(dst, event...)
	return append(dst, ']')
}

// AppendV1EventPrefix appends how EVENTs of topic begin: "[8,<topic>,".
func AppendV1EventPrefix(dst []byte, topic string) []byte {
	dst = append(dst, "[8,"...)
	dst = AppendString(dst, topic)
	return append(dst, ',')
}

// AppendV1CallError appends CALLERROR [4, callID, errorURI, desc].
func AppendV1CallError(dst []byte, callID, errorURI, desc string) []byte {
	dst = append(dst, "[4,"...)
	dst = AppendString(dst, callID)
	dst = append(dst, ',')
	dst = AppendString(dst, errorURI)
	dst = append(dst, ',')
	dst = AppendString(dst, desc)
	return append(dst, ']')
}

// Limits of one connection's PREFIX table.
const (
	MaxPrefixes    = 64 // prefixes per connection
	MaxPrefixBytes = 64 // bytes of one prefix
)

// Prefixes is one WAMP v1 connection's PREFIX table. The zero value is an
// empty table ready for use. Not safe for concurrent use.
type Prefixes struct {
	m     map[string]string
	bytes int // see Bytes
}

// PrefixEntryBytes is what Bytes counts for one entry beyond its strings:
// the map slot and the two string headers.
const PrefixEntryBytes = 64

// Bytes is the memory the table holds, in bytes: its prefixes and URIs
// plus PrefixEntryBytes per entry.
func (p *Prefixes) Bytes() int { return p.bytes }

// Set registers prefix for uri, replacing an earlier registration. A
// prefix must be non-empty, at most MaxPrefixBytes and contain no ':'; a
// uri at most MaxURIBytes; a table at most MaxPrefixes entries.
func (p *Prefixes) Set(prefix, uri string) error {
	switch {
	case prefix == "" || strings.IndexByte(prefix, ':') >= 0:
		return shapeErr("PREFIX prefix is empty or contains ':'")
	case len(prefix) > MaxPrefixBytes:
		return &ParseError{Kind: ErrTooLarge, Msg: "PREFIX prefix too long"}
	case len(uri) > MaxURIBytes:
		return &ParseError{Kind: ErrTooLarge, Msg: "PREFIX uri too long"}
	}
	if _, ok := p.m[prefix]; !ok && len(p.m) >= MaxPrefixes {
		return &ParseError{Kind: ErrTooLarge, Msg: "too many prefixes on this connection"}
	}
	if p.m == nil {
		p.m = make(map[string]string)
	}
	if old, ok := p.m[prefix]; ok {
		p.bytes -= len(prefix) + len(old) + PrefixEntryBytes
	}
	p.m[prefix] = uri
	p.bytes += len(prefix) + len(uri) + PrefixEntryBytes
	return nil
}

// Len is how many prefixes are registered.
func (p *Prefixes) Len() int { return len(p.m) }

// Expand resolves a CURIE: "prefix:ref" with a registered prefix becomes
// uri+ref (plain concatenation, as WAMP v1 and AutobahnJS do); anything
// else is returned unchanged.
func (p *Prefixes) Expand(s string) string {
	if len(p.m) == 0 {
		return s
	}
	i := strings.IndexByte(s, ':')
	if i <= 0 {
		return s
	}
	if uri, ok := p.m[s[:i]]; ok {
		return uri + s[i+1:]
	}
	return s
}

// MaxSeedBytes caps a seed JSON topic: the longest topic (200 bytes),
// userId (128) and token (2,048) the native subscribe schema accepts, plus
// room for the keys and escapes. Longer is refused before it is parsed.
const MaxSeedBytes = 2560

// Seed is a WAMP v1 topic in the seed pattern:
// JSON.stringify({topic, userId, token}).
type Seed struct {
	Topic string
	// UserID is the userId value as sent: a JSON string or number literal
	// (the subscribe schema decides which are acceptable), nil if absent.
	UserID json.RawMessage
	Token  string
}

// IsSeed reports whether topic is in the seed pattern (a JSON object).
func IsSeed(topic string) bool { return len(topic) > 0 && topic[0] == '{' }

// ParseSeed decodes a seed topic: a JSON object with a string "topic", an
// optional "userId" (string or number) and an optional string "token", and
// no other key. The error never quotes s.
func ParseSeed(s string) (Seed, error) {
	if len(s) > MaxSeedBytes {
		return Seed{}, &ParseError{Kind: ErrTooLarge, Msg: "seed topic too long"}
	}
	if !json.Valid([]byte(s)) {
		return Seed{}, &ParseError{Kind: ErrJSON, Msg: "seed topic is not valid JSON"}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &fields); err != nil {
		return Seed{}, shapeErr("seed topic is not a JSON object")
	}
	var sd Seed
	var perr *ParseError
	for k, v := range fields {
		switch k {
		case "topic":
			if sd.Topic, perr = str(v, "seed topic's topic"); perr != nil {
				return Seed{}, perr
			}
		case "token":
			if string(v) == "null" {
				continue
			}
			if sd.Token, perr = str(v, "seed topic's token"); perr != nil {
				return Seed{}, perr
			}
		case "userId":
			if string(v) == "null" {
				continue
			}
			if len(v) == 0 || (v[0] != '"' && v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
				return Seed{}, shapeErr("seed topic's userId is not a string or a number")
			}
			sd.UserID = append(json.RawMessage(nil), v...)
		default:
			return Seed{}, shapeErr("seed topic has a key other than topic, userId and token")
		}
	}
	if sd.Topic == "" {
		return Seed{}, shapeErr("seed topic has no topic")
	}
	return sd, nil
}
