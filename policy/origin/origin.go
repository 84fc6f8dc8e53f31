// Package origin decides whether a WebSocket handshake's Origin header is
// acceptable — the defence against cross-site WebSocket hijacking, where a
// page on another site opens a socket with the visitor's cookies.
//
// Two modes, as docs/CONFIG.md describes `origins:`:
//
//   - an allow-list of exact scheme://host[:port] origins: the Origin must
//     be one of them, after lowercasing ASCII and making default ports
//     explicit. No suffix, prefix, substring or wildcard matching ever:
//     "https://app.example.com.evil.example", "https://evil-app.example.com",
//     "https://app.example.com@evil.example" are different origins;
//   - no list: the Origin must name the host the request was sent to (its
//     Host header), so a page can only reach the gateway of its own site.
//
// Origins are compared byte for byte after ASCII lowercasing: anything a
// browser would not send — non-ASCII bytes (browsers send IDNs as
// xn-- punycode, so Unicode confusables and case-folding tricks such as
// U+212A KELVIN SIGN never reach a comparison), "null", paths, user info,
// a trailing dot, an empty port, leading zeros in a port — is refused.
//
// A missing Origin header: browsers always send Origin on a WebSocket
// handshake, so a request without one comes from a non-browser client
// (a backend, a CLI), which cannot be the victim of cross-site hijacking
// and could forge any Origin anyway. It is therefore allowed by default
// (DefaultAllowMissing, config `allow_missing_origin: true`); operators
// who serve browsers only can refuse it with `allow_missing_origin: false`.
// A header that is present but empty is always refused.
//
// The caller must refuse a request with more than one Origin header before
// calling Check. This package imports only audit/reason from the project
// and must never import gateway/ or the rest of audit/.
package origin

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// DefaultAllowMissing is the default of the `allow_missing_origin` config
// key: a handshake without an Origin header (a non-browser client) is
// allowed. See the package documentation.
const DefaultAllowMissing = true

// maxAuthority bounds host[:port]: a DNS name is at most 253 bytes, an
// IPv6 literal with brackets 47, a port 6.
const maxAuthority = 253 + 6

// Checker holds an Origin policy. It is immutable after NewChecker and safe
// for simultaneous use by multiple goroutines.
type Checker struct {
	allowed      map[string]struct{} // normalised scheme://host:port
	list         []string            // the same, in config order
	allowMissing bool
}

