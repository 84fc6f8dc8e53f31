package clientip

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

func mustResolver(t *testing.T, trusted []string, header string) *Resolver {
	t.Helper()
	r, err := NewResolver(trusted, header)
	if err != nil {
		t.Fatalf("NewResolver(%q, %q): %v", trusted, header, err)
	}
	return r
}

func TestNewResolverConfig(t *testing.T) {
	good := []struct {
		name    string
		trusted []string
		header  string
		want    string
	}{
		{"default header", nil, "", XForwardedFor},
		{"xff any case", nil, "x-forwarded-for", XForwardedFor},
		{"x-real-ip", nil, "X-REAL-IP", XRealIP},
		{"cloudflare", nil, "cf-connecting-ip", CFConnectingIP},
		{"cidrs and addresses", []string{"10.0.0.0/8", "2001:db8::/32", "192.0.2.10", "2001:db8::1", "::ffff:172.16.0.0/108"}, "", XForwardedFor},
	}
	for _, tc := range good {
		r, err := NewResolver(tc.trusted, tc.header)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if r.Header() != tc.want {
			t.Errorf("%s: header %q, want %q", tc.name, r.Header(), tc.want)
		}
	}
	bad := []struct {
		name    string
		trusted []string
		header  string
		inErr   string
	}{
		{"unknown header", nil, "Forwarded", "client_ip_header"},
		{"host bits set", []string{"10.1.2.3/8"}, "", "did you mean 10.0.0.0/8"},
		{"not an address", []string{"proxy.example"}, "", "trusted_proxies[0]"},
		{"bad prefix length", []string{"10.0.0.0/33"}, "", "trusted_proxies[0]"},
		{"zone", []string{"fe80::1%eth0"}, "", "trusted_proxies[0]"},
		{"short mapped prefix", []string{"::ffff:0:0/80"}, "", "host bits set"},
		{"second entry named", []string{"10.0.0.0/8", "nope"}, "", "trusted_proxies[1]"},
	}
	for _, tc := range bad {
		_, err := NewResolver(tc.trusted, tc.header)
		if err == nil || !strings.Contains(err.Error(), tc.inErr) {
			t.Errorf("%s: err %v, want one containing %q", tc.name, err, tc.inErr)
		}
	}
}

