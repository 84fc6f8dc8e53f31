package clientip

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Size limits of PROXY protocol headers, in bytes.
const (
	// MaxV1Len is the longest v1 header, CRLF included, as the protocol
	// specification fixes it.
	MaxV1Len = 107
	// MaxV2Payload caps the v2 length field (address block and TLVs). The
	// specification allows 65535; real senders (HAProxy, AWS NLB, nginx,
	// Envoy) stay far below, and a pending connection holds at most this much.
	MaxV2Payload = 536
	// MaxV2Len is the longest v2 header accepted: the 16-byte fixed part
	// plus MaxV2Payload.
	MaxV2Len = 16 + MaxV2Payload
	// MaxLen is the longest PROXY header of either version: a reader that
	// has buffered this many bytes without a complete header has an error,
	// never ErrNeedMore.
	MaxLen = MaxV2Len
)

// Errors of ParseProxyHeader. Every error but ErrNeedMore is returned
// wrapped with details; test with errors.Is.
var (
	// ErrNeedMore says the input is a valid but incomplete prefix of a
	// header: read more bytes and call again with all of them.
	ErrNeedMore = errors.New("proxy header: need more bytes")
	// ErrBadSignature: the input starts with neither "PROXY " (v1) nor the
	// 12-byte v2 signature — typically a client that speaks HTTP directly.
	ErrBadSignature = errors.New("proxy header: bad signature")
	// ErrBadVersion: a v2 signature followed by a version other than 2.
	ErrBadVersion = errors.New("proxy header: unsupported version")
	// ErrBadCommand: a v2 command other than LOCAL or PROXY.
	ErrBadCommand = errors.New("proxy header: unsupported command")
	// ErrUnsupportedFamily: an address family or transport other than TCP
	// over IPv4 or IPv6 (v1 "UNKNOWN" and v2 AF_UNSPEC are accepted and
	// carry no address).
	ErrUnsupportedFamily = errors.New("proxy header: unsupported address family")
	// ErrTooLong: over MaxV1Len (v1) or MaxV2Len (v2).
	ErrTooLong = errors.New("proxy header: too long")
	// ErrMalformed: wrong syntax, bad address or port, short address
	// block, TLVs that do not fit.
	ErrMalformed = errors.New("proxy header: malformed")
)