// NewChecker builds a checker from exact origins, e.g.
// "https://app.example.com" or "http://localhost:3000" (schemes http,
// https, ws, wss; default ports 80 and 443 made explicit; ASCII case
// ignored). Wildcards, paths, user info, "null", trailing dots and
// non-ASCII names (write the xn-- form) are refused, with every bad entry
// reported at once. With no entries, the Origin must match the request's
// Host. allowMissing admits requests without an Origin header (see
// DefaultAllowMissing).
func NewChecker(allowed []string, allowMissing bool) (*Checker, error) {
	c := &Checker{allowed: make(map[string]struct{}, len(allowed)), allowMissing: allowMissing}
	var errs []error
	for i, a := range allowed {
		e, ok := parseOrigin(a)
		if !ok {
			hint := "no path, no wildcard, no trailing dot"
			for j := 0; j < len(a); j++ {
				if a[j] >= 0x80 {
					hint = "write an internationalised name in its xn-- form"
					break
				}
			}
			errs = append(errs, fmt.Errorf("origins[%d]: %q is not an exact scheme://host[:port] with scheme http, https, ws or wss (%s)", i, a, hint))
			continue
		}
		k := string(e.appendKey(nil))
		if _, dup := c.allowed[k]; !dup {
			c.allowed[k] = struct{}{}
			c.list = append(c.list, k)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// Allowed returns the normalised allow-list (scheme://host:port, config
// order, duplicates removed); empty means same-host mode.
func (c *Checker) Allowed() []string { return append([]string(nil), c.list...) }

// AllowMissing reports whether a handshake without an Origin header is
// allowed.
func (c *Checker) AllowMissing() bool { return c.allowMissing }

// Check decides on a handshake: reason.None to accept, reason.BadOrigin to
// refuse (HTTP 403). origin is the Origin header value and present says
// whether the header was sent at all; host is the request's Host header;
// tls says whether the request reached the gateway over TLS.
//
// Same-host mode (no allow-list): the Origin's scheme must be http or https
// (https only when tls is set: an http page must not drive a TLS socket);
// its host must equal Host's (ASCII case ignored, IPv6 literals compared as
// addresses); its port must equal Host's port, or, when Host has no port,
// be the default port of the Origin's scheme — without tls the gateway may
// sit behind a TLS-terminating proxy, so both http://host and https://host
// are accepted for a port-less Host.
//
// Check does not allocate.
func (c *Checker) Check(origin string, present bool, host string, tls bool) reason.Reason {
	if !present {
		if c.allowMissing {
			return reason.None
		}
		return reason.BadOrigin
	}
	o, ok := parseOrigin(strings.Trim(origin, " \t"))
	if !ok {
		return reason.BadOrigin
	}
	if len(c.allowed) > 0 {
		var buf [16 + maxAuthority]byte
		if _, ok := c.allowed[string(o.appendKey(buf[:0]))]; ok {
			return reason.None
		}
		return reason.BadOrigin
	}
	if o.scheme != "https" && (o.scheme != "http" || tls) {
		return reason.BadOrigin
	}
	h, ok := parseAuthority(strings.Trim(host, " \t"), 0)
	if !ok || !o.sameHost(&h) {
		return reason.BadOrigin
	}
	if h.explicit {
		if o.port != h.port {
			return reason.BadOrigin
		}
	} else if o.port != defaultPort(o.scheme) {
		return reason.BadOrigin
	}
	return reason.None
}

// endpoint is a parsed scheme://host[:port] or Host header.
type endpoint struct {
	scheme   string     // "http", "https", "ws", "wss"; "" for a Host header
	host     string     // as received; an IPv6 literal without brackets
	ip       netip.Addr // valid when host is an IP literal
	port     uint16     // effective port (default of the scheme when not explicit)
	explicit bool       // the port was written
}

func defaultPort(scheme string) uint16 {
	switch scheme {
	case "http", "ws":
		return 80
	case "https", "wss":
		return 443
	}
	return 0
}

// parseOrigin parses a serialised origin: scheme "://" host [":" port].
func parseOrigin(s string) (endpoint, bool) {
	i := strings.Index(s, "://")
	if i < 0 {
		return endpoint{}, false
	}
	var scheme string
	for _, sc := range [...]string{"http", "https", "ws", "wss"} {
		if asciiEqualFold(s[:i], sc) {
			scheme = sc
			break
		}
	}
	if scheme == "" {
		return endpoint{}, false
	}
	e, ok := parseAuthority(s[i+3:], defaultPort(scheme))
	e.scheme = scheme
	return e, ok
}

// parseAuthority parses host[:port] where host is a DNS name, a dotted-quad
// IPv4 address or a bracketed IPv6 address (no zone). def is the port when
// none is written.
func parseAuthority(a string, def uint16) (endpoint, bool) {
	if a == "" || len(a) > maxAuthority {
		return endpoint{}, false
	}
	var e endpoint
	var rest string
	if a[0] == '[' {
		j := strings.IndexByte(a, ']')
		if j < 0 {
			return endpoint{}, false
		}
		e.host, rest = a[1:j], a[j+1:]
		if strings.IndexByte(e.host, '%') >= 0 {
			return endpoint{}, false
		}
		ip, err := netip.ParseAddr(e.host)
		if err != nil || !ip.Is6() {
			return endpoint{}, false
		}
		e.ip = ip
	} else {
		e.host, rest = a, ""
		if j := strings.IndexByte(a, ':'); j >= 0 {
			e.host, rest = a[:j], a[j:]
		}
		numeric, ok := checkName(e.host)
		if !ok {
			return endpoint{}, false
		}
		if numeric {
			ip, err := netip.ParseAddr(e.host)
			if err != nil || !ip.Is4() {
				return endpoint{}, false
			}
			e.ip = ip
		}
	}
	e.port = def
	if rest != "" {
		p, ok := parsePort(rest)
		if !ok {
			return endpoint{}, false
		}
		e.port, e.explicit = p, true
	}
	return e, true
}

// checkName reports whether s is a DNS name of ASCII letters, digits, '-'
// and '_' in non-empty dot-separated labels (so no trailing dot), and
// whether it holds only digits and dots (then it must be an IPv4 address).
func checkName(s string) (numeric, ok bool) {
	if s == "" || len(s) > 253 {
		return false, false
	}
	numeric = true
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 {
				return false, false
			}
			label = 0
			continue
		case '0' <= c && c <= '9':
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '-', c == '_':
			numeric = false
		default:
			return false, false
		}
		label++
		if label > 63 {
			return false, false
		}
	}
	return numeric, label > 0
}

// parsePort reads ":" followed by a decimal port 1..65535 without leading
// zeros.
func parsePort(s string) (uint16, bool) {
	if len(s) < 2 || len(s) > 6 || s[0] != ':' || s[1] == '0' {
		return 0, false
	}
	v := 0
	for i := 1; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	if v > 65535 {
		return 0, false
	}
	return uint16(v), true
}

// appendKey appends the normalised form scheme://host:port: lowercase
// scheme and name, canonical IPv6 in brackets, explicit port.
func (e *endpoint) appendKey(b []byte) []byte {
	b = append(b, e.scheme...)
	b = append(b, "://"...)
	switch {
	case e.ip.Is6():
		b = append(b, '[')
		b = e.ip.AppendTo(b)
		b = append(b, ']')
	case e.ip.IsValid():
		b = e.ip.AppendTo(b)
	default:
		for i := 0; i < len(e.host); i++ {
			b = append(b, lower(e.host[i]))
		}
	}
	b = append(b, ':')
	var d [5]byte
	i, p := len(d), e.port
	for {
		i--
		d[i] = byte('0' + p%10)
		p /= 10
		if p == 0 {
			break
		}
	}
	return append(b, d[i:]...)
}

// sameHost compares the host parts: IP literals as addresses, names with
// ASCII case ignored.
func (e *endpoint) sameHost(o *endpoint) bool {
	if e.ip.IsValid() || o.ip.IsValid() {
		return e.ip == o.ip
	}
	return asciiEqualFold(e.host, o.host)
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// asciiEqualFold is strings.EqualFold restricted to ASCII: no Unicode case
// folding (under which U+212A KELVIN SIGN equals 'k').
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}
