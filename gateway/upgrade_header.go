package gateway

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
)

// Fields that must appear at most once in an upgrade request: a second
// copy is how a request means one thing to a proxy or an Origin check and
// another to us.
var singleFields = [...]string{
	"Host",                  // RFC 9112 §3.2
	"Origin",                // RFC 6454 §7: one origin per request
	"Upgrade",               // one protocol switch
	"Sec-WebSocket-Key",     // RFC 6455 §11.3.1
	"Sec-WebSocket-Version", // RFC 6455 §11.3.5
}

// maxNameInMessage caps a field name quoted back in a refusal.
const maxNameInMessage = 64

// headerFault checks the request line and header fields of req (a complete
// request: it ends in an empty line) against HTTP/1.1 syntax, and returns
// what is wrong with them for the client and the audit trail, or "" when
// nothing is. It refuses, per RFC 9112 §2.2, §3 and §5:
//   - a control character in the request line (a bare CR or LF included);
//   - a line starting with whitespace (obsolete line folding);
//   - a field name that is empty, is not a token or is followed by
//     whitespace before its colon;
//   - a control character other than HTAB in a field value, NUL and bare
//     CR or LF included (lines end only in CRLF);
//   - a second copy of a field in singleFields;
//   - a Host value that is not a host and optional port, or a
//     Sec-WebSocket-Key that is not 16 bytes in base64.
//
// The message names the field and the byte, never echoes the value, and is
// printable ASCII. It does not allocate on a good request.
func headerFault(req []byte) string {
	// The request line: no control character up to its CRLF.
	i := lineEnd(req, 0)
	if i < 0 {
		return "" // not a complete request: the parser refuses it
	}
	if req[i] != '\r' || i+1 == len(req) || req[i+1] != '\n' {
		return "control character " + byteName(req[i]) + " in the request line"
	}
	i += 2
	var seen [len(singleFields)]uint8
	for i+1 < len(req) {
		switch req[i] {
		case '\r':
			if req[i+1] == '\n' {
				return "" // the empty line: end of the fields
			}
		case ' ', '\t':
			return "a header line starts with whitespace (obsolete line folding is not accepted)"
		}
		start := i
		for i < len(req) && isTchar(req[i]) {
			i++
		}
		name := req[start:i]
		switch {
		case i == len(req):
			return ""
		case req[i] == ' ' || req[i] == '\t':
			return "whitespace before the colon of header field " + quoteName(name)
		case req[i] != ':' && req[i] >= 0x20 && req[i] != 0x7f:
			return "character " + byteName(req[i]) + " in a header field name"
		case req[i] != ':' || len(name) == 0:
			return "a header line without a field name and colon"
		}
		vstart := i + 1
		i = lineEnd(req, vstart)
		if i < 0 {
			return ""
		}
		if req[i] != '\r' || i+1 == len(req) || req[i+1] != '\n' {
			return "control character " + byteName(req[i]) + " in the value of header field " + quoteName(name)
		}
		value := req[vstart:i]
		i += 2
		for k, f := range singleFields {
			if len(name) != len(f) || !asciiEqualFold(name, f) {
				continue
			}
			if seen[k]++; seen[k] > 1 {
				return "header field " + f + " appears more than once"
			}
			switch v := bytes.Trim(value, " \t"); {
			case k == 0 && !validHost(v):
				return "header field Host is not a host name or address with an optional port"
			case k == 3 && !validKey(v):
				return "header field Sec-WebSocket-Key is not 16 bytes in base64"
			}
			break
		}
	}
	return ""
}

// lineEnd returns the index of the first control character at or after
// from in b other than HTAB (at a well-formed line end, its CR), or -1. It
// tests eight bytes at a time: this runs over every handshake.
func lineEnd(b []byte, from int) int {
	const (
		ones = 0x0101010101010101
		high = 0x8080808080808080
	)
	i := from
	for i+8 <= len(b) {
		x := binary.LittleEndian.Uint64(b[i:])
		d := x ^ (ones * 0x7f)
		// A byte below 0x20, or a byte equal to 0x7f (zero in d).
		if (x-ones*0x20)&^x&high != 0 || (d-ones)&^d&high != 0 {
			break
		}
		i += 8
	}
	for ; i < len(b); i++ {
		if c := b[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return i
		}
	}
	return -1
}

// asciiEqualFold reports whether b equals s ignoring ASCII case. It is
// exact for what it is given here: s of letters and '-', b a token.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if b[i]|0x20 != s[i]|0x20 {
			return false
		}
	}
	return true
}

// isTchar reports whether c may appear in a field name (RFC 9110 §5.6.2).
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// validHost reports whether v is a Host field value: empty, or a reg-name,
// IPv4 address or bracketed IPv6 literal with an optional port (RFC 3986
// §3.2.2). Only the characters are checked; userinfo ("@"), paths and
// whitespace are refused.
func validHost(v []byte) bool {
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		default:
			switch c {
			case '-', '.', '_', '~', '%', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '[', ']':
			default:
				return false
			}
		}
	}
	return true
}

// validKey reports whether v is the base64 encoding of 16 bytes
// (RFC 6455 §4.2.1): 22 characters of the standard alphabet and "==".
func validKey(v []byte) bool {
	if len(v) != 24 || v[22] != '=' || v[23] != '=' {
		return false
	}
	for _, c := range v[:22] {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '/') {
			return false
		}
	}
	// The last character carries 2 bits of the 16th byte and 4 zero bits.
	return strings.IndexByte("AQgw", v[21]) >= 0
}

// byteName names a byte for a refusal: "NUL", "bare CR", "bare LF" or its
// hex value.
func byteName(c byte) string {
	switch c {
	case 0:
		return "NUL (0x00)"
	case '\r':
		return "bare CR (0x0d)"
	case '\n':
		return "bare LF (0x0a)"
	}
	return fmt.Sprintf("0x%02x", c)
}

// quoteName returns a field name (already checked to be a token) for a
// refusal, cut to maxNameInMessage bytes.
func quoteName(name []byte) string {
	if len(name) > maxNameInMessage {
		return string(name[:maxNameInMessage]) + "..."
	}
	return string(name)
}
