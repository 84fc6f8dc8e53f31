package blocklist

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// blockList is the deny list NewSet builds from the config's block
// entries and the block files: what the gateway runs.
func blockList(entries, files []string) (*List, error) {
	s, err := NewSet(entries, nil, files)
	if err != nil {
		return nil, err
	}
	return s.cur.Load().block, nil
}

func mustParse(t testing.TB, entries ...string) *List {
	t.Helper()
	l, err := blockList(entries, nil)
	if err != nil {
		t.Fatalf("NewSet(%q): %v", entries, err)
	}
	return l
}

func TestContains(t *testing.T) {
	tests := []struct {
		name    string
		entries []string
		in      []string
		out     []string
	}{
		{
			name:    "empty",
			entries: nil,
			out:     []string{"0.0.0.0", "10.0.0.1", "::", "2001:db8::1"},
		},
		{
			name:    "single v4 prefix",
			entries: []string{"192.0.2.0/24"},
			in:      []string{"192.0.2.0", "192.0.2.255", "::ffff:192.0.2.7"},
			out:     []string{"192.0.1.255", "192.0.3.0", "::192.0.2.7", "2001:db8::1"},
		},
		{
			name:    "bare addresses",
			entries: []string{"198.51.100.7", "2001:db8::1", " 203.0.113.9 "},
			in:      []string{"198.51.100.7", "2001:db8::1", "203.0.113.9", "2001:db8::1%eth0"},
			out:     []string{"198.51.100.6", "198.51.100.8", "2001:db8::2", "2001:db8::"},
		},
		{
			name:    "nested and overlapping",
			entries: []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "10.255.255.255/32", "11.0.0.0/16", "11.0.128.0/17"},
			in:      []string{"10.0.0.0", "10.1.2.3", "10.200.0.1", "10.255.255.255", "11.0.0.0", "11.0.255.255"},
			out:     []string{"9.255.255.255", "11.1.0.0", "12.0.0.0"},
		},
		{
			name:    "adjacent prefixes merge",
			entries: []string{"172.16.0.0/24", "172.16.1.0/24", "172.16.2.0/23"},
			in:      []string{"172.16.0.0", "172.16.1.128", "172.16.3.255"},
			out:     []string{"172.15.255.255", "172.16.4.0"},
		},
		{
			name:    "host bits ignored",
			entries: []string{"10.1.2.3/8"},
			in:      []string{"10.9.9.9"},
			out:     []string{"11.0.0.0"},
		},
		{
			name:    "whole spaces",
			entries: []string{"0.0.0.0/0"},
			in:      []string{"0.0.0.0", "255.255.255.255", "::ffff:1.2.3.4"},
			out:     []string{"::", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		},
		{
			name:    "v6 everything does not cover v4",
			entries: []string{"::/0"},
			in:      []string{"::", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
			out:     []string{"1.2.3.4", "::ffff:1.2.3.4"},
		},
		{
			name:    "v6 prefixes",
			entries: []string{"2001:db8::/32", "2001:db8:1::/48", "2a00:1450:4001:800::/56", "fe80::/10"},
			in:      []string{"2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2a00:1450:4001:8ff::1", "fe80::1%eth0"},
			out:     []string{"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::", "2a00:1450:4001:900::", "fec0::"},
		},
		{
			name:    "v6 edges of the space",
			entries: []string{"::/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120", "ffff:ffff:ffff:ffff::/64"},
			in:      []string{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff::1"},
			out:     []string{"::1", "ffff:ffff:ffff:fffe:ffff:ffff:ffff:ffff"},
		},
		{
			name:    "mapped prefix is v4",
			entries: []string{"::ffff:203.0.113.0/120"},
			in:      []string{"203.0.113.1", "::ffff:203.0.113.200"},
			out:     []string{"203.0.114.0"},
		},
		{
			name:    "v4 edges of the space",
			entries: []string{"0.0.0.0/32", "255.255.255.0/24"},
			in:      []string{"0.0.0.0", "255.255.255.255", "255.255.255.0"},
			out:     []string{"0.0.0.1", "255.255.254.255"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := mustParse(t, tc.entries...)
			if l.Len() != len(tc.entries) {
				t.Errorf("Len = %d, want %d", l.Len(), len(tc.entries))
			}
			for _, s := range tc.in {
				if !l.Contains(netip.MustParseAddr(s)) {
					t.Errorf("Contains(%s) = false, want true", s)
				}
			}
			for _, s := range tc.out {
				if l.Contains(netip.MustParseAddr(s)) {
					t.Errorf("Contains(%s) = true, want false", s)
				}
			}
			if l.Contains(netip.Addr{}) {
				t.Error("Contains(zero Addr) = true")
			}
		})
	}
	var nilList *List
	if nilList.Contains(netip.MustParseAddr("1.2.3.4")) || nilList.Len() != 0 || nilList.Ranges() != 0 {
		t.Error("nil List is not empty")
	}
}

func TestMergeCounts(t *testing.T) {
	l := mustParse(t, "10.0.0.0/8", "10.1.0.0/16", "10.0.0.0/9", "11.0.0.0/8", "2001:db8::/33", "2001:db8:8000::/33", "2001:db8::1")
	if l.Len() != 7 || l.Ranges() != 2 {
		t.Errorf("Len %d Ranges %d, want 7 and 2", l.Len(), l.Ranges())
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		entry string
		want  string
	}{
		{"10.0.0.0/33", `"10.0.0.0/33" is not a CIDR: prefix length out of range`},
		{"10.0.0.256", `"10.0.0.256" is not an address or CIDR`},
		{"example.com", `"example.com"`},
		{"", `"" is not an address`},
		{"010.0.0.1", `"010.0.0.1"`},
		{"fe80::1%eth0", "zone"},
		{"1.2.3.4/8/8", `"1.2.3.4/8/8"`},
	}
	for _, tc := range tests {
		_, err := blockList([]string{"192.0.2.0/24", tc.entry}, nil)
		if err == nil {
			t.Errorf("NewSet(%q): no error", tc.entry)
			continue
		}
		if !strings.Contains(err.Error(), "block entry 2: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewSet(%q) error %q, want block entry 2 and %q", tc.entry, err, tc.want)
		}
	}
	_, err := blockList([]string{"bad1", "10.0.0.0/8", "bad2"}, nil)
	if err == nil || !strings.Contains(err.Error(), `"bad1"`) || !strings.Contains(err.Error(), `"bad2"`) {
		t.Errorf("want every bad entry reported, got %v", err)
	}
	if p, err := parsePrefix("::ffff:10.0.0.0/104"); err != nil || p != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("parsePrefix mapped = %v, %v", p, err)
	}
	if _, err := NewSet(nil, []string{"nope"}, nil); err == nil || !strings.HasPrefix(err.Error(), "blocklist: allow entry 1: ") {
		t.Errorf("NewSet allow error %v", err)
	}
}

