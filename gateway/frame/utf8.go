package frame

import "unicode/utf8"

// utf8Carry validates text that arrives in pieces (chunks of a frame, or
// fragments of a message). It holds the start of a code point cut off at the
// end of the bytes validated so far: at most 3 bytes.
type utf8Carry struct {
	b [3]byte
	n uint8
}

// feed validates b as the continuation of everything fed before. It reports
// false as soon as the bytes so far cannot be the beginning of any valid
// UTF-8 text, so an invalid sequence fails at the chunk that makes it
// certain (a truncated code point is only an error once the text ends: see
// complete).
func (c *utf8Carry) feed(b []byte) bool {
	if c.n > 0 {
		var cp [4]byte
		k := copy(cp[:], c.b[:c.n])
		want := seqLen(cp[0]) // the carry starts with a valid lead byte
		m := copy(cp[k:want], b)
		k += m
		b = b[m:]
		if k < want {
			if !validPrefix(cp[:k]) {
				return false
			}
			copy(c.b[:], cp[:k])
			c.n = uint8(k)
			return true
		}
		if _, size := utf8.DecodeRune(cp[:want]); size != want {
			return false
		}
		c.n = 0
	}
	t := incompleteTail(b)
	if !utf8.Valid(b[:len(b)-t]) {
		return false
	}
	if t > 0 {
		if !validPrefix(b[len(b)-t:]) {
			return false
		}
		copy(c.b[:], b[len(b)-t:])
		c.n = uint8(t)
	}
	return true
}

// complete reports whether the text fed so far ends on a code point
// boundary; it is the final check when the text ends.
func (c *utf8Carry) complete() bool { return c.n == 0 }

// seqLen is the length of the UTF-8 sequence that lead byte c starts, or 0
// when c cannot start one (a continuation byte, C0, C1, F5–FF).
func seqLen(c byte) int {
	switch {
	case c < 0x80:
		return 1
	case c < 0xC2:
		return 0
	case c < 0xE0:
		return 2
	case c < 0xF0:
		return 3
	case c < 0xF5:
		return 4
	}
	return 0
}

// incompleteTail returns how many bytes at the end of b are the start of a
// multi-byte sequence that b does not complete (0–3).
func incompleteTail(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-3; i-- {
		c := b[i]
		if c&0xC0 != 0x80 { // not a continuation byte: the last lead byte
			if seqLen(c) > len(b)-i {
				return len(b) - i
			}
			return 0
		}
	}
	return 0
}

// validPrefix reports whether b, shorter than the sequence its first byte
// announces, can still become a valid code point: the lead byte is valid,
// the second byte is in the range that excludes overlong forms, surrogates
// and code points above U+10FFFF, and later bytes are continuation bytes.
func validPrefix(b []byte) bool {
	if seqLen(b[0]) < 2 {
		return false
	}
	if len(b) == 1 {
		return true
	}
	lo, hi := byte(0x80), byte(0xBF)
	switch b[0] {
	case 0xE0:
		lo = 0xA0 // overlong below U+0800
	case 0xED:
		hi = 0x9F // surrogates U+D800–U+DFFF
	case 0xF0:
		lo = 0x90 // overlong below U+10000
	case 0xF4:
		hi = 0x8F // above U+10FFFF
	}
	if b[1] < lo || b[1] > hi {
		return false
	}
	for _, x := range b[2:] {
		if x&0xC0 != 0x80 {
			return false
		}
	}
	return true
}
