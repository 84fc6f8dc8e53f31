package clientip

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// v2 builds a v2 header: verCmd, fam, then the body (address block + TLVs).
func v2(verCmd, fam byte, body ...[]byte) []byte {
	var payload []byte
	for _, p := range body {
		payload = append(payload, p...)
	}
	b := append([]byte(nil), v2Sig...)
	b = append(b, verCmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...)
}

func addr4(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func addr6(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func tlv(typ byte, val string) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint16(b, uint16(len(val)))
	return append(b, val...)
}

func TestParseV1(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want ProxyHeader
	}{
		{"tcp4", "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /", ProxyHeader{Version: 1,
			Source: netip.MustParseAddrPort("192.0.2.1:56324"), Dest: netip.MustParseAddrPort("198.51.100.2:443")}},
		{"tcp6", "PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n", ProxyHeader{Version: 1,
			Source: netip.MustParseAddrPort("[2001:db8::1]:65535"), Dest: netip.MustParseAddrPort("[2001:db8::2]:0")}},
		{"tcp6 mapped unified", "PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.2 1 2\r\n", ProxyHeader{Version: 1,
			Source: netip.MustParseAddrPort("192.0.2.1:1"), Dest: netip.MustParseAddrPort("198.51.100.2:2")}},
		{"unknown", "PROXY UNKNOWN\r\n", ProxyHeader{Version: 1, Local: true}},
		{"unknown with addresses", "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", ProxyHeader{Version: 1, Local: true}},
	}
	for _, tc := range cases {
		want := strings.Index(tc.in, "\r\n") + 2
		h, n, err := ParseProxyHeader([]byte(tc.in))
		if err != nil || h != tc.want || n != want {
			t.Errorf("%s: got %+v, %d, %v; want %+v, %d", tc.name, h, n, err, tc.want, want)
		}
	}
	// The longest v1 header the specification allows is 107 bytes.
	longest := "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
	if len(longest) != MaxV1Len {
		t.Fatalf("longest is %d bytes", len(longest))
	}
	if _, n, err := ParseProxyHeader([]byte(longest + "x")); err != nil || n != MaxV1Len {
		t.Fatalf("longest: %d %v", n, err)
	}
	tcp6 := strings.Replace(longest, "UNKNOWN", "TCP6", 1)
	if h, n, err := ParseProxyHeader([]byte(tcp6)); err != nil || n != len(tcp6) || h.Source.Port() != 65535 {
		t.Fatalf("longest: %d %v", n, err)
	}
}

func TestParseV2(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want ProxyHeader
	}{
		{"tcp4", v2(0x21, 0x11, addr4("192.0.2.1", "198.51.100.2", 56324, 443)), ProxyHeader{Version: 2,
			Source: netip.MustParseAddrPort("192.0.2.1:56324"), Dest: netip.MustParseAddrPort("198.51.100.2:443")}},
		{"tcp6", v2(0x21, 0x21, addr6("2001:db8::1", "2001:db8::2", 1, 2)), ProxyHeader{Version: 2,
			Source: netip.MustParseAddrPort("[2001:db8::1]:1"), Dest: netip.MustParseAddrPort("[2001:db8::2]:2")}},
		{"tcp6 mapped unified", v2(0x21, 0x21, addr6("::ffff:192.0.2.1", "::ffff:198.51.100.2", 1, 2)), ProxyHeader{Version: 2,
			Source: netip.MustParseAddrPort("192.0.2.1:1"), Dest: netip.MustParseAddrPort("198.51.100.2:2")}},
		{"tcp4 with TLVs skipped", v2(0x21, 0x11, addr4("192.0.2.1", "198.51.100.2", 1, 2),
			tlv(0x01, "h2"), tlv(0x02, "gw.example"), tlv(0x04, ""), tlv(0xEA, "vpce-0123456789abcdef")), ProxyHeader{Version: 2,
			Source: netip.MustParseAddrPort("192.0.2.1:1"), Dest: netip.MustParseAddrPort("198.51.100.2:2")}},
		{"local, no address", v2(0x20, 0x00), ProxyHeader{Version: 2, Local: true}},
		{"local ignores its block", v2(0x20, 0x11, addr4("192.0.2.1", "198.51.100.2", 1, 2), []byte{0xff}), ProxyHeader{Version: 2, Local: true}},
		{"local with any family", v2(0x20, 0x31, make([]byte, 216)), ProxyHeader{Version: 2, Local: true}},
		{"proxy unspec", v2(0x21, 0x00, []byte("ignored")), ProxyHeader{Version: 2, Local: true}},
	}
	for _, tc := range cases {
		in := append(append([]byte(nil), tc.in...), "GET / HTTP/1.1\r\n"...)
		h, n, err := ParseProxyHeader(in)
		if err != nil || h != tc.want || n != len(tc.in) {
			t.Errorf("%s: got %+v, %d, %v; want %+v, %d", tc.name, h, n, err, tc.want, len(tc.in))
		}
	}
	full := v2(0x21, 0x11, addr4("192.0.2.1", "198.51.100.2", 1, 2), tlv(0x04, strings.Repeat("\x00", MaxV2Payload-12-3)))
	if len(full) != MaxV2Len {
		t.Fatalf("full is %d bytes", len(full))
	}
	if _, n, err := ParseProxyHeader(full); err != nil || n != MaxV2Len {
		t.Fatalf("largest v2: %d %v", n, err)
	}
}

