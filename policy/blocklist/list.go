// Package blocklist owns Portcullis's static address lists (pipeline step
// 1 in docs/ARCHITECTURE.md, config `bans.block`, `bans.allow`, `bans.block_files`): an immutable
// List of IPv4 and IPv6 CIDRs that answers "is this address on it" in a
// few tens of nanoseconds whatever its size, the parsers for config
// strings and for list files (FireHOL netsets, Spamhaus DROP), and a Set
// that holds the current deny and allow lists behind an atomic pointer and
// re-reads the files when they change.
//
// It imports only the standard library and never imports gateway, audit
// or alerting: callers decide what a hit means and report it.
package blocklist

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// indexMin is the number of ranges from which a List builds its first
// level index (256 KiB per address family).
const indexMin = 64

// List is an immutable set of IPv4 and IPv6 prefixes, stored as sorted,
// disjoint address ranges with a first-level index on the top 16 bits of
// the address, so Contains costs one index read and a binary search over
// the few ranges of that /16.
//
// IPv4 and IPv6 are separate families: an IPv4-mapped IPv6 address
// (::ffff:a.b.c.d), and a prefix inside ::ffff:0:0/96, count as IPv4;
// an IPv6 prefix such as ::/0 does not cover IPv4 addresses.
//
// The zero List is empty. A List is safe for simultaneous use by multiple
// goroutines.
type List struct {
	v4   []range4
	v6   []range6
	idx4 []uint32 // nil, or 1<<16+1 entries: v4[idx4[k]] is the first range ending in /16 k or later
	idx6 []uint32 // same for v6, on the top 16 bits
	n    int      // prefixes added
}

type range4 struct{ lo, hi uint32 }

type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a u128) cmp(b u128) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

// next is a+1, and false if a is the largest value.
func (a u128) next() (u128, bool) {
	if a.lo != ^uint64(0) {
		return u128{a.hi, a.lo + 1}, true
	}
	if a.hi != ^uint64(0) {
		return u128{a.hi + 1, 0}, true
	}
	return a, false
}

type range6 struct{ lo, hi u128 }

// Contains reports whether a is covered by a prefix of l. An invalid
// address is never contained; a zone is ignored.
func (l *List) Contains(a netip.Addr) bool {
	if l == nil || !a.IsValid() {
		return false
	}
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return l.contains4(binary.BigEndian.Uint32(b[:]))
	}
	b := a.As16()
	return l.contains6(u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])})
}

