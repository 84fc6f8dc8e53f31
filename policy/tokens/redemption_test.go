package tokens

import (
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/clientip"
)

func presenter(conn uint64, addr, user string) Presenter {
	a := netip.MustParseAddr(addr)
	return Presenter{Conn: conn, Addr: a, Counted: clientip.Key(a, 64), UserID: user}
}

// A spent token from the redeemer's counted address and user is a
// reconnect (token_replayed, every time); from anywhere else, or as
// another user, it is token_theft_suspected. Both are refused.
func TestRedeemForReplayOrTheft(t *testing.T) {
	s := NewStore(Options{})
	tok, _, err := s.Mint("bob", []string{"news"}, time.Minute, t0)
	if err != nil {
		t.Fatal(err)
	}
	at := t0.Add(2 * time.Second)
	if g, sp, r := redeemFor(s, tok, presenter(1, "192.0.2.10", "bob"), at); r != reason.None || g == nil || sp != (Spent{}) {
		t.Fatalf("first redemption: %v %+v %v", g, sp, r)
	}
	redeemer := netip.MustParseAddr("192.0.2.10")
	cases := []struct {
		name string
		p    Presenter
		want reason.Reason
	}{
		{"same connection", presenter(1, "192.0.2.10", "bob"), reason.None},
		{"reconnect: same address and user", presenter(2, "192.0.2.10", "bob"), reason.TokenReplayed},
		{"second reconnect", presenter(3, "192.0.2.10", "bob"), reason.TokenReplayed},
		{"other address", presenter(4, "192.0.2.11", "bob"), reason.TokenTheft},
		{"same address, other user", presenter(5, "192.0.2.10", "carol"), reason.TokenTheft},
		{"IPv4-mapped form of the same address", presenter(6, "::ffff:192.0.2.10", "bob"), reason.TokenReplayed},
		{"address unknown", Presenter{Conn: 7, UserID: "bob"}, reason.TokenReplayed},
	}
	for i, tc := range cases {
		now := at.Add(time.Duration(i+1) * time.Second)
		g, sp, r := redeemFor(s, tok, tc.p, now)
		if r != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, r, tc.want)
			continue
		}
		if r == reason.None {
			if g == nil || g.UserID() != "bob" || sp != (Spent{}) {
				t.Errorf("%s: grant %v spent %+v", tc.name, g, sp)
			}
			continue
		}
		if g != nil || sp.By != redeemer || !sp.At.Equal(at) {
			t.Errorf("%s: grant %v, spent %+v; want nil and %v at %v", tc.name, g, sp, redeemer, at)
		}
	}
	// The redeeming connection keeps its token whatever happened elsewhere.
	if _, _, r := redeemFor(s, tok, presenter(1, "192.0.2.10", "bob"), at.Add(time.Minute/2)); r != reason.None {
		t.Fatalf("redeemer after a theft attempt: %v", r)
	}
	// Past its lifetime the token is only expired.
	if _, sp, r := redeemFor(s, tok, presenter(9, "192.0.2.99", "bob"), t0.Add(time.Minute)); r != reason.TokenExpired || sp != (Spent{}) {
		t.Fatalf("after expiry: %v %+v", r, sp)
	}
}

// Over IPv6 the counted address is the /64: privacy addresses of one
// subscriber line reconnect, another line steals.
func TestRedeemForIPv6Prefix(t *testing.T) {
	s := NewStore(Options{})
	tok, _, _ := s.Mint("bob", nil, 0, t0)
	if _, _, r := redeemFor(s, tok, presenter(1, "2001:db8:1:2::10", "bob"), t0); r != reason.None {
		t.Fatal(r)
	}
	if _, _, r := redeemFor(s, tok, presenter(2, "2001:db8:1:2:aaaa::1", "bob"), t0); r != reason.TokenReplayed {
		t.Errorf("same /64: %v, want token_replayed", r)
	}
	if _, sp, r := redeemFor(s, tok, presenter(3, "2001:db8:1:3::10", "bob"), t0); r != reason.TokenTheft || sp.By != netip.MustParseAddr("2001:db8:1:2::10") {
		t.Errorf("other /64: %v %+v, want token_theft_suspected by the redeemer", r, sp)
	}
}

// A presenter whose address is unknown (only Conn set): any other connection
// is a replay.
func TestRedeemWithoutAddress(t *testing.T) {
	s := NewStore(Options{})
	tok, _, _ := s.Mint("bob", nil, 0, t0)
	if _, r := redeemOn(s, tok, 1, t0); r != reason.None {
		t.Fatal(r)
	}
	if _, r := redeemOn(s, tok, 2, t0); r != reason.TokenReplayed {
		t.Fatalf("%v, want token_replayed", r)
	}
	if _, _, r := redeemFor(s, tok, presenter(3, "192.0.2.1", "bob"), t0); r != reason.TokenReplayed {
		t.Fatalf("redeemer's address unknown: %v, want token_replayed", r)
	}
}