func TestParseErrors(t *testing.T) {
	tcp4 := addr4("192.0.2.1", "198.51.100.2", 1, 2)
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"http request", []byte("GET / HTTP/1.1\r\n"), ErrBadSignature},
		{"tls hello", []byte{0x16, 0x03, 0x01}, ErrBadSignature},
		{"first byte P only", []byte("PUT / HTTP/1.1\r\n"), ErrBadSignature},
		{"lower-case proxy", []byte("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), ErrBadSignature},
		{"v2 signature broken early", []byte("\r\nGET"), ErrBadSignature},
		{"v2 signature broken late", []byte("\r\n\r\n\x00\r\nQUITX"), ErrBadSignature},
		{"v1 udp", []byte("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), ErrUnsupportedFamily},
		{"v1 lower-case proto", []byte("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), ErrUnsupportedFamily},
		{"v1 empty proto", []byte("PROXY \r\n"), ErrUnsupportedFamily},
		{"v1 missing port", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), ErrMalformed},
		{"v1 extra field", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), ErrMalformed},
		{"v1 double space", []byte("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), ErrMalformed},
		{"v1 trailing space", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), ErrMalformed},
		{"v1 v6 under TCP4", []byte("PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n"), ErrMalformed},
		{"v1 mapped under TCP4", []byte("PROXY TCP4 ::ffff:1.2.3.4 5.6.7.8 1 2\r\n"), ErrMalformed},
		{"v1 v4 under TCP6", []byte("PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n"), ErrMalformed},
		{"v1 zone", []byte("PROXY TCP6 fe80::1%eth0 2001:db8::1 1 2\r\n"), ErrMalformed},
		{"v1 hostname", []byte("PROXY TCP4 client.example 5.6.7.8 1 2\r\n"), ErrMalformed},
		{"v1 port too big", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), ErrMalformed},
		{"v1 port leading zero", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n"), ErrMalformed},
		{"v1 port sign", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n"), ErrMalformed},
		{"v1 bare LF", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), ErrMalformed},
		{"v1 CR without LF", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), ErrMalformed},
		{"v1 NUL", []byte("PROXY TCP4 1.2.3.4\x00"), ErrMalformed},
		{"v1 non-ASCII", []byte("PROXY TCP4 1.2.3.4 \xc3\xa9"), ErrMalformed},
		{"v1 too long", []byte("PROXY UNKNOWN " + strings.Repeat("x", 100)), ErrTooLong},
		{"v1 CRLF one byte too late", []byte("PROXY UNKNOWN " + strings.Repeat("x", 92) + "\r\n"), ErrTooLong},
		{"v2 version 1", v2(0x11, 0x11, tcp4), ErrBadVersion},
		{"v2 version 3", v2(0x31, 0x11, tcp4), ErrBadVersion},
		{"v2 command 2", v2(0x22, 0x11, tcp4), ErrBadCommand},
		{"v2 udp4", v2(0x21, 0x12, tcp4), ErrUnsupportedFamily},
		{"v2 udp6", v2(0x21, 0x22, make([]byte, 36)), ErrUnsupportedFamily},
		{"v2 unix stream", v2(0x21, 0x31, make([]byte, 216)), ErrUnsupportedFamily},
		{"v2 unspec with stream", v2(0x21, 0x01), ErrUnsupportedFamily},
		{"v2 unknown family", v2(0x21, 0x41, tcp4), ErrUnsupportedFamily},
		{"v2 too long", v2(0x21, 0x11, tcp4, make([]byte, MaxV2Payload-11)), ErrTooLong},
		{"v2 length field huge", append(append([]byte(nil), v2Sig...), 0x21, 0x11, 0xff, 0xff), ErrTooLong},
		{"v2 short inet block", v2(0x21, 0x11, tcp4[:11]), ErrMalformed},
		{"v2 short inet6 block", v2(0x21, 0x21, make([]byte, 35)), ErrMalformed},
		{"v2 TLV cut short", v2(0x21, 0x11, tcp4, []byte{0x01, 0x00}), ErrMalformed},
		{"v2 TLV overruns", v2(0x21, 0x11, tcp4, []byte{0x01, 0x00, 0x05, 'a'}), ErrMalformed},
	}
	for _, tc := range cases {
		h, n, err := ParseProxyHeader(tc.in)
		if !errors.Is(err, tc.want) || n != 0 || h != (ProxyHeader{}) {
			t.Errorf("%s: got %+v, %d, %v; want %v", tc.name, h, n, err, tc.want)
		}
		// A failure stays the same failure whatever follows.
		more := append(append([]byte(nil), tc.in...), strings.Repeat("\r\n", MaxLen)...)
		if _, _, err2 := ParseProxyHeader(more); !errors.Is(err2, tc.want) {
			t.Errorf("%s: with more bytes: %v, want %v", tc.name, err2, tc.want)
		}
	}
}

// TestParseIncremental feeds every valid header one byte at a time: every
// proper prefix asks for more, the whole header parses.
func TestParseIncremental(t *testing.T) {
	headers := [][]byte{
		[]byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		v2(0x21, 0x21, addr6("2001:db8::1", "2001:db8::2", 1, 2), tlv(0x05, "unique-id")),
		v2(0x20, 0x00),
	}
	for _, hdr := range headers {
		for k := 0; k < len(hdr); k++ {
			if _, n, err := ParseProxyHeader(hdr[:k]); err != ErrNeedMore || n != 0 {
				t.Fatalf("%q prefix %d: %d %v, want ErrNeedMore", hdr, k, n, err)
			}
		}
		if _, n, err := ParseProxyHeader(hdr); err != nil || n != len(hdr) {
			t.Fatalf("%q: %d %v", hdr, n, err)
		}
	}
	// Never more than MaxLen bytes before a verdict.
	for _, in := range [][]byte{
		[]byte("PROXY " + strings.Repeat("A", MaxLen)),
		// length 536: allowed, waits for all of it
		append(append(append([]byte(nil), v2Sig...), 0x21, 0x11, 0x02, 0x18), make([]byte, MaxV2Payload)...),
	} {
		k := 0
		for ; k <= len(in) && k <= MaxLen; k++ {
			if _, _, err := ParseProxyHeader(in[:k]); err != ErrNeedMore {
				break
			}
		}
		if k > MaxLen {
			t.Errorf("%q...: still ErrNeedMore at %d bytes", in[:20], MaxLen)
		}
	}
}

func TestFromProxyHeader(t *testing.T) {
	r := mustResolver(t, []string{"10.0.0.0/8"}, "")
	lb := netip.MustParseAddr("10.0.0.1")
	h := ProxyHeader{Version: 2, Source: netip.MustParseAddrPort("203.0.113.9:5000"), Dest: netip.MustParseAddrPort("10.0.0.2:443")}
	cases := []struct {
		name string
		peer netip.Addr
		h    ProxyHeader
		want netip.Addr
		why  reason.Reason
	}{
		{"trusted", lb, h, netip.MustParseAddr("203.0.113.9"), reason.None},
		{"trusted mapped peer", netip.MustParseAddr("::ffff:10.0.0.1"), h, netip.MustParseAddr("203.0.113.9"), reason.None},
		{"untrusted peer refused", netip.MustParseAddr("198.51.100.7"), h, netip.MustParseAddr("198.51.100.7"), reason.ProxyHeader},
		{"local", lb, ProxyHeader{Version: 2, Local: true}, lb, reason.None},
	}
	for _, tc := range cases {
		got, why := r.FromProxyHeader(tc.peer, tc.h)
		if got != tc.want || why != tc.why {
			t.Errorf("%s: %v %v; want %v %v", tc.name, got, why, tc.want, tc.why)
		}
	}
	// A PROXY source that is itself a trusted proxy chains into FromHeaders.
	cdn := ProxyHeader{Version: 1, Source: netip.MustParseAddrPort("10.5.5.5:1"), Dest: netip.MustParseAddrPort("10.0.0.2:443")}
	edge, _ := r.FromProxyHeader(lb, cdn)
	if c, why := r.FromHeaders(edge, []string{"203.0.113.9"}); c != netip.MustParseAddr("203.0.113.9") || why != reason.None {
		t.Errorf("chain: %v %v", c, why)
	}
}

func BenchmarkParseProxyHeaderV2(b *testing.B) {
	in := v2(0x21, 0x11, addr4("192.0.2.1", "198.51.100.2", 1, 2), tlv(0x01, "h2"))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParseProxyHeader(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseProxyHeaderV1(b *testing.B) {
	in := []byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParseProxyHeader(in); err != nil {
			b.Fatal(err)
		}
	}
}
