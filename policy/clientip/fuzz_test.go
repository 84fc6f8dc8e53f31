package clientip

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// appendHeader encodes h in its own version (v2 without TLVs), so that the
// fuzz target can check that a parsed header describes its input.
func appendHeader(b []byte, h ProxyHeader) []byte {
	src, dst := h.Source.Addr(), h.Dest.Addr()
	both4 := src.Is4() && dst.Is4()
	if !both4 {
		src, dst = netip.AddrFrom16(src.As16()), netip.AddrFrom16(dst.As16())
	}
	if h.Version == 1 {
		if h.Local {
			return append(b, "PROXY UNKNOWN\r\n"...)
		}
		proto := "TCP6"
		if both4 {
			proto = "TCP4"
		}
		b = append(b, "PROXY "+proto+" "...)
		b = src.AppendTo(b)
		b = append(b, ' ')
		b = dst.AppendTo(b)
		b = append(b, ' ')
		b = appendPort(b, h.Source.Port())
		b = append(b, ' ')
		b = appendPort(b, h.Dest.Port())
		return append(b, "\r\n"...)
	}
	b = append(b, v2Sig...)
	if h.Local {
		return append(b, 0x20, 0x00, 0x00, 0x00)
	}
	var body []byte
	fam := byte(v2TCP6)
	if both4 {
		fam = v2TCP4
		s, d := src.As4(), dst.As4()
		body = append(append(body, s[:]...), d[:]...)
	} else {
		s, d := src.As16(), dst.As16()
		body = append(append(body, s[:]...), d[:]...)
	}
	body = binary.BigEndian.AppendUint16(body, h.Source.Port())
	body = binary.BigEndian.AppendUint16(body, h.Dest.Port())
	b = append(b, 0x21, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

func appendPort(b []byte, p uint16) []byte {
	var d [5]byte
	i := len(d)
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

// FuzzParseProxyHeader checks, for any input, that the parser never panics
// and that its verdict is consistent: a success consumes a prefix that parses
// alone to the same header, every shorter prefix asks for more, the header
// re-encodes to an input with the same meaning; ErrNeedMore only below
// MaxLen; a failure never turns into something else with more bytes.
func FuzzParseProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(v2(0x21, 0x11, addr4("192.0.2.1", "198.51.100.2", 1, 2), tlv(0x01, "h2")))
	f.Add(v2(0x20, 0x00))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, n, err := ParseProxyHeader(in)
		switch {
		case err == nil:
			if n <= 0 || n > len(in) || n > MaxLen {
				t.Fatalf("n = %d for %d bytes", n, len(in))
			}
			if h.Version != 1 && h.Version != 2 {
				t.Fatalf("version %d", h.Version)
			}
			if h.Local != (h.Source == netip.AddrPort{}) || h.Local != (h.Dest == netip.AddrPort{}) {
				t.Fatalf("Local %v with %v -> %v", h.Local, h.Source, h.Dest)
			}
			if h.Source.Addr().Is4In6() || h.Dest.Addr().Is4In6() || h.Source.Addr().Zone() != "" {
				t.Fatalf("not normalised: %v -> %v", h.Source, h.Dest)
			}
			h2, n2, err2 := ParseProxyHeader(in[:n])
			if err2 != nil || n2 != n || h2 != h {
				t.Fatalf("header alone: %+v %d %v, want %+v %d", h2, n2, err2, h, n)
			}
			for k := 0; k < n; k++ {
				if _, _, e := ParseProxyHeader(in[:k]); e != ErrNeedMore {
					t.Fatalf("prefix %d of %d: %v", k, n, e)
				}
			}
			enc := appendHeader(nil, h)
			h3, n3, err3 := ParseProxyHeader(enc)
			if err3 != nil || n3 != len(enc) || h3 != h {
				t.Fatalf("re-encoded %q: %+v %d %v, want %+v", enc, h3, n3, err3, h)
			}
		case err == ErrNeedMore:
			if n != 0 || len(in) >= MaxLen {
				t.Fatalf("ErrNeedMore with n=%d after %d bytes", n, len(in))
			}
		default:
			if n != 0 || h != (ProxyHeader{}) {
				t.Fatalf("error %v with n=%d h=%+v", err, n, h)
			}
			var sentinel error
			for _, s := range []error{ErrBadSignature, ErrBadVersion, ErrBadCommand, ErrUnsupportedFamily, ErrTooLong, ErrMalformed} {
				if errors.Is(err, s) {
					sentinel = s
				}
			}
			if sentinel == nil {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			more := append(append([]byte(nil), in...), "\r\n\r\n\x00\r\nQUIT\n PROXY TCP4 "...)
			if _, _, err2 := ParseProxyHeader(more); !errors.Is(err2, sentinel) {
				t.Fatalf("%v became %v with more bytes", err, err2)
			}
		}
	})
}
