package query

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
)

// severityOf ranks a line's severity value. A missing value is Info (the
// writer's zero); a value the reader does not know ranks as Critical, so a
// --severity filter never hides something unexpected.
func severityOf(b []byte) audit.Severity {
	if len(b) == 0 {
		return audit.Info
	}
	for s := audit.Info; s <= audit.Critical; s++ {
		if string(b) == s.String() {
			return s
		}
	}
	return audit.Critical
}

// Filter selects events; every set condition must hold. The zero Filter
// keeps everything.
type Filter struct {
	// Since and Until bound event times to [Since, Until); zero means
	// unbounded. A summary event (first/last) is kept when any part of the
	// span it folds lies in the window.
	Since, Until time.Time
	// IP keeps events whose ip or peer_ip lies in the prefix (a single
	// address is a /32 or /128), and events about a range that name no
	// address (a ban, unban or kernel_drop of a prefix) whose
	// counted_prefix lies in it. IPv4-mapped IPv6 addresses count as IPv4
	// on both sides. The invalid zero Prefix means any address.
	IP          netip.Prefix
	User        string         // exact userId
	Events      []string       // any of these event names
	MinSeverity audit.Severity // this severity or above; the zero audit.Info keeps every event
	Topic       string         // exact, or a glob where * matches any run of characters; never matches events without a topic
	Reason      string         // exact reason
	Node        string         // exact node name (the line's node); never matches lines without one
}

// ParseIP parses an address or a CIDR prefix for Filter.IP. IPv4-mapped
// forms become IPv4 (::ffff:10.0.0.0/104 is 10.0.0.0/8).
func ParseIP(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid address or CIDR %q: %v", s, err)
		}
		if a := p.Addr(); a.Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: an IPv4-mapped prefix needs at least /96", s)
			}
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid address or CIDR %q: %v", s, err)
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseTime reads a --since/--until value: RFC 3339 (2006-01-02T15:04:05Z,
// with or without fraction), a date (2006-01-02, midnight UTC), "now", or an
// age such as 30m, 1h, 7d, 2w, 1h30m meaning now minus that age.
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "now" {
		return now, nil
	}
	if d, ok := parseAge(s); ok {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid time %q: want RFC 3339 (2006-01-02T15:04:05Z), a date (2006-01-02) or an age such as 30m, 1h, 7d", s)
}

// parseAge reads a sequence of number+unit with units ms, s, m, h, d (24h)
// and w (7d).
func parseAge(s string) (time.Duration, bool) {
	if s == "" {
		return 0, false
	}
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
			i++
		}
		if i == 0 {
			return 0, false
		}
		num, err := strconv.ParseFloat(s[:i], 64)
		if err != nil {
			return 0, false
		}
		s = s[i:]
		j := 0
		for j < len(s) && s[j] >= 'a' && s[j] <= 'z' {
			j++
		}
		var unit time.Duration
		switch s[:j] {
		case "ms":
			unit = time.Millisecond
		case "s":
			unit = time.Second
		case "m":
			unit = time.Minute
		case "h":
			unit = time.Hour
		case "d":
			unit = 24 * time.Hour
		case "w":
			unit = 7 * 24 * time.Hour
		default:
			return 0, false
		}
		s = s[j:]
		if num*float64(unit) > float64(1<<62) {
			return 0, false
		}
		total += time.Duration(num * float64(unit))
	}
	return total, true
}

// globMatch reports whether s matches pattern, where * matches any run of
// characters (including none) and every other character matches itself.
func globMatch(pattern string, s []byte) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return string(s) == pattern
	}
	first, last := parts[0], parts[len(parts)-1]
	if len(s) < len(first)+len(last) || string(s[:len(first)]) != first ||
		string(s[len(s)-len(last):]) != last {
		return false
	}
	mid := s[len(first) : len(s)-len(last)]
	for _, p := range parts[1 : len(parts)-1] {
		k := bytes.Index(mid, []byte(p))
		if k < 0 {
			return false
		}
		mid = mid[k+len(p):]
	}
	return true
}

// matcher is a compiled Filter: a cheap byte pre-filter on the raw line,
// then exact checks on the decoded fields.
type matcher struct {
	f      Filter
	events map[string]bool
	glob   bool
	// pre holds groups of byte strings: a line can match only if, for every
	// group, it contains at least one of the group's strings.
	pre [][][]byte
	// anchor is a single string every matching line contains, searched for
	// across whole buffers; nil when there is none.
	anchor []byte
	want   Fields
	ipStr  string // the filter's single address in canonical form, "" for a prefix
}