func (l *List) contains4(x uint32) bool {
	rs := l.v4
	if l.idx4 != nil {
		k := x >> 16
		i, j := l.idx4[k], l.idx4[k+1]
		// Ranges i..j-1 end inside /16 k; range j ends later but may
		// start inside it.
		rs = rs[i:min(int(j)+1, len(rs))]
	}
	lo, hi := 0, len(rs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if rs[m].hi < x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(rs) && rs[lo].lo <= x
}

func (l *List) contains6(x u128) bool {
	rs := l.v6
	if l.idx6 != nil {
		k := x.hi >> 48
		i, j := l.idx6[k], l.idx6[k+1]
		rs = rs[i:min(int(j)+1, len(rs))]
	}
	lo, hi := 0, len(rs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if rs[m].hi.less(x) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(rs) && !x.less(rs[lo].lo)
}

// Len is the number of prefixes l was built from (before overlapping and
// adjacent ones were merged).
func (l *List) Len() int {
	if l == nil {
		return 0
	}
	return l.n
}

// Ranges is the number of disjoint address ranges l holds after merging;
// its memory is about 8 B per IPv4 and 32 B per IPv6 range.
func (l *List) Ranges() int {
	if l == nil {
		return 0
	}
	return len(l.v4) + len(l.v6)
}

// ListFrom returns the List of prefixes. Invalid prefixes are skipped;
// host bits are ignored (10.1.2.3/8 is 10.0.0.0/8).
func ListFrom(prefixes []netip.Prefix) *List {
	var b builder
	for _, p := range prefixes {
		b.add(p)
	}
	return b.build()
}

// parsePrefix parses one CIDR ("192.0.2.0/24", "2001:db8::/32") or bare
// address (a /32 or /128) and returns it masked, with an IPv4-mapped
// prefix turned into its IPv4 form.
func parsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.IndexByte(s, '/') >= 0 {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, fmt.Errorf("%q is not a CIDR: %w", s, unquote(err, s))
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return p, fmt.Errorf("%q is not an address or CIDR: %w", s, unquote(err, s))
		}
		if a.Zone() != "" {
			return p, fmt.Errorf("%q: an address with a zone cannot be listed", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return normalize(p), nil
}

// unquote drops the copy of the input that net/netip puts in its errors,
// as ours already quote it.
func unquote(err error, s string) error {
	msg := err.Error()
	for _, pre := range []string{
		fmt.Sprintf("netip.ParsePrefix(%q): ", s),
		fmt.Sprintf("ParseAddr(%q): ", s),
	} {
		if rest, ok := strings.CutPrefix(msg, pre); ok {
			return errors.New(rest)
		}
	}
	return err
}

// normalize masks p and turns a prefix inside ::ffff:0:0/96 into IPv4.
func normalize(p netip.Prefix) netip.Prefix {
	p = p.Masked()
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

// builder collects prefixes as ranges and sorts them into a List.
type builder struct {
	v4 []range4
	v6 []range6
	n  int
}

func (b *builder) add(p netip.Prefix) {
	if !p.IsValid() {
		return
	}
	p = normalize(p)
	b.n++
	bits := p.Bits()
	if a := p.Addr(); a.Is4() {
		x := a.As4()
		lo := binary.BigEndian.Uint32(x[:])
		b.v4 = append(b.v4, range4{lo, lo | uint32(uint64(1)<<(32-bits)-1)})
		return
	}
	x := p.Addr().As16()
	lo := u128{binary.BigEndian.Uint64(x[:8]), binary.BigEndian.Uint64(x[8:])}
	hi := u128{lo.hi | ^uint64(0)>>bits, lo.lo | ^uint64(0)>>max(bits-64, 0)}
	b.v6 = append(b.v6, range6{lo, hi})
}

// parseAll parses entries, naming a bad one what[i], and reports every
// bad one.
func parseAll(what string, entries []string) ([]netip.Prefix, error) {
	ps := make([]netip.Prefix, 0, len(entries))
	var errs []error
	for i, s := range entries {
		p, err := parsePrefix(strings.TrimSpace(s))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %d: %w", what, i+1, err))
			continue
		}
		ps = append(ps, p)
	}
	return ps, errors.Join(errs...)
}

func (b *builder) build() *List {
	l := &List{n: b.n}
	if len(b.v4) > 0 {
		rs := slices.Clone(b.v4)
		slices.SortFunc(rs, func(x, y range4) int { return cmp.Compare(x.lo, y.lo) })
		out := rs[:1]
		for _, r := range rs[1:] {
			last := &out[len(out)-1]
			if last.hi == ^uint32(0) || r.lo <= last.hi+1 { // overlapping or adjacent
				last.hi = max(last.hi, r.hi)
				continue
			}
			out = append(out, r)
		}
		l.v4 = slices.Clip(out)
		if len(l.v4) >= indexMin {
			l.idx4 = index(len(l.v4), func(i int) uint64 { return uint64(l.v4[i].hi >> 16) })
		}
	}
	if len(b.v6) > 0 {
		rs := slices.Clone(b.v6)
		slices.SortFunc(rs, func(x, y range6) int { return x.lo.cmp(y.lo) })
		out := rs[:1]
		for _, r := range rs[1:] {
			last := &out[len(out)-1]
			if n, ok := last.hi.next(); !ok || !n.less(r.lo) { // overlapping or adjacent
				if last.hi.less(r.hi) {
					last.hi = r.hi
				}
				continue
			}
			out = append(out, r)
		}
		l.v6 = slices.Clip(out)
		if len(l.v6) >= indexMin {
			l.idx6 = index(len(l.v6), func(i int) uint64 { return l.v6[i].hi.hi >> 48 })
		}
	}
	return l
}

// index builds a first-level index over n sorted ranges whose last
// addresses have top-16-bit buckets bucketOfHi(i) (non-decreasing):
// idx[k] is the first range whose last address is in bucket k or later.
func index(n int, bucketOfHi func(i int) uint64) []uint32 {
	idx := make([]uint32, 1<<16+1)
	i := 0
	for k := range idx {
		for i < n && bucketOfHi(i) < uint64(k) {
			i++
		}
		idx[k] = uint32(i)
	}
	return idx
}

// Overlaps reports whether any address of prefix p is covered by l.
func (l *List) Overlaps(p netip.Prefix) bool {
	if l == nil || !p.IsValid() {
		return false
	}
	p = p.Masked()
	a := p.Addr()
	if a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		a = p.Addr()
	}
	if a.Is4() {
		b := a.As4()
		lo := binary.BigEndian.Uint32(b[:])
		hi := lo | (^uint32(0) >> p.Bits())
		if p.Bits() == 0 {
			hi = ^uint32(0)
		}
		// The first range ending at or after lo starts at or before hi?
		i := sort.Search(len(l.v4), func(i int) bool { return l.v4[i].hi >= lo })
		return i < len(l.v4) && l.v4[i].lo <= hi
	}
	b := a.As16()
	lo := u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
	hi := lo
	switch bits := p.Bits(); {
	case bits == 0:
		hi = u128{^uint64(0), ^uint64(0)}
	case bits <= 64:
		hi = u128{lo.hi | (^uint64(0) >> bits), ^uint64(0)}
	default:
		hi = u128{lo.hi, lo.lo | (^uint64(0) >> (bits - 64))}
	}
	i := sort.Search(len(l.v6), func(i int) bool { return !l.v6[i].hi.less(lo) })
	return i < len(l.v6) && !hi.less(l.v6[i].lo)
}