var (
	v1Sig = []byte("PROXY ")
	v2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// v2 command, family and transport values.
const (
	v2Local  = 0x0
	v2Proxy  = 0x1
	v2Unspec = 0x00 // AF_UNSPEC, UNSPEC
	v2TCP4   = 0x11 // AF_INET, STREAM
	v2TCP6   = 0x21 // AF_INET6, STREAM
)

// ProxyHeader is a parsed PROXY protocol header.
type ProxyHeader struct {
	// Version is 1 (text) or 2 (binary).
	Version uint8
	// Local says the header conveys no address: a v2 LOCAL command (the
	// proxy's own health check), v2 AF_UNSPEC or v1 "UNKNOWN". The socket
	// peer is then the client.
	Local bool
	// Source is the client's address and port (unmapped), when !Local.
	Source netip.AddrPort
	// Dest is the address and port the client connected to (unmapped),
	// when !Local.
	Dest netip.AddrPort
}

// ParseProxyHeader parses a PROXY protocol v1 or v2 header at the start of
// b, which holds every byte read so far from the connection. It never
// blocks and keeps no state: on ErrNeedMore, read more and call again with
// the longer buffer. On success n is the header's length; the bytes after it
// belong to the application protocol. v2 TLVs are checked for framing and
// skipped.
//
// Errors are reported as early as the bytes allow (the first byte of an
// HTTP request is already ErrBadSignature), and a failing input keeps
// failing with the same error however many bytes follow it. With
// len(b) >= MaxLen the result is never ErrNeedMore.
func ParseProxyHeader(b []byte) (h ProxyHeader, n int, err error) {
	if len(b) == 0 {
		return h, 0, ErrNeedMore
	}
	switch b[0] {
	case v1Sig[0]:
		return parseV1(b)
	case v2Sig[0]:
		return parseV2(b)
	}
	return h, 0, fmt.Errorf("%w: first byte 0x%02x", ErrBadSignature, b[0])
}

// hasPrefix compares the bytes available: it reports whether b and sig agree
// on their common length.
func hasPrefix(b, sig []byte) bool {
	k := min(len(b), len(sig))
	return bytes.Equal(b[:k], sig[:k])
}

func parseV1(b []byte) (h ProxyHeader, n int, err error) {
	if !hasPrefix(b, v1Sig) {
		return h, 0, fmt.Errorf("%w: not \"PROXY \"", ErrBadSignature)
	}
	// The CR must sit before index MaxV1Len-1 so that CRLF fits.
	end := min(len(b), MaxV1Len-1)
	for i := len(v1Sig); i < end; i++ {
		c := b[i]
		if c == '\r' {
			if i+1 == len(b) {
				return h, 0, ErrNeedMore
			}
			if b[i+1] != '\n' {
				return h, 0, fmt.Errorf("%w: v1: CR not followed by LF", ErrMalformed)
			}
			h, err = parseV1Line(b[len(v1Sig):i])
			if err != nil {
				return ProxyHeader{}, 0, err
			}
			return h, i + 2, nil
		}
		if c < 0x20 || c > 0x7e {
			return h, 0, fmt.Errorf("%w: v1: byte 0x%02x at offset %d", ErrMalformed, c, i)
		}
	}
	if len(b) >= MaxV1Len-1 {
		return h, 0, fmt.Errorf("%w: v1: no CRLF within %d bytes", ErrTooLong, MaxV1Len)
	}
	return h, 0, ErrNeedMore
}

// parseV1Line parses "TCP4 src dst sport dport", "TCP6 …" or "UNKNOWN[ …]"
// (the line after "PROXY ", without CRLF; printable ASCII only).
func parseV1Line(line []byte) (ProxyHeader, error) {
	h := ProxyHeader{Version: 1}
	proto, rest, _ := bytes.Cut(line, []byte{' '})
	var want6 bool
	switch string(proto) {
	case "UNKNOWN":
		h.Local = true
		return h, nil
	case "TCP4":
	case "TCP6":
		want6 = true
	default:
		return h, fmt.Errorf("%w: v1 protocol %q", ErrUnsupportedFamily, proto)
	}
	var f [4][]byte
	for i := range f {
		var ok bool
		f[i], rest, ok = bytes.Cut(rest, []byte{' '})
		if ok != (i < 3) || len(f[i]) == 0 {
			return h, fmt.Errorf("%w: v1: want \"%s src dst sport dport\"", ErrMalformed, proto)
		}
	}
	src, err := parseV1Addr(f[0], want6)
	if err != nil {
		return h, fmt.Errorf("source address: %w", err)
	}
	dst, err := parseV1Addr(f[1], want6)
	if err != nil {
		return h, fmt.Errorf("destination address: %w", err)
	}
	sport, err := parseV1Port(f[2])
	if err != nil {
		return h, fmt.Errorf("source port: %w", err)
	}
	dport, err := parseV1Port(f[3])
	if err != nil {
		return h, fmt.Errorf("destination port: %w", err)
	}
	h.Source = netip.AddrPortFrom(src, sport)
	h.Dest = netip.AddrPortFrom(dst, dport)
	return h, nil
}

func parseV1Addr(s []byte, want6 bool) (netip.Addr, error) {
	if bytes.IndexByte(s, '%') >= 0 {
		return netip.Addr{}, fmt.Errorf("%w: v1: address %q has a zone", ErrMalformed, s)
	}
	a, err := netip.ParseAddr(string(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: v1: address %q", ErrMalformed, s)
	}
	if a.Is6() != want6 {
		return netip.Addr{}, fmt.Errorf("%w: v1: address %q does not match the protocol", ErrMalformed, s)
	}
	return a.Unmap(), nil
}

// parseV1Port reads a decimal port 0..65535 without sign or leading zero.
func parseV1Port(s []byte) (uint16, error) {
	if len(s) > 5 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%w: v1: port %q", ErrMalformed, s)
	}
	v := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: v1: port %q", ErrMalformed, s)
		}
		v = v*10 + int(c-'0')
	}
	if v > 65535 {
		return 0, fmt.Errorf("%w: v1: port %q", ErrMalformed, s)
	}
	return uint16(v), nil
}