func TestTrusted(t *testing.T) {
	r := mustResolver(t, []string{"10.0.0.0/8", "2001:db8::/32", "::ffff:172.16.0.0/108", "192.0.2.10"}, "")
	cases := []struct {
		addr string
		want bool
	}{
		{"10.1.2.3", true},
		{"::ffff:10.1.2.3", true}, // mapped form unified
		{"11.0.0.1", false},
		{"2001:db8::5", true},
		{"2001:db9::5", false},
		{"172.16.5.5", true}, // from the ::ffff: prefix
		{"172.32.0.1", false},
		{"192.0.2.10", true},
		{"192.0.2.11", false},
		{"fe80::1%eth0", false},
	}
	for _, tc := range cases {
		if got := r.Trusted(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Trusted(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if r.Trusted(netip.Addr{}) {
		t.Error("the invalid address is trusted")
	}
	if !r.HasTrusted() || mustResolver(t, nil, "").HasTrusted() {
		t.Error("HasTrusted")
	}
}

func TestIsHeader(t *testing.T) {
	r := mustResolver(t, nil, "x-real-ip")
	for name, want := range map[string]bool{"X-Real-IP": true, "x-real-ip": true, "X-REAL-IP": true, "X-Real-IPs": false, "X-Forwarded-For": false, "": false} {
		if got := r.IsHeader([]byte(name)); got != want {
			t.Errorf("IsHeader(%q) = %v", name, got)
		}
	}
}

func TestFromHeadersXFF(t *testing.T) {
	r := mustResolver(t, []string{"10.0.0.0/8", "2001:db8:ffff::/48"}, "")
	const proxy = "10.0.0.1"
	cases := []struct {
		name   string
		peer   string
		values []string
		want   string
		why    reason.Reason
	}{
		{"untrusted peer, no header", "198.51.100.7", nil, "198.51.100.7", reason.None},
		{"spoofed XFF from an untrusted peer is ignored", "198.51.100.7", []string{"1.2.3.4"}, "198.51.100.7", reason.None},
		{"garbage from an untrusted peer is ignored too", "198.51.100.7", []string{"<script>"}, "198.51.100.7", reason.None},
		{"trusted peer without header", proxy, nil, proxy, reason.None},
		{"one trusted hop", proxy, []string{"203.0.113.9"}, "203.0.113.9", reason.None},
		{"client-supplied prefix ignored", proxy, []string{"1.1.1.1, 203.0.113.9"}, "203.0.113.9", reason.None},
		{"trusted chain resolved", proxy, []string{"1.1.1.1, 203.0.113.9, 10.0.0.7, 10.0.0.8"}, "203.0.113.9", reason.None},
		{"multi-line header is one list", proxy, []string{"1.1.1.1, 203.0.113.9", "10.0.0.7", "10.0.0.8"}, "203.0.113.9", reason.None},
		{"multi-line, client on last line", proxy, []string{"10.0.0.3", "203.0.113.9"}, "203.0.113.9", reason.None},
		{"all hops trusted: leftmost", proxy, []string{"10.0.0.5, 10.0.0.6"}, "10.0.0.5", reason.None},
		{"all hops trusted across lines", proxy, []string{"10.0.0.5", "10.0.0.6"}, "10.0.0.5", reason.None},
		{"spaces and tabs", proxy, []string{" 203.0.113.9 ,\t10.0.0.7\t"}, "203.0.113.9", reason.None},
		{"garbage left of the client never read", proxy, []string{"unknown, _hidden, 203.0.113.9"}, "203.0.113.9", reason.None},
		{"IPv6 client", proxy, []string{"2001:db8:1::42"}, "2001:db8:1::42", reason.None},
		{"bracketed IPv6 client", proxy, []string{"[2001:db8:1::42]"}, "2001:db8:1::42", reason.None},
		{"IPv6 trusted hop skipped", proxy, []string{"203.0.113.9, 2001:db8:ffff::1"}, "203.0.113.9", reason.None},
		{"mapped client unified", proxy, []string{"::ffff:203.0.113.9"}, "203.0.113.9", reason.None},
		{"mapped trusted hop skipped", proxy, []string{"203.0.113.9, ::ffff:10.0.0.7"}, "203.0.113.9", reason.None},
		{"mapped trusted peer", "::ffff:10.0.0.1", []string{"203.0.113.9"}, "203.0.113.9", reason.None},
		{"IPv6 trusted peer", "2001:db8:ffff::2", []string{"203.0.113.9"}, "203.0.113.9", reason.None},
		// garbage on the walked path fails closed
		{"port", proxy, []string{"203.0.113.9:4711"}, proxy, reason.BadClientIP},
		{"bracketed port", proxy, []string{"[2001:db8::1]:443"}, proxy, reason.BadClientIP},
		{"bracketed IPv4", proxy, []string{"[203.0.113.9]"}, proxy, reason.BadClientIP},
		{"zone", proxy, []string{"fe80::1%eth0"}, proxy, reason.BadClientIP},
		{"unknown", proxy, []string{"unknown"}, proxy, reason.BadClientIP},
		{"hostname", proxy, []string{"client.example"}, proxy, reason.BadClientIP},
		{"empty element", proxy, []string{"203.0.113.9,,10.0.0.7"}, proxy, reason.BadClientIP},
		{"trailing comma", proxy, []string{"203.0.113.9,"}, proxy, reason.BadClientIP},
		{"empty line", proxy, []string{""}, proxy, reason.BadClientIP},
		{"blank line after a trusted hop", proxy, []string{"10.0.0.5", "  "}, proxy, reason.BadClientIP},
		{"garbage between trusted hops", proxy, []string{"203.0.113.9, bogus, 10.0.0.7"}, proxy, reason.BadClientIP},
		{"leading zeros", proxy, []string{"203.000.113.9"}, proxy, reason.BadClientIP},
		{"short IPv4", proxy, []string{"127.1"}, proxy, reason.BadClientIP},
		{"hex IPv4", proxy, []string{"0x7f.0.0.1"}, proxy, reason.BadClientIP},
		{"obfuscated identifier", proxy, []string{"_gazonk"}, proxy, reason.BadClientIP},
		{"quoted", proxy, []string{`"203.0.113.9"`}, proxy, reason.BadClientIP},
		{"semicolon list", proxy, []string{"203.0.113.9; 10.0.0.7"}, proxy, reason.BadClientIP},
		{"empty brackets", proxy, []string{"[]"}, proxy, reason.BadClientIP},
	}
	for _, tc := range cases {
		got, why := r.FromHeaders(netip.MustParseAddr(tc.peer), tc.values)
		if got != netip.MustParseAddr(tc.want).Unmap() || why != tc.why {
			t.Errorf("%s: FromHeaders(%s, %q) = %v, %v; want %s, %v", tc.name, tc.peer, tc.values, got, why, tc.want, tc.why)
		}
	}
}

func TestFromHeadersSingle(t *testing.T) {
	for _, hdr := range []string{XRealIP, CFConnectingIP} {
		r := mustResolver(t, []string{"10.0.0.0/8"}, hdr)
		cases := []struct {
			name   string
			peer   string
			values []string
			want   string
			why    reason.Reason
		}{
			{"spoofed from untrusted peer", "198.51.100.7", []string{"1.2.3.4"}, "198.51.100.7", reason.None},
			{"trusted, absent", "10.0.0.1", nil, "10.0.0.1", reason.None},
			{"trusted", "10.0.0.1", []string{"203.0.113.9"}, "203.0.113.9", reason.None},
			{"trusted, spaces", "10.0.0.1", []string{" 203.0.113.9 "}, "203.0.113.9", reason.None},
			{"IPv6", "10.0.0.1", []string{"2001:db8::9"}, "2001:db8::9", reason.None},
			{"mapped", "10.0.0.1", []string{"::ffff:203.0.113.9"}, "203.0.113.9", reason.None},
			{"a trusted address is still the client", "10.0.0.1", []string{"10.9.9.9"}, "10.9.9.9", reason.None},
			{"two lines", "10.0.0.1", []string{"203.0.113.9", "203.0.113.10"}, "10.0.0.1", reason.BadClientIP},
			{"a list", "10.0.0.1", []string{"203.0.113.9, 10.0.0.2"}, "10.0.0.1", reason.BadClientIP},
			{"port", "10.0.0.1", []string{"203.0.113.9:1"}, "10.0.0.1", reason.BadClientIP},
			{"empty", "10.0.0.1", []string{""}, "10.0.0.1", reason.BadClientIP},
		}
		for _, tc := range cases {
			got, why := r.FromHeaders(netip.MustParseAddr(tc.peer), tc.values)
			if got != netip.MustParseAddr(tc.want) || why != tc.why {
				t.Errorf("%s %s: got %v, %v; want %s, %v", hdr, tc.name, got, why, tc.want, tc.why)
			}
		}
	}
}

func TestFromHeadersNoTrustedProxies(t *testing.T) {
	r := mustResolver(t, nil, "")
	peer := netip.MustParseAddr("10.0.0.1")
	if got, why := r.FromHeaders(peer, []string{"1.2.3.4"}); got != peer || why != reason.None {
		t.Fatalf("got %v %v", got, why)
	}
}

func TestFromHeadersPeerNormalised(t *testing.T) {
	r := mustResolver(t, nil, "")
	got, why := r.FromHeaders(netip.MustParseAddr("::ffff:198.51.100.7"), nil)
	if got != netip.MustParseAddr("198.51.100.7") || why != reason.None {
		t.Errorf("mapped peer: %v %v", got, why)
	}
	got, _ = r.FromHeaders(netip.MustParseAddr("fe80::1%eth0"), nil)
	if got != netip.MustParseAddr("fe80::1") {
		t.Errorf("zone kept: %v", got)
	}
	if got, why := r.FromHeaders(netip.Addr{}, nil); got.IsValid() || why != reason.BadClientIP {
		t.Errorf("invalid peer: %v %v", got, why)
	}
}

func TestFromHeadersNoAllocs(t *testing.T) {
	r := mustResolver(t, []string{"10.0.0.0/8", "2001:db8::/32"}, "")
	peer := netip.MustParseAddr("10.0.0.1")
	values := []string{"1.1.1.1, 203.0.113.9", "2001:db8::7, 10.0.0.7"}
	n := testing.AllocsPerRun(200, func() {
		if c, _ := r.FromHeaders(peer, values); c != netip.MustParseAddr("203.0.113.9") {
			t.Fatal(c)
		}
	})
	if n != 0 {
		t.Fatalf("FromHeaders: %v allocs per run", n)
	}
}

func BenchmarkFromHeaders(b *testing.B) {
	r, _ := NewResolver([]string{"10.0.0.0/8", "2001:db8::/32"}, "")
	peer := netip.MustParseAddr("10.0.0.1")
	values := []string{"1.1.1.1, 203.0.113.9, 10.0.0.7"}
	b.ReportAllocs()
	for b.Loop() {
		r.FromHeaders(peer, values)
	}
}
