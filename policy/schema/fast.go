package schema

import (
	"encoding/json"
)

// The fast path: a single pass over the raw bytes that accepts only
// messages written the plain way — an object, each known key once and
// without escapes, string values drawn from their field's charset (so they
// hold no escape, quote or control byte), id and integer userId as
// canonical decimal digits — and decodes them into a Message. It never
// refuses: whenever it is unsure it reports !ok and the schema path
// decides. Soundness (fast accept ⇒ schema accept with the same Message) is
// what equiv_test.go and FuzzCheck check.

// field bits, for the seen/allowed/required sets.
const (
	fOp = 1 << iota
	fID
	fTopic
	fUserID
	fToken
	fData
)

// opShape is what the op's schema allows and requires, as field bits. It
// mirrors schemas/<op>.json; TestFastShapesMatchSchemas keeps them in step.
type opShape struct {
	name              string
	allowed, required uint8
}

var shapes = [...]opShape{
	{"subscribe", fOp | fID | fTopic | fUserID | fToken, fOp | fTopic},
	{"unsubscribe", fOp | fID | fTopic, fOp | fTopic},
	{"publish", fOp | fID | fTopic | fData, fOp | fTopic | fData},
	{"ping", fOp | fID, fOp},
}

// Charset tables for the plain-string fields.
var (
	topicByte  [256]bool // [A-Za-z0-9_:@.-]; topicShape places the dots
	userIDByte [256]bool // [A-Za-z0-9_@:-]: one topic segment (topics.ValidUserID), never "."
	tokenByte  [256]bool // [A-Za-z0-9_.~+/=-]
)

func init() {
	for c := 'a'; c <= 'z'; c++ {
		topicByte[c], userIDByte[c], tokenByte[c] = true, true, true
		topicByte[c-'a'+'A'], userIDByte[c-'a'+'A'], tokenByte[c-'a'+'A'] = true, true, true
	}
	for c := '0'; c <= '9'; c++ {
		topicByte[c], userIDByte[c], tokenByte[c] = true, true, true
	}
	for _, c := range "_:@.-" {
		topicByte[c] = true
	}
	for _, c := range "_@:-" {
		userIDByte[c] = true
	}
	for _, c := range "_.~+/=-" {
		tokenByte[c] = true
	}
}

// Field length caps of the schemas (bytes; the charsets are ASCII, so bytes
// are characters).
const (
	maxTopicLen  = 200
	maxUserIDLen = 128
	minTokenLen  = 16
	maxTokenLen  = MaxTokenLen
)

