package query

import (
	"bytes"
	"encoding/json"
	"errors"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
)

// Fields is a set of trail keys a reader needs decoded; the parser skips the
// others without decoding them.
type Fields uint32

// The decodable keys of a trail line.
const (
	FieldTime Fields = 1 << iota
	FieldEvent
	FieldSeverity
	FieldSeq
	FieldIP
	FieldPeerIP
	FieldUser
	FieldTopic
	FieldReason
	FieldDetail
	FieldCount
	FieldFirst
	FieldLast
	FieldCountedPrefix
	FieldNode

	// FieldsTable are the keys the table shows.
	FieldsTable = FieldTime | FieldEvent | FieldSeverity | FieldSeq | FieldIP | FieldPeerIP |
		FieldUser | FieldTopic | FieldReason | FieldDetail | FieldCount | FieldFirst | FieldLast | FieldNode
)

// Record is one parsed trail line. Only the fields asked for are set.
//
// Line and the byte fields borrow from the reader's buffer: they are valid
// only until the callback that received the Record returns. Copy what you
// keep.
type Record struct {
	Line []byte // the line as written, without its newline

	Time  time.Time
	First time.Time // summary events: first folded occurrence
	Last  time.Time // summary events: last folded occurrence
	Seq   uint64
	Count int64 // summary events: how many occurrences were folded; 0 otherwise

	Event, Severity, IP, PeerIP, User, Topic, Reason, Detail []byte
	CountedPrefix                                            []byte
	Node                                                     []byte // the node that wrote the line; empty in a trail written without a node name
}

// N is how many occurrences r stands for: Count for a summary event, else 1.
func (r *Record) N() int64 {
	if r.Count > 0 {
		return r.Count
	}
	return 1
}

var errSyntax = errors.New("not a JSON object")

// Parse decodes the fields in want from line, a flat JSON object. It checks
// the line's structure (so a truncated or spliced line is an error) but
// decodes only what is asked for. r.Line is set to line.
func (r *Record) Parse(line []byte, want Fields) error {
	*r = Record{Line: line}
	n := len(line)
	i := skipWS(line, 0)
	if i >= n || line[i] != '{' {
		return errSyntax
	}
	i = skipWS(line, i+1)
	if i < n && line[i] == '}' {
		if skipWS(line, i+1) != n {
			return errSyntax
		}
		return nil
	}
	for {
		if i >= n || line[i] != '"' {
			return errSyntax
		}
		kEnd, kEsc, ok := scanString(line, i)
		if !ok {
			return errSyntax
		}
		if kEsc {
			return r.parseSlow(line, want)
		}
		key := line[i+1 : kEnd]
		i = skipWS(line, kEnd+1)
		if i >= n || line[i] != ':' {
			return errSyntax
		}
		i = skipWS(line, i+1)
		if i >= n {
			return errSyntax
		}
		var val []byte
		isStr, esc := false, false
		switch c := line[i]; c {
		case '"':
			end, e, ok := scanString(line, i)
			if !ok {
				return errSyntax
			}
			val, isStr, esc = line[i+1:end], true, e
			i = end + 1
		case '{', '[':
			return r.parseSlow(line, want)
		default:
			s := i
			for i < n && line[i] != ',' && line[i] != '}' && !isWS(line[i]) {
				i++
			}
			val = line[s:i]
			if !validLiteral(val) {
				return errSyntax
			}
		}
		if f := fieldOf(key); f&want != 0 {
			if isStr && esc {
				var err error
				if val, err = unescape(line[i-len(val)-2 : i]); err != nil {
					return errSyntax
				}
			}
			r.set(f, val, isStr)
		}
		i = skipWS(line, i)
		if i >= n {
			return errSyntax
		}
		if line[i] == ',' {
			i = skipWS(line, i+1)
			continue
		}
		if line[i] != '}' {
			return errSyntax
		}
		if skipWS(line, i+1) != n {
			return errSyntax
		}
		return nil
	}
}

// parseSlow handles lines the flat scanner does not: nested values and
// escaped keys. The trail's writer produces neither.
func (r *Record) parseSlow(line []byte, want Fields) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return errSyntax
	}
	*r = Record{Line: line}
	for k, raw := range m {
		f := fieldOf([]byte(k))
		if f&want == 0 || len(raw) == 0 {
			continue
		}
		if raw[0] == '"' {
			v, err := unescape(raw)
			if err != nil {
				return errSyntax
			}
			r.set(f, v, true)
		} else {
			r.set(f, raw, false)
		}
	}
	return nil
}

