// Package frame is the incremental, non-blocking RFC 6455 frame parser for
// the server side of a connection, and the encoder of server frames.
//
// The parser never reads from a socket: the event loop hands it whatever
// bytes arrived and it dispatches every complete frame. An idle parser holds
// no buffer; partial input is copied into pooled memory only until it
// completes. It imports nothing from the project.
package frame

import (
	"encoding/binary"
	"sync"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Limits in bytes. A zero field means the default (64 KiB frame, 1 MiB
// message), never unlimited.
type Limits struct {
	MaxFrame   int
	MaxMessage int
}

// CloseError is a protocol violation: the connection must be closed with
// Code. Reason is a precise snake_case cause for the audit trail.
type CloseError struct {
	Code   ws.StatusCode
	Reason string
}

func (e *CloseError) Error() string { return "websocket: " + e.Reason }

// Handler receives complete data messages (reassembled) and control frames.
// payload is valid only until the call returns. A non-nil error stops Feed
// and is returned as is.
type Handler interface {
	OnMessage(op ws.OpCode, payload []byte) error
	OnControl(op ws.OpCode, payload []byte) error
}

// Parser is one connection's incremental state; the zero value (plus
// Limits) is ready. Not safe for concurrent use.
type Parser struct {
	Limits Limits

	partial *[]byte // incomplete frame carried to the next Feed
	msg     *[]byte // fragmented message being reassembled
	msgOp   ws.OpCode
	inMsg   bool
	// utf8 carry: bytes of an incomplete code point at the end of the
	// fragments validated so far (text messages only).
	carry  [4]byte
	ncarry uint8
}

func (p *Parser) maxFrame() int {
	if p.Limits.MaxFrame > 0 {
		return p.Limits.MaxFrame
	}
	return 64 << 10
}

func (p *Parser) maxMessage() int {
	if p.Limits.MaxMessage > 0 {
		return p.Limits.MaxMessage
	}
	return 1 << 20
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 256<<10 {
		return // let an unusually large buffer go
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// Buffered reports how many bytes the parser holds.
func (p *Parser) Buffered() int {
	n := 0
	if p.partial != nil {
		n += len(*p.partial)
	}
	if p.msg != nil {
		n += len(*p.msg)
	}
	return n
}

// Release returns pooled memory; call when the connection closes.
func (p *Parser) Release() {
	if p.partial != nil {
		putBuf(p.partial)
		p.partial = nil
	}
	if p.msg != nil {
		putBuf(p.msg)
		p.msg = nil
	}
	p.inMsg = false
	p.ncarry = 0
}

// Feed parses data just read from the socket. data may be a slice of a
// shared read buffer: Feed unmasks it in place and copies what it must keep.
// Complete frames go to h in order. It returns a *CloseError on a violation.
func (p *Parser) Feed(data []byte, h Handler) error {
	if p.partial != nil {
		// Complete the carried frame first; append only what it needs, so
		// the carry stays bounded by one frame.
		buf := append(*p.partial, data...)
		*p.partial = buf
		n, err := p.parse(buf, h)
		if err != nil {
			return err
		}
		rest := buf[n:]
		if len(rest) == 0 {
			putBuf(p.partial)
			p.partial = nil
			return nil
		}
		copy(buf, rest)
		*p.partial = buf[:len(rest)]
		return nil
	}
	n, err := p.parse(data, h)
	if err != nil {
		return err
	}
	if rest := data[n:]; len(rest) > 0 {
		b := getBuf()
		*b = append((*b)[:0], rest...)
		p.partial = b
	}
	return nil
}

// parse dispatches the complete frames at the start of b and returns how
// many bytes they took.
func (p *Parser) parse(b []byte, h Handler) (int, error) {
	off := 0
	for {
		hdr, hlen, err := p.header(b[off:])
		if err != nil {
			return off, err
		}
		if hlen == 0 {
			return off, nil // header incomplete
		}
		end := off + hlen + int(hdr.Length)
		if end > len(b) {
			return off, nil // payload incomplete
		}
		payload := b[off+hlen : end]
		ws.Cipher(payload, hdr.Mask, 0)
		if err := p.dispatch(hdr, payload, h); err != nil {
			return off, err
		}
		off = end
	}
}

// header decodes and checks a frame header. hlen is 0 when b does not yet
// hold all of it. Size limits are enforced from the header alone.
func (p *Parser) header(b []byte) (ws.Header, int, error) {
	var h ws.Header
	if len(b) < 2 {
		return h, 0, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	masked := b[1]&0x80 != 0
	n := int64(b[1] & 0x7f)
	hlen := 2
	switch n {
	case 126:
		hlen += 2
	case 127:
		hlen += 8
	}
	hlen += 4 // mask key; checked below
	if h.Rsv != 0 {
		return h, 0, &CloseError{ws.StatusProtocolError, "rsv_set"}
	}
	if !masked {
		return h, 0, &CloseError{ws.StatusProtocolError, "unmasked_frame"}
	}
	switch h.OpCode {
	case ws.OpContinuation, ws.OpText, ws.OpBinary:
	case ws.OpClose, ws.OpPing, ws.OpPong:
		if !h.Fin {
			return h, 0, &CloseError{ws.StatusProtocolError, "control_fragmented"}
		}
		if n > 125 {
			return h, 0, &CloseError{ws.StatusProtocolError, "control_too_long"}
		}
	default:
		return h, 0, &CloseError{ws.StatusProtocolError, "bad_opcode"}
	}
	switch h.OpCode {
	case ws.OpContinuation:
		if !p.inMsg {
			return h, 0, &CloseError{ws.StatusProtocolError, "unexpected_continuation"}
		}
	case ws.OpText, ws.OpBinary:
		if p.inMsg {
			return h, 0, &CloseError{ws.StatusProtocolError, "expected_continuation"}
		}
	}
	if len(b) < hlen {
		// The extended length may already be here: check the limits as early
		// as possible.
		if n == 126 && len(b) >= 4 {
			n = int64(binary.BigEndian.Uint16(b[2:4]))
		} else if n == 127 && len(b) >= 10 {
			n = int64(binary.BigEndian.Uint64(b[2:10]))
		} else if n >= 126 {
			return h, 0, nil
		}
		if err := p.checkSize(h, n); err != nil {
			return h, 0, err
		}
		return h, 0, nil
	}
	switch n {
	case 126:
		n = int64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return h, 0, &CloseError{ws.StatusProtocolError, "bad_length"}
		}
		n = int64(u)
	}
	if err := p.checkSize(h, n); err != nil {
		return h, 0, err
	}
	h.Length = n
	h.Masked = true
	copy(h.Mask[:], b[hlen-4:hlen])
	return h, hlen, nil
}

func (p *Parser) checkSize(h ws.Header, n int64) error {
	if n < 0 {
		return &CloseError{ws.StatusProtocolError, "bad_length"}
	}
	if h.OpCode.IsControl() {
		return nil
	}
	if n > int64(p.maxFrame()) {
		return &CloseError{ws.StatusMessageTooBig, "frame_too_large"}
	}
	have := 0
	if p.msg != nil {
		have = len(*p.msg)
	}
	if int64(have)+n > int64(p.maxMessage()) {
		return &CloseError{ws.StatusMessageTooBig, "message_too_large"}
	}
	return nil
}

func (p *Parser) dispatch(h ws.Header, payload []byte, hd Handler) error {
	switch h.OpCode {
	case ws.OpClose:
		if err := checkClose(payload); err != nil {
			return err
		}
		return hd.OnControl(h.OpCode, payload)
	case ws.OpPing, ws.OpPong:
		return hd.OnControl(h.OpCode, payload)
	case ws.OpText, ws.OpBinary:
		if h.Fin {
			if h.OpCode == ws.OpText && !utf8.Valid(payload) {
				return &CloseError{ws.StatusInvalidFramePayloadData, "invalid_utf8"}
			}
			return hd.OnMessage(h.OpCode, payload)
		}
		p.inMsg = true
		p.msgOp = h.OpCode
		p.ncarry = 0
		p.msg = getBuf()
		return p.appendFragment(payload, false)
	default: // continuation
		if err := p.appendFragment(payload, h.Fin); err != nil {
			return err
		}
		if !h.Fin {
			return nil
		}
		msg := p.msg
		p.msg = nil
		p.inMsg = false
		err := hd.OnMessage(p.msgOp, *msg)
		putBuf(msg)
		return err
	}
}

// appendFragment adds a fragment to the message, validating UTF-8 of text
// messages incrementally: an invalid sequence fails at the fragment where
// it becomes certain.
func (p *Parser) appendFragment(payload []byte, fin bool) error {
	if p.msgOp == ws.OpText {
		if err := p.validate(payload, fin); err != nil {
			return err
		}
	}
	*p.msg = append(*p.msg, payload...)
	return nil
}

func (p *Parser) validate(b []byte, fin bool) error {
	bad := &CloseError{ws.StatusInvalidFramePayloadData, "invalid_utf8"}
	// Finish a code point carried from the previous fragment.
	for p.ncarry > 0 && len(b) > 0 {
		p.carry[p.ncarry] = b[0]
		p.ncarry++
		b = b[1:]
		if !validPrefix(p.carry[:p.ncarry]) {
			return bad
		}
		if utf8.FullRune(p.carry[:p.ncarry]) {
			if r, size := utf8.DecodeRune(p.carry[:p.ncarry]); r == utf8.RuneError && size <= 1 {
				return bad
			}
			p.ncarry = 0
		}
	}
	if p.ncarry > 0 {
		if fin {
			return bad
		}
		return nil
	}
	// Validate all but a possibly incomplete last code point.
	tail := 0
	for i := len(b) - 1; i >= 0 && i >= len(b)-3; i-- {
		c := b[i]
		if c < 0x80 {
			break
		}
		if c >= 0xC0 { // lead byte
			if !utf8.FullRune(b[i:]) {
				tail = len(b) - i
			}
			break
		}
	}
	if !utf8.Valid(b[:len(b)-tail]) {
		return bad
	}
	if tail > 0 {
		if fin {
			return bad
		}
		// The carried prefix must itself be a possible start of a code point.
		if !validPrefix(b[len(b)-tail:]) {
			return bad
		}
		copy(p.carry[:], b[len(b)-tail:])
		p.ncarry = uint8(tail)
	}
	return nil
}

// validPrefix reports whether b (1–3 bytes, starting with a lead byte) can
// begin a valid UTF-8 sequence.
func validPrefix(b []byte) bool {
	c := b[0]
	switch {
	case c < 0xC2 || c > 0xF4:
		return false
	case len(b) == 1:
		return true
	}
	lo, hi := byte(0x80), byte(0xBF)
	switch c {
	case 0xE0:
		lo = 0xA0
	case 0xED:
		hi = 0x9F
	case 0xF0:
		lo = 0x90
	case 0xF4:
		hi = 0x8F
	}
	if b[1] < lo || b[1] > hi {
		return false
	}
	for _, x := range b[2:] {
		if x < 0x80 || x > 0xBF {
			return false
		}
	}
	return true
}

// checkClose validates a close frame payload (RFC 6455 §5.5.1, §7.4).
func checkClose(p []byte) error {
	switch {
	case len(p) == 0:
		return nil
	case len(p) == 1:
		return &CloseError{ws.StatusProtocolError, "bad_close_payload"}
	}
	code := binary.BigEndian.Uint16(p)
	if !ValidCloseCode(code) {
		return &CloseError{ws.StatusProtocolError, "bad_close_code"}
	}
	if !utf8.Valid(p[2:]) {
		return &CloseError{ws.StatusInvalidFramePayloadData, "invalid_utf8"}
	}
	return nil
}

// ValidCloseCode reports whether a peer may send code in a close frame.
func ValidCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// AppendFrame appends a server frame (unmasked, FIN set).
func AppendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	n := len(payload)
	dst = append(dst, 0x80|byte(op))
	switch {
	case n <= 125:
		dst = append(dst, byte(n))
	case n <= 0xffff:
		dst = append(dst, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}

// AppendClose appends a close frame with code and reason (cut to fit the
// 125-byte control payload on a UTF-8 boundary).
func AppendClose(dst []byte, code ws.StatusCode, reason string) []byte {
	if len(reason) > 123 {
		cut := 123
		for cut > 0 && reason[cut]&0xC0 == 0x80 {
			cut--
		}
		reason = reason[:cut]
	}
	var p [125]byte
	binary.BigEndian.PutUint16(p[:2], uint16(code))
	n := copy(p[2:], reason)
	return AppendFrame(dst, ws.OpClose, p[:2+n])
}
