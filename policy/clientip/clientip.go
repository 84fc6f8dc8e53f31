// Package clientip derives the address a connection really comes from: the
// socket peer, or — only when that peer is a trusted proxy — the address the
// proxy reports, in a forwarding header (X-Forwarded-For, X-Real-IP,
// CF-Connecting-IP) or a PROXY protocol v1/v2 header.
//
// Every address it returns is unmapped (::ffff:a.b.c.d becomes a.b.c.d) and
// carries no zone, so it can be used directly as a limiter, ban or audit key.
// A forwarding header that cannot be trusted or cannot be read never moves
// the decision away from the peer: the peer address is returned (fail
// closed), with reason.BadClientIP when a trusted proxy sent garbage.
//
// It owns the parsing of forwarding headers and PROXY protocol headers; it
// does no I/O and keeps no state. It imports only audit/reason from the
// project and must never import gateway/ or the rest of audit/.
package clientip

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Forwarding headers a Resolver can read, in their canonical spelling.
const (
	XForwardedFor  = "X-Forwarded-For"  // comma list, one hop appended per proxy (the default)
	XRealIP        = "X-Real-IP"        // one address, set by the proxy (nginx)
	CFConnectingIP = "CF-Connecting-IP" // one address, set by Cloudflare
)

// Resolver decides the client address of a request from its socket peer and
// one forwarding header. It is immutable after NewResolver and safe for
// simultaneous use by multiple goroutines.
type Resolver struct {
	trusted []netip.Prefix // IPv4 prefixes are stored unmapped
	header  string         // canonical spelling, one of the constants above
	list    bool           // header is a comma list (X-Forwarded-For)
}

// NewResolver builds a Resolver from the `trusted_proxies` CIDRs and the
// `client_ip_header` name (case-insensitive; "" means X-Forwarded-For).
//
// A trusted proxy is written as a CIDR ("10.0.0.0/8", "2001:db8::/32") or a
// single address ("192.0.2.10", meaning /32 or /128). A CIDR with host bits
// set ("10.1.2.3/8") is refused rather than guessed at; ::ffff:-mapped
// prefixes are stored as their IPv4 form. With no trusted proxy, forwarding
// headers are never read.
func NewResolver(trustedProxies []string, header string) (*Resolver, error) {
	r := &Resolver{}
	switch {
	case header == "" || strings.EqualFold(header, XForwardedFor):
		r.header, r.list = XForwardedFor, true
	case strings.EqualFold(header, XRealIP):
		r.header = XRealIP
	case strings.EqualFold(header, CFConnectingIP):
		r.header = CFConnectingIP
	default:
		return nil, fmt.Errorf("client_ip_header: %q is not %s, %s or %s", header, XForwardedFor, XRealIP, CFConnectingIP)
	}
	var errs []error
	for i, s := range trustedProxies {
		p, err := parseTrusted(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("trusted_proxies[%d]: %w", i, err))
			continue
		}
		r.trusted = append(r.trusted, p)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

// parseTrusted reads one trusted_proxies entry.
func parseTrusted(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR or an address", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: %w", s, err)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
	}
	if a := p.Addr(); a.Is4In6() {
		// Masked() == p, so the ::ffff: part is whole: Bits() >= 96.
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p, nil
}

// Header is the canonical name of the forwarding header this Resolver reads.
func (r *Resolver) Header() string { return r.header }

// IsHeader reports whether name (a raw request header name, any case) is the
// forwarding header this Resolver reads. It does not allocate.
func (r *Resolver) IsHeader(name []byte) bool {
	if len(name) != len(r.header) {
		return false
	}
	for i := 0; i < len(name); i++ {
		if lower(name[i]) != lower(r.header[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// HasTrusted reports whether any trusted proxy is configured. Without one,
// forwarding headers and PROXY protocol headers are never believed.
func (r *Resolver) HasTrusted() bool { return len(r.trusted) > 0 }

// Trusted reports whether a is inside trusted_proxies (::ffff: forms are
// unified with IPv4, zones ignored). An invalid address is never trusted.
func (r *Resolver) Trusted(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// FromHeaders returns the client address of a request received from peer,
// given values: every line of the forwarding header, in the order received
// (nil if the header was absent).
//
//   - peer not trusted: peer, whatever the header says.
//   - peer trusted, header absent: peer.
//   - X-Forwarded-For: all lines form one comma list, walked right to left;
//     trusted hops are skipped, the first untrusted hop is the client; if
//     every hop is trusted, the leftmost one is. Elements left of the client
//     hop were written by the client itself and are never read.
//   - X-Real-IP, CF-Connecting-IP: exactly one line holding one address.
//
// An element is a bare IPv4 or IPv6 address, optionally an IPv6 address in
// brackets; ports, zones, "unknown", empty elements and anything else are
// garbage. Garbage on the path walked fails closed: the result is peer with
// reason.BadClientIP. Since that path was written by trusted proxies, it
// means a proxy misconfiguration: the caller should audit it but not count
// it as a strike against peer (a proxy would otherwise get banned).
//
// The returned address is unmapped and zoneless; FromHeaders does not
// allocate.
func (r *Resolver) FromHeaders(peer netip.Addr, values []string) (client netip.Addr, why reason.Reason) {
	peer = peer.Unmap().WithZone("")
	if !peer.IsValid() {
		return peer, reason.BadClientIP
	}
	if len(values) == 0 || !r.Trusted(peer) {
		return peer, reason.None
	}
	if !r.list {
		if len(values) != 1 {
			return peer, reason.BadClientIP
		}
		a, ok := parseHop(values[0])
		if !ok {
			return peer, reason.BadClientIP
		}
		return a, reason.None
	}
	var leftmost netip.Addr
	for i := len(values) - 1; i >= 0; i-- {
		line := values[i]
		for {
			elem := line
			j := strings.LastIndexByte(line, ',')
			if j >= 0 {
				elem, line = line[j+1:], line[:j]
			}
			a, ok := parseHop(elem)
			if !ok {
				return peer, reason.BadClientIP
			}
			if !r.Trusted(a) {
				return a, reason.None
			}
			leftmost = a
			if j < 0 {
				break
			}
		}
	}
	return leftmost, reason.None
}

// parseHop reads one forwarding-header element: "1.2.3.4", "2001:db8::1" or
// "[2001:db8::1]", with optional surrounding spaces or tabs. The result is
// unmapped.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.Trim(s, " \t")
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
		if strings.IndexByte(s, ':') < 0 { // brackets only around IPv6
			return netip.Addr{}, false
		}
	}
	// netip accepts zones ("fe80::1%eth0"), which are meaningless here and
	// would allocate; nothing else it accepts is a port or a name.
	if s == "" || strings.IndexByte(s, '%') >= 0 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
