package chain

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// A line's mac is the HMAC-SHA256 of the previous mac and the line's L0,
// and sealing a line allocates nothing: the writer seals every audit line.
func TestMACAllocatesNothing(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	s := NewSealer(key)
	prev := []byte("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
	body := []byte(`{"seq":2,"event":"conn_open","ip":"192.0.2.1"`)
	dst := make([]byte, 0, 64)
	got := string(s.MAC(dst, prev, body))
	h := hmac.New(sha256.New, key)
	h.Write(prev)
	h.Write(body)
	h.Write([]byte("}"))
	if want := hex.EncodeToString(h.Sum(nil)); got != want {
		t.Fatalf("mac %s, want %s", got, want)
	}
	if n := testing.AllocsPerRun(100, func() { dst = s.MAC(dst[:0], prev, body) }); n != 0 {
		t.Fatalf("MAC allocates %v times per line, want 0", n)
	}
}