// MaxTokenLen is the longest token a client may present, in bytes, whatever
// the token source: the client schemas (schemas/subscribe.json, checked
// equal by a test) and the jwt source (policy/jwt) share it.
const MaxTokenLen = 2048

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// fastDecode tries the plain path. ok is false when it could not decide.
func fastDecode(b []byte) (m Message, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return m, false
	}
	i = skipSpace(b, i+1)
	var seen uint8
	var topic, userID, token []byte
	if i < len(b) && b[i] == '}' {
		return m, false // {} has no op: the schema path words the refusal
	}
	for {
		// key
		if i >= len(b) || b[i] != '"' {
			return m, false
		}
		j := i + 1
		for j < len(b) && b[j] != '"' && b[j] != '\\' && b[j] >= 0x20 {
			j++
		}
		if j >= len(b) || b[j] != '"' {
			return m, false
		}
		key := b[i+1 : j]
		i = skipSpace(b, j+1)
		if i >= len(b) || b[i] != ':' {
			return m, false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return m, false
		}
		var bit uint8
		switch string(key) { // no allocation: the compiler compares in place
		case "op":
			bit = fOp
			s, n, good := plainString(b, i, nil)
			if !good {
				return m, false
			}
			switch string(s) {
			case "subscribe":
				m.Op = shapes[0].name
			case "unsubscribe":
				m.Op = shapes[1].name
			case "publish":
				m.Op = shapes[2].name
			case "ping":
				m.Op = shapes[3].name
			default:
				return m, false
			}
			i = n
		case "id":
			bit = fID
			v, n, good := plainInt(b, i)
			if !good {
				return m, false
			}
			m.ID, m.HasID, i = v, true, n
		case "topic":
			bit = fTopic
			s, n, good := plainString(b, i, &topicByte)
			if !good || !topicShape(s) {
				return m, false
			}
			topic, i = s, n
		case "userId":
			bit = fUserID
			if b[i] == '"' {
				s, n, good := plainString(b, i, &userIDByte)
				if !good || len(s) == 0 || len(s) > maxUserIDLen {
					return m, false
				}
				userID, i = s, n
			} else {
				start := i
				_, n, good := plainInt(b, i)
				if !good {
					return m, false
				}
				// Canonical digits are already the decimal normal form.
				userID, i = b[start:n], n
			}
		case "token":
			bit = fToken
			s, n, good := plainString(b, i, &tokenByte)
			if !good || len(s) < minTokenLen || len(s) > maxTokenLen {
				return m, false
			}
			token, i = s, n
		case "data":
			bit = fData
			n, good := skipValue(b, i)
			if !good || !json.Valid(b[i:n]) {
				return m, false
			}
			m.Data, i = json.RawMessage(b[i:n:n]), n
		default:
			return m, false
		}
		if seen&bit != 0 {
			return m, false // a repeated key: let the schema path decide
		}
		seen |= bit
		i = skipSpace(b, i)
		if i >= len(b) {
			return m, false
		}
		if b[i] == '}' {
			i++
			break
		}
		if b[i] != ',' {
			return m, false
		}
		i = skipSpace(b, i+1)
	}
	if skipSpace(b, i) != len(b) || seen&fOp == 0 {
		return m, false
	}
	var shape opShape
	for _, s := range shapes {
		if s.name == m.Op {
			shape = s
		}
	}
	if seen&^shape.allowed != 0 || seen&shape.required != shape.required {
		return m, false
	}
	if topic != nil {
		m.Topic = string(topic)
	}
	if userID != nil {
		m.UserID = string(userID)
	}
	if token != nil {
		m.Token = string(token)
	}
	return m, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// plainString reads a string starting at b[i] == '"' whose bytes all belong
// to set (any byte but quote, backslash and control bytes when set is nil).
// It returns the content and the index after the closing quote.
func plainString(b []byte, i int, set *[256]bool) (s []byte, next int, ok bool) {
	if b[i] != '"' {
		return nil, 0, false
	}
	j := i + 1
	for ; j < len(b) && b[j] != '"'; j++ {
		c := b[j]
		if set != nil {
			if !set[c] {
				return nil, 0, false
			}
		} else if c == '\\' || c < 0x20 || c >= 0x80 {
			return nil, 0, false
		}
	}
	if j >= len(b) {
		return nil, 0, false
	}
	return b[i+1 : j], j + 1, true
}

// plainInt reads a canonical non-negative decimal integer (no sign, no
// leading zero, no fraction or exponent) not above MaxID.
func plainInt(b []byte, i int) (v int64, next int, ok bool) {
	j := i
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		v = v*10 + int64(b[j]-'0')
		j++
		if j-i > 16 || v > MaxID { // 2^53-1 has 16 digits
			return 0, 0, false
		}
	}
	if j == i || (b[i] == '0' && j-i > 1) {
		return 0, 0, false
	}
	if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
		return 0, 0, false
	}
	return v, j, true
}

// topicShape checks what the charset alone does not: the length cap and
// that dots separate non-empty segments (^seg(\.seg)*$).
func topicShape(s []byte) bool {
	if len(s) == 0 || len(s) > maxTopicLen || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for k := 1; k < len(s); k++ {
		if s[k] == '.' && s[k-1] == '.' {
			return false
		}
	}
	return true
}

// skipValue finds the end of the JSON value starting at b[i] loosely:
// brackets matched outside strings, a string to its closing quote, a scalar
// to the next delimiter. The caller confirms the span with json.Valid.
func skipValue(b []byte, i int) (next int, ok bool) {
	switch b[i] {
	case '"':
		for j := i + 1; j < len(b); j++ {
			switch b[j] {
			case '\\':
				j++
			case '"':
				return j + 1, true
			}
		}
		return 0, false
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				for j++; j < len(b) && b[j] != '"'; j++ {
					if b[j] == '\\' {
						j++
					}
				}
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && !isSpace(b[j]) {
		j++
	}
	return j, j > i
}