func TestListFromSkipsInvalid(t *testing.T) {
	l := ListFrom([]netip.Prefix{{}, netip.MustParsePrefix("10.0.0.0/8")})
	if l.Len() != 1 || !l.Contains(netip.MustParseAddr("10.1.1.1")) {
		t.Errorf("Len %d", l.Len())
	}
}

// TestContainsMatchesNaive compares List with netip.Prefix.Contains on
// random, heavily overlapping prefixes, with and without the index.
func TestContainsMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 10, indexMin - 1, indexMin, 1000, 20000} {
		ps := make([]netip.Prefix, n)
		for i := range ps {
			ps[i] = randomPrefix(r, true)
		}
		l := ListFrom(ps)
		if (l.idx4 != nil) != (len(l.v4) >= indexMin) || (l.idx6 != nil) != (len(l.v6) >= indexMin) {
			t.Fatalf("n=%d: index built wrongly", n)
		}
		check := func(a netip.Addr) {
			want := false
			for _, p := range ps {
				if normalize(p).Contains(a.Unmap()) {
					want = true
					break
				}
			}
			if got := l.Contains(a); got != want {
				t.Fatalf("n=%d: Contains(%v) = %v, want %v", n, a, got, want)
			}
		}
		probes := 3000
		if n > 1000 {
			probes = 300
		}
		for range probes {
			check(randomAddr(r))
		}
		// Edges of some prefixes.
		for _, p := range ps[:min(len(ps), 200)] {
			p = normalize(p)
			check(p.Addr())
			check(lastAddr(p))
			if a := p.Addr().Prev(); a.IsValid() {
				check(a)
			}
			if a := lastAddr(p).Next(); a.IsValid() {
				check(a)
			}
		}
	}
}