func (r *Record) set(f Fields, v []byte, isStr bool) {
	switch f {
	case FieldTime:
		r.Time = parseTimeBytes(v, isStr)
	case FieldFirst:
		r.First = parseTimeBytes(v, isStr)
	case FieldLast:
		r.Last = parseTimeBytes(v, isStr)
	case FieldSeq:
		if !isStr {
			r.Seq = parseUint(v)
		}
	case FieldCount:
		if !isStr {
			r.Count = int64(parseUint(v))
		}
	case FieldEvent:
		r.Event = strOnly(v, isStr)
	case FieldSeverity:
		r.Severity = strOnly(v, isStr)
	case FieldIP:
		r.IP = strOnly(v, isStr)
	case FieldPeerIP:
		r.PeerIP = strOnly(v, isStr)
	case FieldUser:
		r.User = strOnly(v, isStr)
	case FieldTopic:
		r.Topic = strOnly(v, isStr)
	case FieldReason:
		r.Reason = strOnly(v, isStr)
	case FieldDetail:
		r.Detail = strOnly(v, isStr)
	case FieldCountedPrefix:
		r.CountedPrefix = strOnly(v, isStr)
	case FieldNode:
		r.Node = strOnly(v, isStr)
	}
}

func strOnly(v []byte, isStr bool) []byte {
	if !isStr {
		return nil
	}
	return v
}

// fieldOf maps a line's key (audit's Field… names) to its Fields bit.
func fieldOf(key []byte) Fields {
	switch string(key) {
	case audit.FieldTime:
		return FieldTime
	case audit.FieldEvent:
		return FieldEvent
	case audit.FieldSeverity:
		return FieldSeverity
	case audit.FieldSeq:
		return FieldSeq
	case audit.FieldIP:
		return FieldIP
	case audit.FieldPeerIP:
		return FieldPeerIP
	case audit.FieldUserID:
		return FieldUser
	case audit.FieldTopic:
		return FieldTopic
	case audit.FieldReason:
		return FieldReason
	case audit.FieldDetail:
		return FieldDetail
	case audit.FieldCount:
		return FieldCount
	case audit.FieldFirst:
		return FieldFirst
	case audit.FieldLast:
		return FieldLast
	case audit.FieldCountedPrefix:
		return FieldCountedPrefix
	case audit.FieldNode:
		return FieldNode
	}
	return 0
}

func isWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func skipWS(b []byte, i int) int {
	for i < len(b) && isWS(b[i]) {
		i++
	}
	return i
}

// scanString finds the closing quote of the JSON string opening at b[i] and
// says whether the string holds escapes.
func scanString(b []byte, i int) (end int, escaped, ok bool) {
	p := i + 1
	for {
		k := bytes.IndexByte(b[p:], '"')
		if k < 0 {
			return 0, false, false
		}
		q := p + k
		bs := 0
		for j := q - 1; j > i && b[j] == '\\'; j-- {
			bs++
		}
		if bs%2 == 0 {
			if !escaped && q-i > 1 {
				escaped = bytes.IndexByte(b[i+1:q], '\\') >= 0
			}
			return q, escaped, true
		}
		escaped = true
		p = q + 1
	}
}

func unescape(quoted []byte) ([]byte, error) {
	var s string
	if err := json.Unmarshal(quoted, &s); err != nil {
		return nil, err
	}
	return []byte(s), nil
}

func validLiteral(v []byte) bool {
	switch string(v) {
	case "true", "false", "null":
		return true
	}
	if len(v) == 0 {
		return false
	}
	for _, c := range v {
		if !(c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E') {
			return false
		}
	}
	return true
}

func parseUint(v []byte) uint64 {
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}

// parseTimeBytes reads the writer's RFC 3339 UTC time without allocating:
// 2006-01-02T15:04:05[.fraction]Z; other offsets go through time.Parse.
// A malformed time is the zero time.
func parseTimeBytes(v []byte, isStr bool) time.Time {
	if !isStr {
		return time.Time{}
	}
	if len(v) >= 20 && v[len(v)-1] == 'Z' && v[4] == '-' && v[7] == '-' && v[10] == 'T' &&
		v[13] == ':' && v[16] == ':' {
		num := func(a, b int) (int, bool) {
			n := 0
			for _, c := range v[a:b] {
				if c < '0' || c > '9' {
					return 0, false
				}
				n = n*10 + int(c-'0')
			}
			return n, true
		}
		y, ok1 := num(0, 4)
		mo, ok2 := num(5, 7)
		d, ok3 := num(8, 10)
		h, ok4 := num(11, 13)
		mi, ok5 := num(14, 16)
		s, ok6 := num(17, 19)
		ns, frac := 0, v[19:len(v)-1]
		okF := true
		if len(frac) > 0 {
			if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
				okF = false
			} else {
				for k := 1; k < 10; k++ {
					ns *= 10
					if k < len(frac) {
						c := frac[k]
						if c < '0' || c > '9' {
							okF = false
						}
						ns += int(c - '0')
					}
				}
			}
		}
		if ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && okF && mo >= 1 && mo <= 12 && d >= 1 && d <= 31 &&
			h < 24 && mi < 60 && s < 60 {
			return time.Date(y, time.Month(mo), d, h, mi, s, ns, time.UTC)
		}
	}
	t, err := time.Parse(time.RFC3339Nano, string(v))
	if err != nil {
		return time.Time{}
	}
	return t
}
