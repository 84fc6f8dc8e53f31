package bans

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/portcullis-gw/portcullis/policy/clientip"
)

// ParsePrefix parses what an admin types to name a ban: an address
// ("192.0.2.7", "2001:db8::1") means its client key (IPv4 /32, IPv6 its
// first v6Bits bits, 0 meaning /64), a CIDR ("198.51.100.0/24",
// "2001:db8::/48") means itself, masked. IPv4-mapped forms count as IPv4.
// Errors quote the input.
func ParsePrefix(s string, v6Bits int) (netip.Prefix, error) {
	t := strings.TrimSpace(s)
	if strings.Contains(t, "/") {
		p, err := netip.ParsePrefix(t)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bans: parse %q: not an address or CIDR: %w", s, err)
		}
		return normalize(p)
	}
	a, err := netip.ParseAddr(t)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bans: parse %q: not an address or CIDR: %w", s, err)
	}
	return clientip.Key(a, v6Bits), nil
}
