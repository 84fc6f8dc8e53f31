package gateway

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Every request here would have been upgraded by the parser alone: the
// header check must refuse each with 400 bad_header and a detail naming
// the field and the fault.
func TestUpgradeRefusesMalformedHeaders(t *testing.T) {
	cases := []struct {
		name string
		req  string
		want string // in the detail
	}{
		{"two Host", goodReq + "Host: evil.example\r\n", "Host appears more than once"},
		{"two Host, other case", goodReq + "host: gw.example:8080\r\n", "Host appears more than once"},
		{"two keys", goodReq + "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n", "Sec-WebSocket-Key appears more than once"},
		{"two versions", goodReq + "Sec-WebSocket-Version: 13\r\n", "Sec-WebSocket-Version appears more than once"},
		{"two upgrades", goodReq + "Upgrade: websocket\r\n", "Upgrade appears more than once"},
		{"two origins", goodReq + "Origin: http://gw.example:8080\r\nOrigin: http://gw.example:8080\r\n", "Origin appears more than once"},
		{"NUL in a value", goodReq + "User-Agent: a\x00b\r\n", "NUL (0x00) in the value of header field User-Agent"},
		{"NUL in the key", strings.Replace(goodReq, "dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j\x00Q==", 1), "NUL (0x00) in the value of header field Sec-WebSocket-Key"},
		{"bare LF in a value", goodReq + "X-A: a\nX-B: b\r\n", "bare LF (0x0a) in the value of header field X-A"},
		{"bare LF ends a line", strings.Replace(goodReq, "Connection: Upgrade\r\n", "Connection: Upgrade\n", 1), "bare LF (0x0a) in the value of header field Connection"},
		{"bare CR in a value", goodReq + "X-A: a\rb\r\n", "bare CR (0x0d) in the value of header field X-A"},
		{"DEL in a value", goodReq + "X-A: a\x7fb\r\n", "0x7f in the value of header field X-A"},
		{"escape in a value", goodReq + "X-A: \x1b[31m\r\n", "0x1b in the value of header field X-A"},
		{"obs-fold", goodReq + "X-A: a\r\n b\r\n", "starts with whitespace"},
		{"obs-fold with tab", goodReq + "X-A: a\r\n\tb\r\n", "starts with whitespace"},
		{"space before colon", goodReq + "Origin : http://evil.example\r\n", "whitespace before the colon of header field Origin"},
		{"no colon", goodReq + "Origin\r\n", "without a field name and colon"},
		{"empty name", goodReq + ": x\r\n", "without a field name and colon"},
		{"bad name byte", goodReq + "X(A): b\r\n", "character 0x28 in a header field name"},
		{"CTL in request line", strings.Replace(goodReq, "/ws?x=1", "/ws?x=\x001", 1), "NUL (0x00) in the request line"},
		{"LF in request line", strings.Replace(goodReq, "HTTP/1.1\r\n", "HTTP/1.1\n", 1), "bare LF (0x0a) in the request line"},
		{"Host with userinfo", strings.Replace(goodReq, "Host: gw.example:8080", "Host: a@gw.example", 1), "Host is not a host name"},
		{"Host with a path", strings.Replace(goodReq, "Host: gw.example:8080", "Host: gw.example/x", 1), "Host is not a host name"},
		{"key not base64 of 16 bytes", strings.Replace(goodReq, "dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZR==", 1), "Sec-WebSocket-Key is not 16 bytes"},
		{"key with a bad character", strings.Replace(goodReq, "dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub2.jZQ==", 1), "Sec-WebSocket-Key is not 16 bytes"},
	}
	for _, c := range cases {
		up, cn := testUpgrader(t)
		res := up.upgrade(cn, up.ls.rules(), []byte(c.req+"\r\n"), time.Now())
		if res.decision.Why() != reason.BadHeader || res.decision.Status != 400 {
			t.Errorf("%s: reject %v %d, want bad_header 400", c.name, res.decision.Why(), res.decision.Status)
			continue
		}
		if !strings.Contains(res.detail, c.want) || res.decision.Message != res.detail {
			t.Errorf("%s: detail %q, message %q; want %q in both", c.name, res.detail, res.decision.Message, c.want)
		}
		for _, b := range []byte(res.decision.Message) {
			if b < 0x20 || b > 0x7e {
				t.Errorf("%s: message %q is not printable ASCII", c.name, res.decision.Message)
				break
			}
		}
	}
}

// What HTTP/1.1 allows still upgrades: a tab and obs-text in values, a
// repeated list field, an empty Host, an IPv6 Host, a field name with
// every token character.
func TestUpgradeAcceptsWellFormedHeaders(t *testing.T) {
	for _, extra := range []string{
		"User-Agent: a\tb \xc3\xa9\r\n",
		"Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Protocol: portcullis.v1\r\n",
		"X-!#$%&'*+-.^_`|~09az: v\r\n",
		"Cookie:\r\n",
	} {
		up, cn := testUpgrader(t)
		if res := up.upgrade(cn, up.ls.rules(), []byte(goodReq+extra+"\r\n"), time.Now()); res.decision.Why() != reason.None {
			t.Errorf("%q: refused %v %q", extra, res.decision.Why(), res.detail)
		}
	}
	for _, host := range []string{"[::1]:8080", "127.0.0.1", "gw.example"} {
		up, cn := testUpgrader(t)
		req := strings.Replace(goodReq, "gw.example:8080", host, 1) + "\r\n"
		if res := up.upgrade(cn, up.ls.rules(), []byte(req), time.Now()); res.decision.Why() != reason.None {
			t.Errorf("Host %q: refused %v %q", host, res.decision.Why(), res.detail)
		}
	}
}

// The header check runs on every handshake: it must not allocate.
func TestHeaderFaultAllocs(t *testing.T) {
	req := []byte(goodReq + "Origin: http://gw.example:8080\r\nUser-Agent: Mozilla/5.0\r\n\r\n")
	if a := testing.AllocsPerRun(100, func() {
		if f := headerFault(req); f != "" {
			t.Fatal(f)
		}
	}); a != 0 {
		t.Fatalf("%v allocations per good request", a)
	}
}

// BenchmarkHeaderFault is the cost the header check adds to a handshake.
func BenchmarkHeaderFault(b *testing.B) {
	req := []byte(goodReq + "Origin: http://gw.example:8080\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0\r\n" +
		"Sec-WebSocket-Protocol: portcullis.v1\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if headerFault(req) != "" {
			b.Fatal("refused")
		}
	}
}

// lineEnd's eight-bytes-at-a-time test finds what a byte loop finds.
func TestLineEndMatchesByteLoop(t *testing.T) {
	naive := func(b []byte, from int) int {
		for i := from; i < len(b); i++ {
			if c := b[i]; c < 0x20 && c != '\t' || c == 0x7f {
				return i
			}
		}
		return -1
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte{0, '\t', '\n', '\r', 0x1f, ' ', 'a', '~', 0x7f, 0x80, 0x9f, 0xa0, 0xff}
	b := make([]byte, 40)
	for n := 0; n < 200000; n++ {
		for i := range b {
			if rng.IntN(8) == 0 {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			} else {
				b[i] = byte(0x20 + rng.IntN(0xe0))
			}
		}
		from := rng.IntN(len(b))
		if got, want := lineEnd(b, from), naive(b, from); got != want {
			t.Fatalf("lineEnd(%q, %d) = %d, want %d", b, from, got, want)
		}
	}
}
