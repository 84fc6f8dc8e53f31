package frame

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// refValidPrefix is the reference for "b can still begin valid UTF-8": b is
// valid, or completing its last sequence with 1–3 continuation bytes makes
// it valid. The candidate bytes are the edges of every second-byte range.
func refValidPrefix(b []byte) bool {
	if utf8.Valid(b) {
		return true
	}
	edges := []byte{0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF}
	var try func(b []byte, depth int) bool
	try = func(b []byte, depth int) bool {
		if depth == 0 {
			return false
		}
		for _, e := range edges {
			c := append(slices.Clone(b), e)
			if utf8.Valid(c) || try(c, depth-1) {
				return true
			}
		}
		return false
	}
	return try(b, 3)
}

// utf8Samples are edge cases of the UTF-8 grammar (RFC 3629) and the
// classic stress-test strings.
var utf8Samples = []string{
	"", "a", "héllo", "€", "𝄞", "κόσμε", "\xef\xbf\xbd", "\u0080", "\u07ff", "\u0800", "\uffff", "\U00010000", "\U0010ffff",
	"\xed\x9f\xbf", "\xee\x80\x80", // around the surrogates
	"\xed\xa0\x80", "\xed\xbf\xbf", // surrogates
	"\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xe0\x9f\xbf", "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf", // overlong
	"\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xf8\x88\x80\x80\x80", "\xff", "\xfe", // out of range
	"\x80", "\xbf", "a\x80b", "\xc2", "\xe2\x82", "\xf0\x9d\x84", "a\xe2\x82", "\xe2\x82a", "\xe2\x28\xa1",
	"\xf0\x28\x8c\xbc", "\xf0\x90\x28\xbc", "\xf0\x9d\x84\x9e\x9e", "€€€\xe2", "𝄞a𝄞", "ab\xc3", "\xc3\xa9\xc3",
}

// TestUTF8CarryByteByByte feeds every sample one byte at a time: feed must
// fail exactly at the first byte after which no valid completion exists, and
// complete must agree with utf8.Valid at the end.
func TestUTF8CarryByteByByte(t *testing.T) {
	samples := slices.Clone(utf8Samples)
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte{'a', 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xE2, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF}
	for range 3000 {
		b := make([]byte, rng.IntN(7))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		samples = append(samples, string(b))
	}
	for _, s := range samples {
		var c utf8Carry
		failedAt := -1
		for i := 0; i < len(s); i++ {
			if !c.feed([]byte{s[i]}) {
				failedAt = i
				break
			}
		}
		wantAt := -1
		for i := 1; i <= len(s); i++ {
			if !refValidPrefix([]byte(s[:i])) {
				wantAt = i - 1
				break
			}
		}
		if failedAt != wantAt {
			t.Fatalf("%q: feed failed at byte %d, want %d", s, failedAt, wantAt)
		}
		if failedAt < 0 && c.complete() != utf8.Valid([]byte(s)) {
			t.Fatalf("%q: complete() = %v, utf8.Valid = %v", s, c.complete(), utf8.Valid([]byte(s)))
		}
	}
}

// TestUTF8AcrossFragments sends every sample as a text message cut into two
// and three fragments at every position, one Feed per frame. The verdict
// must come at the first fragment after which the text cannot be valid any
// more (or at the last one if it ends inside a code point), and a valid
// message must arrive intact.
func TestUTF8AcrossFragments(t *testing.T) {
	for _, s := range utf8Samples {
		for i := 0; i <= len(s); i++ {
			for j := i; j <= len(s); j++ {
				parts := []string{s[:i], s[i:j], s[j:]}
				wantAt := len(parts) - 1
				if utf8.ValidString(s) {
					wantAt = -1
				}
				end := 0
				for k, part := range parts {
					end += len(part)
					if !refValidPrefix([]byte(s[:end])) {
						wantAt = k
						break
					}
				}
				var p Parser
				var r record
				gotAt := -1
				for k, part := range parts {
					f := cont(k == len(parts)-1, part)
					if k == 0 {
						f = first(ws.OpText, part)
					}
					if err := p.Feed(f, nil, &r); err != nil {
						if ce := closeErr(err); ce == nil || ce.Code != 1007 || ce.Reason != ReasonInvalidUTF8 {
							t.Fatalf("%q %q: err %v", s, parts, err)
						}
						gotAt = k
						break
					}
				}
				if gotAt != wantAt {
					t.Fatalf("%q cut %q: failed at fragment %d, want %d", s, parts, gotAt, wantAt)
				}
				if wantAt < 0 && !slices.Equal(r.events, []string{fmt.Sprintf("msg 1 %q", s)}) {
					t.Fatalf("%q cut %q: events %q", s, parts, r.events)
				}
				p.Release()
			}
		}
	}
}

// A long text frame split in many reads is validated as it arrives: the
// verdict does not depend on the read size.
func TestUTF8StreamedFrame(t *testing.T) {
	good := strings.Repeat("aé€𝄞", 500)
	for _, c := range []struct {
		name  string
		s     string
		valid bool
	}{
		{"valid", good, true},
		{"bad in the middle", good[:1001] + "\xff" + good[1002:], false},
		{"truncated at the end", good + "\xf0\x9d", false},
		{"surrogate in the middle", good[:700] + "\xed\xa0\x80" + good[700:], false},
	} {
		for _, n := range []int{0, 1, 2, 3, 5, 100, 1448} {
			o := feedChunks(text(c.s), nil, n)
			if c.valid != (o.err == nil) {
				t.Fatalf("%s, chunks %d: %v", c.name, n, o)
			}
			if !c.valid {
				if ce := closeErr(o.err); ce == nil || ce.Code != 1007 {
					t.Fatalf("%s, chunks %d: %v", c.name, n, o.err)
				}
			}
		}
	}
}
