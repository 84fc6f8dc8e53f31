package tokens

import (
	"crypto/sha256"
	"encoding/hex"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func TestRedeem(t *testing.T) {
	s := NewStore(Options{})
	tok, exp, err := s.Mint("42", []string{"news"}, 0, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(t0.Add(60 * time.Second)) {
		t.Fatalf("expiry %v, want default TTL 60s", exp)
	}
	if len(tok) < 22 { // 128 bits in base64url
		t.Fatalf("token %d chars, too short", len(tok))
	}
	cases := []struct {
		name  string
		token string
		conn  uint64
		now   time.Time
		want  reason.Reason
	}{
		{"missing", "", 1, t0, reason.TokenMissing},
		{"unknown", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 1, t0, reason.TokenUnknown},
		{"first redeem", tok, 1, t0, reason.None},
		{"same connection again", tok, 1, t0.Add(time.Second), reason.None},
		{"replay from another connection", tok, 2, t0.Add(time.Second), reason.TokenReplayed},
		{"expired", tok, 1, t0.Add(61 * time.Second), reason.TokenExpired},
	}
	for _, c := range cases {
		g, r := redeemOn(s, c.token, c.conn, c.now)
		if r != c.want {
			t.Errorf("%s: reason %v, want %v", c.name, r, c.want)
		}
		if r == reason.None && (g.UserID() != "42" || slices.Collect(g.Topics()) == nil || slices.Collect(g.Topics())[0] != "news" || len(slices.Collect(g.Topics())) != 1) {
			t.Errorf("%s: grant %+v", c.name, g)
		}
	}
}

func TestFingerprintMatchesSHA256(t *testing.T) {
	s := NewStore(Options{})
	tok, _, _ := s.Mint("u", nil, 0, t0)
	g, r := redeemOn(s, tok, 9, t0)
	if r != reason.None {
		t.Fatal(r)
	}
	sum := sha256.Sum256([]byte(tok))
	if want := hex.EncodeToString(sum[:4]); g.FP() != want {
		t.Fatalf("fp %q, want %q", g.FP(), want)
	}
}

func TestTTLBounds(t *testing.T) {
	s := NewStore(Options{MaxTTL: time.Hour})
	if _, _, err := s.Mint("u", nil, 2*time.Hour, t0); err == nil {
		t.Fatal("ttl over max accepted")
	}
	if _, _, err := s.Mint("u", nil, -time.Second, t0); err == nil {
		t.Fatal("negative ttl accepted")
	}
}

func TestBoundedAndSwept(t *testing.T) {
	s := NewStore(Options{MaxEntries: 3})
	for i := 0; i < 3; i++ {
		if _, _, err := s.Mint("u", nil, time.Second, t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Mint("u", nil, time.Second, t0); err != ErrFull {
		t.Fatalf("4th mint: %v, want ErrFull", err)
	}
	// Once the others expire, minting sweeps them and succeeds.
	if _, _, err := s.Mint("u", nil, time.Second, t0.Add(2*time.Second)); err != nil {
		t.Fatalf("mint after expiry: %v", err)
	}
	if n := s.Len(); n != 1 {
		t.Fatalf("len %d after sweep, want 1", n)
	}
	if n := s.Sweep(t0.Add(time.Hour)); n != 1 {
		t.Fatalf("swept %d, want 1", n)
	}
}

func TestConcurrentRedeemExactlyOne(t *testing.T) {
	s := NewStore(Options{})
	tok, _, _ := s.Mint("u", nil, 0, t0)
	var ok atomic.Int32
	var wg sync.WaitGroup
	for i := 1; i <= 100; i++ {
		wg.Add(1)
		go func(conn uint64) {
			defer wg.Done()
			if _, r := redeemOn(s, tok, conn, t0); r == reason.None {
				ok.Add(1)
			}
		}(uint64(i))
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d connections redeemed one token, want exactly 1", ok.Load())
	}
}

// TestMemoryPerToken bounds what a live token costs: the Grant (48 bytes),
// its user-and-fingerprint string and a 32-byte map slot. The idle bar (1 KiB of RSS per
// subscribed connection, token included) depends on it.
func TestMemoryPerToken(t *testing.T) {
	const n = 50_000
	users := make([]string, n)
	topics := make([][]string, n)
	for i := range users {
		users[i] = "u" + strconv.Itoa(i)
		topics[i] = []string{"user." + users[i]}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := NewStore(Options{})
	for i := 0; i < n; i++ {
		if _, _, err := s.Mint(users[i], topics[i], 0, t0); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes per live token (strings supplied by the caller not counted)", per)
	if per > 70 {
		t.Fatalf("%.0f bytes per live token, want ≤ 70", per)
	}
	runtime.KeepAlive(s)
}

func TestGrantTopicsSharedAndChecked(t *testing.T) {
	s := NewStore(Options{})
	bound := func() []string { return []string{"news", "user.{userId}.**"} }
	tok1, _, _ := s.Mint("7", bound(), 0, t0)
	tok2, _, _ := s.Mint("8", bound(), 0, t0)
	g1, _ := redeemOn(s, tok1, 1, t0)
	g2, _ := redeemOn(s, tok2, 2, t0)
	if unsafe.StringData(g1.topics) != unsafe.StringData(g2.topics) {
		t.Error("two tokens bound to the same topics keep two copies of them")
	}
	if g1.UserID() != "7" || len(g1.FP()) != 8 || !g1.Bound() {
		t.Fatalf("grant user %q fp %q bound %v", g1.UserID(), g1.FP(), g1.Bound())
	}
	for _, tc := range []struct {
		topic, user string
		want        bool
	}{
		{"news", "7", true},
		{"user.7.inbox", "7", true},
		{"user.8.inbox", "7", false},
		{"sports", "7", false},
	} {
		if got := g1.Allows(tc.topic, tc.user); got != tc.want {
			t.Errorf("Allows(%q, %q) = %v, want %v", tc.topic, tc.user, got, tc.want)
		}
	}
	if _, _, err := s.Mint("7", []string{"news sports"}, 0, t0); err == nil {
		t.Error("a topic with a space was accepted")
	}
	tok3, _, _ := s.Mint("9", nil, 0, t0)
	if g3, _ := redeemOn(s, tok3, 3, t0); g3.Bound() || !g3.Allows("anything", "9") {
		t.Error("an unbound token does not cover every topic")
	}
}