func TestMintRefusesUserIDOutsideOneSegment(t *testing.T) {
	s := NewStore(Options{})
	for _, bad := range []string{"", "alice.smith", "a b", "a/b", strings.Repeat("u", 129)} {
		if _, _, err := s.Mint(bad, nil, 0, t0); err == nil || !strings.Contains(err.Error(), "one topic segment") {
			t.Errorf("Mint(%q): %v", bad, err)
		}
	}
	for _, ok := range []string{"alice", "42", "tenant:acme@x_y-z", strings.Repeat("u", 128)} {
		if _, _, err := s.Mint(ok, nil, 0, t0); err != nil {
			t.Errorf("Mint(%q): %v", ok, err)
		}
	}
	if s.Len() != 4 {
		t.Fatalf("%d tokens held, want 4", s.Len())
	}
}

func TestRedemptionSize(t *testing.T) {
	if n := unsafe.Sizeof(Redemption{}); n != 32 {
		t.Fatalf("Redemption is %d bytes, want 32", n)
	}
	if n := unsafe.Sizeof(entry{}); n != 16 {
		t.Fatalf("entry is %d bytes, want 16", n)
	}
}

// TestMemoryPerRedeemedToken bounds what redeeming adds to a live token:
// its 32-byte Redemption, allocated only then, so that minted tokens
// waiting for their page keep the cost TestMemoryPerToken bounds.
func TestMemoryPerRedeemedToken(t *testing.T) {
	const n = 50_000
	users := make([]string, n)
	toks := make([]string, n)
	s := NewStore(Options{})
	for i := range users {
		users[i] = "u" + strconv.Itoa(i)
		tok, _, err := s.Mint(users[i], nil, 0, t0)
		if err != nil {
			t.Fatal(err)
		}
		toks[i] = tok
	}
	heap := func() int64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC() // the second cycle frees what the first only swept
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	before := heap()
	a := netip.MustParseAddr("192.0.2.1")
	for i, tok := range toks {
		if _, _, r := redeemFor(s, tok, Presenter{Conn: uint64(i + 1), Addr: a, UserID: users[i]}, t0); r != reason.None {
			t.Fatal(r)
		}
	}
	per := float64(heap()-before) / n
	t.Logf("%.0f bytes more per token once redeemed", per)
	if per < 16 || per > 40 {
		t.Fatalf("%.0f bytes more per redeemed token, want 32 (16..40)", per)
	}
	runtime.KeepAlive(s)
	runtime.KeepAlive(toks)
	runtime.KeepAlive(users)
}

// redeemFor is Redeem's result as a tuple, for table tests.
func redeemFor(s *Store, tok string, p Presenter, now time.Time) (*Grant, Spent, reason.Reason) {
	res := s.Redeem(tok, p, now)
	if (res.Reason == reason.None) != (res.Grant != nil) || (res.Reason == reason.None) != (res.Detail == "") {
		panic("Result: grant, reason and detail disagree")
	}
	return res.Grant, res.Spent, res.Reason
}

// redeemOn redeems tok on connection conn, its address unknown.
func redeemOn(s *Store, tok string, conn uint64, now time.Time) (*Grant, reason.Reason) {
	g, _, r := redeemFor(s, tok, Presenter{Conn: conn}, now)
	return g, r
}

// Each refusal says why in Result.Detail, and the detail never carries
// the token.
func TestRedeemDetail(t *testing.T) {
	s := NewStore(Options{})
	tok, _, _ := s.Mint("bob", nil, time.Minute, t0)
	if res := s.Redeem(tok, presenter(1, "192.0.2.10", "bob"), t0); res.Reason != reason.None || res.Detail != "" {
		t.Fatalf("%+v", res)
	}
	cases := []struct {
		tok    string
		p      Presenter
		now    time.Time
		reason reason.Reason
		detail string
	}{
		{"", presenter(2, "192.0.2.10", "bob"), t0, reason.TokenMissing, "no token"},
		{tok + "x", presenter(2, "192.0.2.10", "bob"), t0, reason.TokenUnknown, "not a token this gateway minted"},
		{tok, presenter(2, "192.0.2.10", "bob"), t0, reason.TokenReplayed, DetailReconnect},
		{tok, Presenter{Conn: 2, UserID: "bob"}, t0, reason.TokenReplayed, DetailUnknownSide},
		{tok, presenter(3, "192.0.2.11", "bob"), t0, reason.TokenTheft, DetailOtherAddress},
		{tok, presenter(3, "192.0.2.10", "eve"), t0, reason.TokenTheft, DetailOtherUser},
		{tok, presenter(3, "192.0.2.11", "eve"), t0, reason.TokenTheft, DetailOtherBoth},
		{tok, presenter(3, "192.0.2.10", "bob"), t0.Add(time.Minute), reason.TokenExpired, "token expired"},
	}
	for _, tc := range cases {
		res := s.Redeem(tc.tok, tc.p, tc.now)
		if res.Reason != tc.reason || !strings.HasPrefix(res.Detail, tc.detail) || res.Grant != nil {
			t.Errorf("%v: %+v, want %v %q", tc.p, res, tc.reason, tc.detail)
		}
		if tc.tok != "" && strings.Contains(res.Detail, tc.tok) {
			t.Errorf("detail %q carries the token", res.Detail)
		}
	}
}