func compile(f Filter) *matcher {
	m := &matcher{f: f, glob: strings.Contains(f.Topic, "*")}
	if !f.Since.IsZero() || !f.Until.IsZero() {
		m.want |= FieldTime | FieldFirst | FieldLast
	}
	// Groups are added most selective first; the first one-string group
	// becomes the anchor.
	if f.IP.IsValid() {
		m.want |= FieldIP | FieldPeerIP | FieldCountedPrefix
		a := f.IP.Addr()
		if f.IP.IsSingleIP() {
			m.ipStr = a.String()
		}
		if tok := ipToken(f.IP); tok != "" {
			m.pre = append(m.pre, [][]byte{[]byte(tok)})
		}
	}
	if f.User != "" {
		m.want |= FieldUser
		m.addExact(f.User)
	}
	if f.Topic != "" {
		m.want |= FieldTopic
		if !m.glob {
			m.addExact(f.Topic)
		} else {
			longest := ""
			for _, p := range strings.Split(f.Topic, "*") {
				if len(p) > len(longest) {
					longest = p
				}
			}
			if len(longest) >= 3 && jsonSafe(longest) {
				m.pre = append(m.pre, [][]byte{[]byte(longest)})
			}
		}
	}
	if f.Reason != "" {
		m.want |= FieldReason
		m.addExact(f.Reason)
	}
	if f.Node != "" {
		m.want |= FieldNode
		m.addExact(f.Node)
	}
	if len(f.Events) > 0 {
		m.want |= FieldEvent
		m.events = map[string]bool{}
		var alts [][]byte
		all := true
		for _, e := range f.Events {
			m.events[e] = true
			if jsonSafe(e) {
				alts = append(alts, []byte(strconv.Quote(e)))
			} else {
				all = false
			}
		}
		if all {
			m.pre = append(m.pre, alts)
		}
	}
	if f.MinSeverity > audit.Info {
		m.want |= FieldSeverity
	}
	for i, g := range m.pre {
		if len(g) == 1 {
			m.anchor = g[0]
			m.pre = append(m.pre[:i:i], m.pre[i+1:]...)
			break
		}
	}
	return m
}

// addExact pre-filters on the quoted value when its JSON encoding is
// certainly the quoted bytes themselves.
func (m *matcher) addExact(v string) {
	if jsonSafe(v) {
		m.pre = append(m.pre, [][]byte{[]byte(strconv.Quote(v))})
	}
}

// jsonSafe reports whether every JSON encoder writes s unchanged inside the
// quotes: printable ASCII without quote, backslash or HTML-escaped bytes.
func jsonSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// ipToken is text that every written form of every address in p contains:
// the dotted quad of an IPv4 address (also inside ::ffff:a.b.c.d), the
// whole octets of an IPv4 prefix ("10.1." for 10.1.0.0/16), the canonical
// form of a single IPv6 address (the writer formats addresses with
// net/netip). Other prefixes have no token.
func ipToken(p netip.Prefix) string {
	a := p.Addr()
	if a.Is4() {
		if p.IsSingleIP() {
			return a.String()
		}
		o := a.As4()
		var parts []string
		for i := 0; i < p.Bits()/8; i++ {
			parts = append(parts, strconv.Itoa(int(o[i])))
		}
		if len(parts) == 0 {
			return ""
		}
		return strings.Join(parts, ".") + "."
	}
	if p.IsSingleIP() {
		return a.String()
	}
	return ""
}

// preMatch runs the byte pre-filter, except the anchor (already found).
func (m *matcher) preMatch(line []byte) bool {
	for _, g := range m.pre {
		ok := false
		for _, s := range g {
			if bytes.Contains(line, s) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// match checks a record decoded with at least m.want.
func (m *matcher) match(r *Record) bool {
	f := &m.f
	if !f.Since.IsZero() || !f.Until.IsZero() {
		lo, hi := r.Time, r.Time
		if !r.First.IsZero() && (lo.IsZero() || r.First.Before(lo)) {
			lo = r.First
		}
		if r.Last.After(hi) {
			hi = r.Last
		}
		if lo.IsZero() {
			return false // no time: cannot be placed in a window
		}
		if !f.Since.IsZero() && hi.Before(f.Since) {
			return false
		}
		if !f.Until.IsZero() && !lo.Before(f.Until) {
			return false
		}
	}
	if m.events != nil && !m.events[string(r.Event)] {
		return false
	}
	if f.MinSeverity > audit.Info && severityOf(r.Severity) < f.MinSeverity {
		return false
	}
	if f.User != "" && string(r.User) != f.User {
		return false
	}
	if f.Reason != "" && string(r.Reason) != f.Reason {
		return false
	}
	if f.Node != "" && string(r.Node) != f.Node {
		return false
	}
	if f.Topic != "" {
		if len(r.Topic) == 0 {
			return false
		}
		if m.glob {
			if !globMatch(f.Topic, r.Topic) {
				return false
			}
		} else if string(r.Topic) != f.Topic {
			return false
		}
	}
	if f.IP.IsValid() && !m.ipMatch(r.IP) && !m.ipMatch(r.PeerIP) &&
		(len(r.IP) != 0 || len(r.PeerIP) != 0 || !m.prefixWithin(r.CountedPrefix)) {
		return false
	}
	return true
}

// prefixWithin reports whether b, a prefix as written in the trail, lies
// in the filter's prefix. ipToken's pre-filter holds for it: the text of a
// prefix inside an IPv4 prefix starts with the filter's whole octets.
func (m *matcher) prefixWithin(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	p, err := netip.ParsePrefix(string(b))
	if err != nil {
		return false
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Bits() >= m.f.IP.Bits() && m.f.IP.Contains(p.Addr())
}

func (m *matcher) ipMatch(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	if m.ipStr != "" && string(b) == m.ipStr {
		return true
	}
	a, ok := addrOf(b)
	return ok && m.f.IP.Contains(a)
}

// addrOf parses an address as written in the trail, unmapping IPv4-mapped
// forms and dropping any zone; an address with a port is accepted too.
func addrOf(b []byte) (netip.Addr, bool) {
	a, err := netip.ParseAddr(string(b))
	if err != nil {
		ap, err2 := netip.ParseAddrPort(string(b))
		if err2 != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.Unmap().WithZone(""), true
}
