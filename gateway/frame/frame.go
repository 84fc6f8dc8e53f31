// Package frame is the incremental, non-blocking RFC 6455 frame parser for the
// server side of a WebSocket connection, and the encoder of server frames.
//
// It owns the wire rules a server enforces on client frames: masking, RSV
// bits, opcodes, control frame shape, fragmentation order, frame and message
// size limits, UTF-8 of text messages (across fragments) and close frame
// payloads. The parser never reads from a socket: the event loop hands it the
// bytes that arrived and it dispatches every complete message and control
// frame to a Handler. An idle parser holds no buffer; partial input is copied
// into pooled memory only until it completes.
//
// It must never import other project packages (it sits below everything in
// gateway/), and must never call the blocking readers of gobwas/ws
// (ws.ReadFrame, ws.ReadHeader, wsutil.ReadClientData, wsutil.ControlHandler).
package frame

import (
	"encoding/binary"
	"strconv"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Default limits, in bytes, used when a Limits field is zero or negative.
const (
	DefaultMaxFrame   = 64 << 10 // 64 KiB payload per data frame
	DefaultMaxMessage = 1 << 20  // 1 MiB per reassembled data message
)

// maxHeader is the longest client frame header: 2 bytes, a 64-bit extended
// length and the 4-byte masking key.
const maxHeader = 2 + 8 + 4

// maxControl is the largest control frame payload (RFC 6455 §5.5).
const maxControl = 125

// Limits bounds what a client may send, in bytes. A zero (or negative) field
// means the default (DefaultMaxFrame, DefaultMaxMessage), never unlimited.
type Limits struct {
	// MaxFrame is the largest payload of one text, binary or continuation
	// frame, in bytes. It is decided from the frame header, before the
	// payload arrives.
	MaxFrame int
	// MaxMessage is the largest data message after reassembly of its
	// fragments, in bytes. It is decided from each fragment's header.
	MaxMessage int
}

// maxFrame is the frame limit in force; a nil *Limits means the defaults.
func (l *Limits) maxFrame() int {
	if l != nil && l.MaxFrame > 0 {
		return min(l.MaxFrame, MaxLimit)
	}
	return DefaultMaxFrame
}

// MaxLimit is the largest frame or message limit a Parser honours (1 GiB);
// larger Limits are treated as MaxLimit.
const MaxLimit = 1 << 30

// maxMessage is the message limit in force; a nil *Limits means the defaults.
func (l *Limits) maxMessage() int {
	if l != nil && l.MaxMessage > 0 {
		return min(l.MaxMessage, MaxLimit)
	}
	return DefaultMaxMessage
}

// Reasons carried by CloseError, one per rule; they are stable snake_case
// strings for audit events and metrics.
const (
	ReasonUnmasked               = "unmasked_frame"          // 1002: client frame without mask
	ReasonRSV                    = "rsv_set"                 // 1002: RSV1/2/3 set, no extension negotiated
	ReasonBadOpcode              = "bad_opcode"              // 1002: reserved opcode 3–7 or 0xB–0xF
	ReasonControlTooLong         = "control_too_long"        // 1002: control payload over 125 bytes
	ReasonControlFragmented      = "control_fragmented"      // 1002: control frame without FIN
	ReasonUnexpectedContinuation = "unexpected_continuation" // 1002: continuation with no open message
	ReasonExpectedContinuation   = "expected_continuation"   // 1002: text/binary while a message is open
	ReasonBadLength              = "bad_length"              // 1002: 64-bit length with its MSB set
	ReasonFrameTooLarge          = "frame_too_large"         // 1009: frame payload over MaxFrame
	ReasonMessageTooLarge        = "message_too_large"       // 1009: message over MaxMessage
	ReasonInvalidUTF8            = "invalid_utf8"            // 1007: text or close reason not UTF-8
	ReasonBadCloseCode           = "bad_close_code"          // 1002: close code not allowed on the wire
	ReasonBadClosePayload        = "bad_close_payload"       // 1002: close payload of exactly 1 byte
)

// CloseError is a protocol violation: the connection must be closed with
// Code. Reason is one of the Reason constants.
type CloseError struct {
	Code   ws.StatusCode
	Reason string
}

// Error returns "websocket: <reason> (close <code>)".
func (e *CloseError) Error() string {
	return "websocket: " + e.Reason + " (close " + strconv.Itoa(int(e.Code)) + ")"
}

// violation builds a CloseError; it allocates only on the error path.
func violation(code ws.StatusCode, reason string) error {
	return &CloseError{Code: code, Reason: reason}
}

// Handler receives complete data messages (reassembled from fragments) and
// control frames, in the order they arrived. payload is valid only until the
// call returns: copy what you keep. A non-nil error stops Feed, which returns
// it as is.
type Handler interface {
	// OnMessage receives a whole ws.OpText (valid UTF-8) or ws.OpBinary
	// message.
	OnMessage(op ws.OpCode, payload []byte) error
	// OnControl receives a ws.OpPing, ws.OpPong or ws.OpClose frame; a close
	// payload is empty or a valid code followed by a UTF-8 reason.
	OnControl(op ws.OpCode, payload []byte) error
}

// Parser is one connection's incremental frame state. The zero value is
// ready. A Parser is not safe for concurrent use: the event loop that owns
// the connection owns its parser. It is 56 bytes, and every open connection
// has one, so the limits it applies are passed to Feed rather than held.
//
// An idle parser (no partial frame, no open fragmented message) holds no
// buffer. A frame split across reads is kept in a pooled buffer that grows
// with the bytes actually received (not with the length announced by the
// header), and is returned to the pool as soon as the frame completes.
type Parser struct {
	frame *[]byte // pooled: payload received so far of a control frame or single-frame message split across Feeds
	msg   *[]byte // pooled: payload received so far of the open fragmented message

	// int32 keeps an idle parser small; frames are capped far below 2 GiB
	// (config refuses max_message_bytes above 1 GiB).
	need int32 // payload bytes of the current frame still to come; > 0 means "reading a payload"
	pos  int32 // payload bytes of the current frame already seen (the masking offset)

	hdr   [maxHeader]byte // header bytes received so far when a header is split across Feeds
	nhdr  uint8
	mask  [4]byte
	op    ws.OpCode // current frame's opcode
	fin   bool      // current frame's FIN bit
	msgOp ws.OpCode // opcode of the open fragmented message; 0 (OpContinuation) when none
	u8    utf8Carry // incomplete code point at the end of the text validated so far
	// started is when the frame or message in progress began, in the
	// caller's clock (see MarkStarted); it fills what was padding.
	started uint32
}

// Feed parses data just read from the socket. data may be a slice of a shared
// per-loop read buffer: Feed unmasks it in place and copies whatever it must
// keep, so data may be reused as soon as Feed returns. Complete messages and
// control frames are dispatched to h in order. lim bounds frame and message
// sizes (nil: the defaults); it must be the same for every Feed of a message.
//
// Feed returns a *CloseError on a protocol violation (stop reading and close
// with its Code), or the first error h returned. After an error the parser
// must not be fed again; call Release.
func (p *Parser) Feed(data []byte, lim *Limits, h Handler) error {
	for len(data) > 0 {
		if p.need == 0 {
			n, err := p.takeHeader(data, lim)
			if err != nil || n == 0 {
				return err // a violation, or the header needs more bytes
			}
			data = data[n:]
			if p.need == 0 { // empty payload: the frame is complete
				if err := p.finish(h); err != nil {
					return err
				}
				continue
			}
		}
		take := min(int(p.need), len(data))
		chunk := data[:take]
		data = data[take:]
		ws.Cipher(chunk, p.mask, int(p.pos))
		if p.pos == 0 && take == int(p.need) && !p.fragment() {
			// The whole payload is here: dispatch it without copying.
			p.need = 0
			if err := p.whole(chunk, h); err != nil {
				return err
			}
			continue
		}
		p.pos += int32(take)
		p.need -= int32(take)
		if err := p.absorb(chunk); err != nil {
			return err
		}
		if p.need == 0 {
			if err := p.finish(h); err != nil {
				return err
			}
		}
	}
	return nil
}

// takeHeader consumes the current frame's header from data (completing a
// header carried from an earlier Feed if any). It returns how many bytes of
// data it consumed once the header is complete and loaded, or 0 when all of
// data was kept and more is needed.
func (p *Parser) takeHeader(data []byte, lim *Limits) (int, error) {
	if p.nhdr == 0 {
		n, err := p.header(data, lim)
		if err != nil {
			return 0, err
		}
		if n == 0 {
			// Incomplete, hence shorter than maxHeader: keep it in place.
			p.nhdr = uint8(copy(p.hdr[:], data))
		}
		return n, nil
	}
	have := int(p.nhdr)
	k := copy(p.hdr[have:], data)
	n, err := p.header(p.hdr[:have+k], lim)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		// Still incomplete: then all of data fitted and is header.
		p.nhdr += uint8(k)
		return 0, nil
	}
	p.nhdr = 0
	return n - have, nil
}

