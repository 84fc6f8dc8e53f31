package frame

import (
	"encoding/binary"

	"github.com/gobwas/ws"
)

// AppendFrame appends to dst a server frame: FIN set, no RSV bits, unmasked,
// with the shortest length encoding. It does not check op or the control
// frame size: callers send control payloads of at most 125 bytes.
func AppendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	n := len(payload)
	dst = append(dst, 0x80|byte(op&0x0f))
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

// AppendClose appends to dst a server close frame carrying code and reason.
// The reason is cut on a UTF-8 boundary to fit the 125-byte control payload.
// Code 0 or 1005 (no status, which §7.4.1 forbids on the wire) gives an
// empty close payload.
func AppendClose(dst []byte, code ws.StatusCode, reason string) []byte {
	if code == 0 || code == ws.StatusNoStatusRcvd {
		return AppendFrame(dst, ws.OpClose, nil)
	}
	if len(reason) > maxControl-2 {
		cut := maxControl - 2
		for cut > 0 && reason[cut]&0xC0 == 0x80 {
			cut--
		}
		reason = reason[:cut]
	}
	var p [maxControl]byte
	binary.BigEndian.PutUint16(p[:2], uint16(code))
	n := copy(p[2:], reason)
	return AppendFrame(dst, ws.OpClose, p[:2+n])
}
