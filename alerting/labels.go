package alerting

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// FieldNames are the event fields rules may match, count and group by.
// ip_prefix24 is derived: the /24 of an IPv4 address, the /64 of an IPv6
// one ("" when ip is not an address).
var FieldNames = []string{"event", "reason", "severity", "stage", "ip", "peer_ip", "counted_prefix",
	"ip_prefix24", "user_id", "topic", "proto", "actor"}

func knownField(f string) bool { return slices.Contains(FieldNames, f) }

// fieldOf returns the value of field f of e ("" when unset or unknown).
func fieldOf(e *audit.Event, f string) string {
	switch f {
	case "event":
		return e.Event.String()
	case "reason":
		return reasonText(e.Reason)
	case "severity":
		return e.Severity.String()
	case "stage":
		return string(e.Stage)
	case "ip":
		return addrText(e.IP)
	case "peer_ip":
		return addrText(e.PeerIP)
	case "counted_prefix":
		return prefixText(e.CountedPrefix)
	case "ip_prefix24":
		return prefix24(e.IP)
	case "user_id":
		return e.UserID
	case "topic":
		return e.Topic
	case "proto":
		return e.Proto
	case "actor":
		return e.Actor
	}
	return ""
}

// reasonText is r's spelling in the audit line; "" for reason.None.
func reasonText(r reason.Reason) string {
	if r == reason.None {
		return ""
	}
	return r.String()
}

// addrText is a's spelling in the audit line; "" for the zero Addr.
func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// prefixText is p's spelling in the audit line; "" for the zero Prefix.
func prefixText(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// prefix24 is the /24 (IPv4) or /64 (IPv6) holding a, "" for the zero Addr.
func prefix24(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	a = a.Unmap().WithZone("")
	bits := 24
	if a.Is6() {
		bits = 64
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return ""
	}
	return p.String()
}

// Label is one name=value pair of an alert group.
type Label struct {
	Name, Value string
}

// Labels identify a notification group: alertname, severity and the
// rule's group_by values, in that order. Values may be attacker-supplied:
// they are sanitized (control characters replaced, length capped) before
// they reach a label.
type Labels []Label

// Get returns the value of label name ("" if absent).
func (ls Labels) Get(name string) string {
	for _, l := range ls {
		if l.Name == name {
			return l.Value
		}
	}
	return ""
}

// key is a stable identity for ls.
func (ls Labels) key() string {
	var b strings.Builder
	for _, l := range ls {
		b.WriteString(l.Name)
		b.WriteByte('=')
		b.WriteString(l.Value)
		b.WriteByte(0)
	}
	return b.String()
}

// String renders ls for people: name="value" pairs in order.
func (ls Labels) String() string {
	var b strings.Builder
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(l.Name)
		b.WriteString("=")
		b.WriteString(quote(l.Value))
	}
	return b.String()
}

// maxLabelLen caps a label value, in bytes.
const maxLabelLen = 64

// clean replaces control characters by a space and caps s at n bytes on a
// rune boundary; the result is safe in any text position.
func clean(s string, n int) string {
	if len(s) > n {
		cut := n
		for cut > 0 && s[cut]&0xC0 == 0x80 {
			cut--
		}
		s = s[:cut] + "…"
	}
	if !hasCtl(s) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if (r < ' ' && r != '\t') || r == 0x7f || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
}

// quote renders an attacker-supplied value as a Go-quoted string: no
// control characters survive.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < ' ' || r == 0x7f || r == '\u2028' || r == '\u2029' || r == 0xFFFD:
			b.WriteString(`\x`)
			const hex = "0123456789abcdef"
			b.WriteByte(hex[(r>>4)&0xf])
			b.WriteByte(hex[r&0xf])
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