// header checks the header prefix b, however much of it has arrived, and
// once b holds the whole header loads it into p and returns its length; it
// returns 0 while more bytes are needed. Each check runs as soon as the bytes
// it needs are present, in byte order, so the verdict never depends on how
// the input was split. p changes only when the header is complete.
func (p *Parser) header(b []byte, lim *Limits) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	b0 := b[0]
	if b0&0x70 != 0 {
		return 0, violation(ws.StatusProtocolError, ReasonRSV)
	}
	fin := b0&0x80 != 0
	op := ws.OpCode(b0 & 0x0f)
	switch op {
	case ws.OpText, ws.OpBinary:
		if p.msgOp != 0 {
			return 0, violation(ws.StatusProtocolError, ReasonExpectedContinuation)
		}
	case ws.OpContinuation:
		if p.msgOp == 0 {
			return 0, violation(ws.StatusProtocolError, ReasonUnexpectedContinuation)
		}
	case ws.OpClose, ws.OpPing, ws.OpPong:
		if !fin {
			return 0, violation(ws.StatusProtocolError, ReasonControlFragmented)
		}
	default:
		return 0, violation(ws.StatusProtocolError, ReasonBadOpcode)
	}
	if len(b) < 2 {
		return 0, nil
	}
	b1 := b[1]
	if b1&0x80 == 0 {
		return 0, violation(ws.StatusProtocolError, ReasonUnmasked)
	}
	n7 := b1 & 0x7f
	control := op.IsControl()
	if control && n7 > maxControl {
		return 0, violation(ws.StatusProtocolError, ReasonControlTooLong)
	}
	ext := 0
	switch n7 {
	case 126:
		ext = 2
	case 127:
		ext = 8
	}
	if len(b) < 2+ext {
		return 0, nil
	}
	var length uint64
	switch ext {
	case 0:
		length = uint64(n7)
	case 2:
		length = uint64(binary.BigEndian.Uint16(b[2:4]))
	default:
		length = binary.BigEndian.Uint64(b[2:10])
		if length>>63 != 0 {
			return 0, violation(ws.StatusProtocolError, ReasonBadLength)
		}
	}
	if !control {
		if length > uint64(lim.maxFrame()) {
			return 0, violation(ws.StatusMessageTooBig, ReasonFrameTooLarge)
		}
		if uint64(p.msgLen())+length > uint64(lim.maxMessage()) {
			return 0, violation(ws.StatusMessageTooBig, ReasonMessageTooLarge)
		}
	}
	hlen := 2 + ext + 4
	if len(b) < hlen {
		return 0, nil
	}
	p.op, p.fin = op, fin
	copy(p.mask[:], b[hlen-4:hlen])
	p.need, p.pos = int32(length), 0
	if op == ws.OpText || op == ws.OpBinary {
		p.u8 = utf8Carry{}
		if !fin {
			p.msgOp = op // a fragmented message opens
		}
	}
	return hlen, nil
}

