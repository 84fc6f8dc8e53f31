package audit

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// nasty are strings that exercise every escaping rule of encoding/json.
var nasty = []string{
	"", "plain", `quote " and \ backslash`, "new\nline\r\ttab\b\f", "\x00\x01\x1f\x7f",
	"line\u2028sep\u2029", "bad utf8 \xff\xfe end", "é ü 日本 🙂", `{"level":"x","msg":"y"}`,
	"<html>&amp;", strings.Repeat("x", 300), strings.Repeat("é", 200),
}

// addrs are addresses an event may carry, the zero Addr and zones that
// exercise every escaping rule (a zone is the only free text in an address)
// included.
var addrs = func() []netip.Addr {
	out := []netip.Addr{{}, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("::ffff:198.51.100.9")}
	for _, s := range nasty {
		if a, err := netip.ParseAddr("fe80::1%" + s); err == nil {
			out = append(out, a)
		}
	}
	return out
}()

var prefixes = []netip.Prefix{{}, netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/64"),
	netip.MustParsePrefix("198.51.100.9/32")}

func eventFrom(r *rand.Rand, pick func() string) Event {
	addr := func() netip.Addr { return addrs[r.IntN(len(addrs))] }
	e := Event{
		Time: time.Unix(1700000000, int64(r.IntN(1e9))), Event: Kind(1 + r.IntN(int(kindEnd)-1)), Severity: Severity(r.IntN(4)),
		IP: addr(), PeerIP: addr(), CountedPrefix: prefixes[r.IntN(len(prefixes))], Proto: pick(), Stage: Stage(pick()),
		UserID: pick(), Topic: pick(), Reason: reason.Reason(r.IntN(256)), Detail: pick(), TokenFP: pick(), Actor: pick(),
	}
	if r.IntN(2) == 0 {
		e.Conn = r.Uint64()
	}
	if r.IntN(2) == 0 {
		e.Code = r.IntN(5000) - 10
	}
	if r.IntN(2) == 0 {
		e.DurationMS = r.Int64N(1e9)
	}
	if r.IntN(2) == 0 {
		e.Count = r.Int64N(1e6)
	}
	if r.IntN(2) == 0 {
		e.Strikes = r.Int64N(2000)
		e.First = time.Unix(1700000000, 5)
		e.Last = time.Unix(1700000100, 7)
	}
	if r.IntN(4) == 0 {
		e.Event = KindConnClose
	}
	if r.IntN(2) == 0 {
		e.RedeemedIP, e.RedeemedAgoS = addr(), r.Int64N(7200)
	}
	return e
}

func TestTemplateMatchesLogrus(t *testing.T) {
	lf := newLineFormatter("node \"1\"", "b00t")
	ref := newLogrusRef(lf)
	r := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return nasty[r.IntN(len(nasty))] }
	for i := 0; i < 5000; i++ {
		e := eventFrom(r, pick)
		fast := lf.template(nil, &e)
		want := ref.template(nil, &e)
		if !bytes.Equal(fast, want) {
			t.Fatalf("event %+v\nfast   %s\nlogrus %s", e, fast, want)
		}
	}
}

func FuzzTemplateMatchesLogrus(f *testing.F) {
	for _, s := range nasty {
		f.Add(s, s, uint64(1), 1, uint8(KindConnClose))
	}
	lf := newLineFormatter("n", "b")
	ref := newLogrusRef(lf)
	f.Fuzz(func(t *testing.T, a, b string, conn uint64, code int, kind uint8) {
		ip, _ := netip.ParseAddr(b)
		zoned, _ := netip.ParseAddr("fe80::1%" + a)
		e := Event{Time: time.Unix(1, 2), Event: Kind(1 + int(kind)%(int(kindEnd)-1)), IP: ip, PeerIP: zoned, Detail: a + b, UserID: b, Conn: conn, Code: code,
			RedeemedIP: zoned, RedeemedAgoS: int64(code), Reason: reason.Reason(kind), Severity: Severity(code & 3), Strikes: int64(code)}
		if fast, want := lf.template(nil, &e), ref.template(nil, &e); !bytes.Equal(fast, want) {
			t.Fatalf("fast   %s\nlogrus %s", fast, want)
		}
	})
}

func BenchmarkTemplate(b *testing.B) {
	lf := newLineFormatter("node", "boot")
	ref := newLogrusRef(lf)
	e := Event{Time: time.Now(), Event: KindAuthFailed, Severity: Warning, IP: netip.MustParseAddr("203.0.113.9"), PeerIP: netip.MustParseAddr("203.0.113.9"),
		CountedPrefix: netip.MustParsePrefix("203.0.113.9/32"), Conn: 123456, Proto: "portcullis.v1", Stage: StageMessage, UserID: "42",
		Topic: "user.42.inbox", Reason: reason.TokenReplayed, TokenFP: "deadbeef"}
	var dst []byte
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			dst = lf.template(dst[:0], &e)
		}
	})
	b.Run("logrus", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			dst = ref.template(dst[:0], &e)
		}
	})
}
