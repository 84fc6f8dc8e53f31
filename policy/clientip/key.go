package clientip

import "net/netip"

// DefaultIPv6Prefix is the IPv6 prefix length that counts as one client
// (`limits.ipv6_prefix`): a /64 is what one subscriber line usually gets.
const DefaultIPv6Prefix = 64

// Key is the prefix an address is counted, limited and banned under: the
// address itself for IPv4 (a /32), its first v6Bits bits for IPv6. The
// IPv4-mapped form ::ffff:a.b.c.d counts as a.b.c.d, so one client cannot
// get two budgets by switching notation. v6Bits outside 1..128 means
// DefaultIPv6Prefix. An invalid address gives the zero Prefix.
func Key(a netip.Addr, v6Bits int) netip.Prefix {
	if !a.IsValid() {
		return netip.Prefix{}
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	if v6Bits < 1 || v6Bits > 128 {
		v6Bits = DefaultIPv6Prefix
	}
	p, _ := a.Prefix(v6Bits)
	return p
}