// fragment reports whether the current frame belongs to a fragmented
// message (its first fragment or a continuation).
func (p *Parser) fragment() bool { return p.msgOp != 0 && !p.op.IsControl() }

func (p *Parser) msgLen() int {
	if p.msg == nil {
		return 0
	}
	return len(*p.msg)
}

// whole dispatches a control frame or single-frame message whose payload
// arrived in one piece (already unmasked).
func (p *Parser) whole(payload []byte, h Handler) error {
	if p.op.IsControl() {
		return control(p.op, payload, h)
	}
	if p.op == ws.OpText && !utf8.Valid(payload) {
		return violation(ws.StatusInvalidFramePayloadData, ReasonInvalidUTF8)
	}
	return h.OnMessage(p.op, payload)
}

// absorb keeps an unmasked chunk of the current frame's payload, validating
// text as it arrives so that invalid UTF-8 fails at the first byte that
// makes it certain.
func (p *Parser) absorb(chunk []byte) error {
	if p.fragment() {
		if p.msgOp == ws.OpText && !p.u8.feed(chunk) {
			return violation(ws.StatusInvalidFramePayloadData, ReasonInvalidUTF8)
		}
		p.msg = appendBuf(p.msg, chunk)
		return nil
	}
	if p.op == ws.OpText && !p.u8.feed(chunk) {
		return violation(ws.StatusInvalidFramePayloadData, ReasonInvalidUTF8)
	}
	p.frame = appendBuf(p.frame, chunk)
	return nil
}

