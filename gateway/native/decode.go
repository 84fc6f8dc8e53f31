package native

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/portcullis-gw/portcullis/policy/reason"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// MaxDepth is the deepest JSON nesting accepted in a client message.
const MaxDepth = 32

// Message is a decoded, shape-checked client message.
type Message struct {
	Op     string
	ID     int64
	HasID  bool
	Topic  string
	UserID string
	Token  string
	Data   json.RawMessage // publish only; aliases the input
}

// Violation says why a message was refused. Message is safe to send to the
// client: it names the field, never echoes the payload.
type Violation struct {
	Reason  reason.Reason
	Pointer string // JSON pointer of the failing field, e.g. /topic
	Message string
}

// fields each op allows (beyond "op"), and which are required.
var ops = map[string]struct{ allowed, required []string }{
	"subscribe":   {[]string{"id", "topic", "userId", "token"}, []string{"topic"}},
	"unsubscribe": {[]string{"id", "topic"}, []string{"topic"}},
	"publish":     {[]string{"id", "topic", "data"}, []string{"topic", "data"}},
	"ping":        {[]string{"id"}, nil},
}

// Depth returns the deepest nesting of arrays and objects in b, counting
// only brackets outside strings. It does not validate b.
func Depth(b []byte) int {
	depth, max := 0, 0
	in, esc := false, false
	for _, c := range b {
		switch {
		case in:
			if esc {
				esc = false
			} else if c == '\\' {
				esc = true
			} else if c == '"' {
				in = false
			}
		case c == '"':
			in = true
		case c == '{' || c == '[':
			depth++
			if depth > max {
				max = depth
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return max
}

func violation(r reason.Reason, ptr, msg string) *Violation {
	return &Violation{Reason: r, Pointer: ptr, Message: msg}
}

// Decode checks one raw client message: nesting depth first (cheap, before
// parsing), then JSON, then the shape of its op: known fields only, each
// of the right type and length.
func Decode(raw []byte) (Message, *Violation) {
	var m Message
	if Depth(raw) > MaxDepth {
		return m, violation(reason.TooDeep, "", "message nesting deeper than "+strconv.Itoa(MaxDepth))
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		if json.Valid(raw) {
			return m, violation(reason.SchemaViolation, "", "message must be a JSON object")
		}
		return m, violation(reason.BadJSON, "", "message is not valid JSON")
	}
	opRaw, ok := fields["op"]
	if !ok {
		return m, violation(reason.SchemaViolation, "/op", "missing field: op")
	}
	if err := json.Unmarshal(opRaw, &m.Op); err != nil {
		return m, violation(reason.SchemaViolation, "/op", "op must be a string")
	}
	// The id is read before the op is judged so even an error echoes it.
	if idRaw, ok := fields["id"]; ok {
		n, err := strconv.ParseInt(string(bytes.TrimSpace(idRaw)), 10, 64)
		if err != nil || n < 0 || n > 1<<53 {
			return m, violation(reason.SchemaViolation, "/id", "id must be an integer between 0 and 2^53")
		}
		m.ID, m.HasID = n, true
	}
	spec, ok := ops[m.Op]
	if !ok {
		return m, violation(reason.UnknownOp, "/op", "unknown op")
	}
	for k := range fields {
		if k == "op" || contains(spec.allowed, k) {
			continue
		}
		return m, violation(reason.SchemaViolation, "/"+pointerEscape(k), "unexpected field in "+m.Op+" message")
	}
	for _, k := range spec.required {
		if _, ok := fields[k]; !ok {
			return m, violation(reason.SchemaViolation, "/"+k, "missing field: "+k)
		}
	}
	if v, ok := fields["topic"]; ok {
		if json.Unmarshal(v, &m.Topic) != nil || !topics.ValidTopic(m.Topic) {
			return m, violation(reason.SchemaViolation, "/topic",
				"topic must be dot-separated segments of [A-Za-z0-9_:@-], at most 200 characters")
		}
	}
	if v, ok := fields["userId"]; ok {
		id, valid := userID(v)
		if !valid {
			return m, violation(reason.SchemaViolation, "/userId",
				"userId must be 1-128 characters of [A-Za-z0-9_.@:-] or an integer")
		}
		m.UserID = id
	}
	if v, ok := fields["token"]; ok {
		if json.Unmarshal(v, &m.Token) != nil || len(m.Token) > 2048 || !tokenChars(m.Token) {
			return m, violation(reason.SchemaViolation, "/token", "token must be a string of at most 2048 URL-safe characters")
		}
	}
	if v, ok := fields["data"]; ok {
		m.Data = v
	}
	return m, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func pointerEscape(k string) string {
	if len(k) > 64 {
		k = k[:64]
	}
	var b []byte
	for i := 0; i < len(k); i++ {
		switch c := k[i]; {
		case c == '~':
			b = append(b, '~', '0')
		case c == '/':
			b = append(b, '~', '1')
		case c < 0x20 || c >= 0x7f:
			b = append(b, '?')
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

func userID(raw json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		n, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
		if err != nil {
			return "", false
		}
		s = strconv.FormatInt(n, 10)
	}
	if s == "" || len(s) > 128 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '@' || c == ':') {
			return "", false
		}
	}
	return s, true
}

func tokenChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '~' || c == '=' || c == '+' || c == '/') {
			return false
		}
	}
	return true
}