func parseV2(b []byte) (h ProxyHeader, n int, err error) {
	if !hasPrefix(b, v2Sig) {
		return h, 0, fmt.Errorf("%w: not the v2 signature", ErrBadSignature)
	}
	if len(b) <= len(v2Sig) {
		return h, 0, ErrNeedMore
	}
	verCmd := b[12]
	if verCmd>>4 != 2 {
		return h, 0, fmt.Errorf("%w: v2 version nibble %d", ErrBadVersion, verCmd>>4)
	}
	cmd := verCmd & 0x0f
	if cmd != v2Local && cmd != v2Proxy {
		return h, 0, fmt.Errorf("%w: v2 command %d", ErrBadCommand, cmd)
	}
	if len(b) < 14 {
		return h, 0, ErrNeedMore
	}
	fam := b[13]
	addrLen := 0
	if cmd == v2Proxy {
		switch fam {
		case v2Unspec:
		case v2TCP4:
			addrLen = 12
		case v2TCP6:
			addrLen = 36
		default:
			return h, 0, fmt.Errorf("%w: v2 family/transport 0x%02x", ErrUnsupportedFamily, fam)
		}
	}
	if len(b) < 16 {
		return h, 0, ErrNeedMore
	}
	l := int(binary.BigEndian.Uint16(b[14:16]))
	if l > MaxV2Payload {
		return h, 0, fmt.Errorf("%w: v2 length %d over %d", ErrTooLong, l, MaxV2Payload)
	}
	if l < addrLen {
		return h, 0, fmt.Errorf("%w: v2 length %d below the %d-byte address block", ErrMalformed, l, addrLen)
	}
	n = 16 + l
	if len(b) < n {
		return h, 0, ErrNeedMore
	}
	h.Version = 2
	if cmd == v2Local || fam == v2Unspec {
		// The protocol block is discarded, TLVs included.
		h.Local = true
		return h, n, nil
	}
	body := b[16:n]
	switch fam {
	case v2TCP4:
		src := netip.AddrFrom4([4]byte(body[0:4]))
		dst := netip.AddrFrom4([4]byte(body[4:8]))
		h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(body[8:10]))
		h.Dest = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(body[10:12]))
	case v2TCP6:
		src := netip.AddrFrom16([16]byte(body[0:16])).Unmap()
		dst := netip.AddrFrom16([16]byte(body[16:32])).Unmap()
		h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(body[32:34]))
		h.Dest = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(body[34:36]))
	}
	for tlv := body[addrLen:]; len(tlv) > 0; {
		if len(tlv) < 3 {
			return ProxyHeader{}, 0, fmt.Errorf("%w: v2 TLV header cut short", ErrMalformed)
		}
		vl := int(binary.BigEndian.Uint16(tlv[1:3]))
		if 3+vl > len(tlv) {
			return ProxyHeader{}, 0, fmt.Errorf("%w: v2 TLV type 0x%02x length %d overruns the header", ErrMalformed, tlv[0], vl)
		}
		tlv = tlv[3+vl:]
	}
	return h, n, nil
}

// FromProxyHeader returns the client address conveyed by h, a PROXY header
// received from the socket peer.
//
//   - peer not trusted: peer with reason.ProxyHeader — a PROXY header is only
//     believed from trusted_proxies, and the caller must refuse the
//     connection (with proxy_protocol on, every connection must start with
//     one).
//   - h.Local: peer (the proxy speaking for itself, e.g. a health check).
//   - otherwise h.Source's address.
//
// The result may itself be a trusted proxy (a CDN edge behind a PROXY-speaking
// load balancer); pass it as the peer to FromHeaders to read the forwarding
// header next. The returned address is unmapped and zoneless.
func (r *Resolver) FromProxyHeader(peer netip.Addr, h ProxyHeader) (netip.Addr, reason.Reason) {
	peer = peer.Unmap().WithZone("")
	if !r.Trusted(peer) {
		return peer, reason.ProxyHeader
	}
	if h.Local || !h.Source.Addr().IsValid() {
		return peer, reason.None
	}
	return h.Source.Addr().Unmap().WithZone(""), reason.None
}