// randomPrefix draws addresses from a small space (so prefixes overlap
// and nest) when dense, from the whole space otherwise.
func randomPrefix(r *rand.Rand, dense bool) netip.Prefix {
	if r.IntN(2) == 0 {
		x := r.Uint32()
		if dense {
			x = 0x0a000000 | x&0x00ffffff
		}
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], x)
		return netip.PrefixFrom(netip.AddrFrom4(b), 8+r.IntN(25)).Masked()
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], r.Uint64())
	binary.BigEndian.PutUint64(b[8:], r.Uint64())
	if dense {
		b[0], b[1], b[2] = 0x20, 0x01, 0x0d
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), 16+r.IntN(113)).Masked()
}

func randomAddr(r *rand.Rand) netip.Addr {
	switch r.IntN(3) {
	case 0:
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], 0x0a000000|r.Uint32()&0x00ffffff)
		return netip.AddrFrom4(b)
	case 1:
		var b [16]byte
		binary.BigEndian.PutUint64(b[:8], 0x20010d0000000000|r.Uint64()&0xffffffffff)
		binary.BigEndian.PutUint64(b[8:], r.Uint64())
		return netip.AddrFrom16(b)
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], 0x0a000000|r.Uint32()&0x00ffffff)
	return netip.AddrFrom16(netip.AddrFrom4(b).As16()) // ::ffff: form
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func TestContainsNoAllocs(t *testing.T) {
	l := ListFrom(randomPrefixes(10000))
	addrs := []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:10.1.2.3")}
	if n := testing.AllocsPerRun(1000, func() {
		for _, a := range addrs {
			l.Contains(a)
		}
	}); n != 0 {
		t.Errorf("%v allocations per Contains, want 0", n)
	}
}

// randomPrefixes are shaped like real deny lists: IPv4 /16 to /32, IPv6
// /24 to /64 inside 2000::/3.
func randomPrefixes(n int) []netip.Prefix {
	r := rand.New(rand.NewPCG(3, 4))
	ps := make([]netip.Prefix, n)
	for i := range ps {
		if i%2 == 0 {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], r.Uint32())
			ps[i] = netip.PrefixFrom(netip.AddrFrom4(b), 16+r.IntN(17)).Masked()
			continue
		}
		var b [16]byte
		binary.BigEndian.PutUint64(b[:8], 0x2000000000000000|r.Uint64()>>3)
		ps[i] = netip.PrefixFrom(netip.AddrFrom16(b), 24+r.IntN(41)).Masked()
	}
	return ps
}

// BenchmarkContains100k looks up random addresses in a List of 100,000
// random IPv4 and IPv6 prefixes.
func BenchmarkContains100k(b *testing.B) {
	benchContains(b, 100_000)
}

// BenchmarkContains1k is the same with 1,000 prefixes, to show that the
// cost hardly depends on the size.
func BenchmarkContains1k(b *testing.B) {
	benchContains(b, 1_000)
}

func benchContains(b *testing.B, n int) {
	l := ListFrom(randomPrefixes(n))
	r := rand.New(rand.NewPCG(5, 6))
	addrs := make([]netip.Addr, 4096)
	for i := range addrs {
		if i%2 == 0 {
			var x [4]byte
			binary.BigEndian.PutUint32(x[:], r.Uint32())
			addrs[i] = netip.AddrFrom4(x)
		} else {
			var x [16]byte
			binary.BigEndian.PutUint64(x[:8], 0x2000000000000000|r.Uint64()>>3)
			binary.BigEndian.PutUint64(x[8:], r.Uint64())
			addrs[i] = netip.AddrFrom16(x)
		}
	}
	b.ReportAllocs()
	i, hits := 0, 0
	for b.Loop() {
		if l.Contains(addrs[i&4095]) {
			hits++
		}
		i++
	}
	b.ReportMetric(float64(l.Ranges()), "ranges")
	b.ReportMetric(float64(hits)/float64(i), "hits/op")
}

func TestOverlaps(t *testing.T) {
	l := mustParse(t, "10.0.0.0/8", "192.0.2.7", "2001:db8:1::/48")
	for p, want := range map[string]bool{
		"10.1.0.0/16": true, "0.0.0.0/0": true, "192.0.2.0/24": true, "192.0.2.8/32": false,
		"11.0.0.0/8": false, "::ffff:10.0.0.0/104": true, "2001:db8::/32": true, "2001:db8:1:5::/64": true,
		"2001:db8:2::/48": false, "::/0": true,
	} {
		if got := l.Overlaps(netip.MustParsePrefix(p)); got != want {
			t.Errorf("Overlaps(%s) = %v, want %v", p, got, want)
		}
	}
}