// finish completes the current frame once its whole payload was absorbed.
func (p *Parser) finish(h Handler) error {
	if p.fragment() {
		if !p.fin {
			return nil
		}
		if p.msgOp == ws.OpText && !p.u8.complete() {
			return violation(ws.StatusInvalidFramePayloadData, ReasonInvalidUTF8)
		}
		op, buf := p.msgOp, p.msg
		p.msgOp, p.msg = 0, nil
		err := h.OnMessage(op, bytesOf(buf))
		putBuf(buf)
		return err
	}
	var err error
	payload := bytesOf(p.frame)
	switch {
	case p.op.IsControl():
		err = control(p.op, payload, h)
	case p.op == ws.OpText && !p.u8.complete():
		return violation(ws.StatusInvalidFramePayloadData, ReasonInvalidUTF8)
	default:
		err = h.OnMessage(p.op, payload)
	}
	putBuf(p.frame)
	p.frame = nil
	return err
}

// control validates a close payload and dispatches a control frame.
func control(op ws.OpCode, payload []byte, h Handler) error {
	if op == ws.OpClose {
		if err := checkClose(payload); err != nil {
			return err
		}
	}
	return h.OnControl(op, payload)
}

// checkClose validates a close frame payload (RFC 6455 §5.5.1, §7.4).
func checkClose(b []byte) error {
	switch len(b) {
	case 0:
		return nil
	case 1:
		return violation(ws.StatusProtocolError, ReasonBadClosePayload)
	}
	if !ValidCloseCode(ws.StatusCode(binary.BigEndian.Uint16(b))) {
		return violation(ws.StatusProtocolError, ReasonBadCloseCode)
	}
	if !utf8.Valid(b[2:]) {
		return violation(ws.StatusInvalidFramePayloadData, ReasonInvalidUTF8)
	}
	return nil
}

// ValidCloseCode reports whether a peer may put code in a close frame
// (RFC 6455 §7.4 and the IANA registry): 1000–1003, 1007–1014 and
// 3000–4999. 1004, 1005, 1006 and 1015 are reserved and never sent; codes
// below 1000 and 1016–2999 are not assigned.
func ValidCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// Buffered reports how many bytes the parser currently holds: the part of a
// frame received so far (header bytes and, for a frame split across reads,
// its payload) plus the fragments of an unfinished message.
func (p *Parser) Buffered() int {
	return int(p.nhdr) + len(bytesOf(p.frame)) + len(bytesOf(p.msg))
}

// Idle reports whether the parser is between messages: no partial frame and
// no open fragmented message. An idle parser holds no pooled memory.
// Buffered may be 0 without the parser being idle (a header was read but
// none of its payload, or a message opened with empty fragments).
func (p *Parser) Idle() bool {
	return p.nhdr == 0 && p.need == 0 && p.msgOp == 0
}

// MarkStarted records t, in a clock of the caller's choosing (the gateway
// uses milliseconds since the connection opened), as when the frame or
// message in progress began. The parser keeps it until Release and
// never interprets it; it is meaningful only while the parser is not Idle.
func (p *Parser) MarkStarted(t uint32) { p.started = t }

// Started is the time last recorded by MarkStarted (0 if none).
func (p *Parser) Started() uint32 { return p.started }

// Release returns pooled memory and resets the parser to its zero state.
// Call it when the connection closes or after Feed returned an error;
// calling it in the middle of a message drops that message.
func (p *Parser) Release() {
	putBuf(p.frame)
	putBuf(p.msg)
	*p = Parser{}
}

func bytesOf(b *[]byte) []byte {
	if b == nil {
		return nil
	}
	return *b
}
