package redistokens

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/redistest"
	"github.com/portcullis-gw/portcullis/policy/tokens"
)

func newClient(t *testing.T, addr string) redis.UniversalClient {
	t.Helper()
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr}, MaxRetries: -1,
		DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newSource(t *testing.T, c redis.UniversalClient, node string) *Source {
	t.Helper()
	s, err := New(Options{Client: c, Prefix: "pc:", Node: node, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var (
	addrA = netip.MustParseAddr("192.0.2.10")
	addrB = netip.MustParseAddr("198.51.100.7")
)

func TestMintRedeemAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv.Addr)
	a, b := newSource(t, c, "a"), newSource(t, c, "b")
	now := time.Now()
	tok, exp, err := a.Mint("alice", []string{"news.*"}, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(DefaultTTL); !exp.Equal(want) {
		t.Fatalf("expiry %v, want %v", exp, want)
	}
	// Redis holds the digest, never the token.
	keys, err := c.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || !strings.HasPrefix(keys[0], "pc:token:") || strings.Contains(keys[0], tok) {
		t.Fatalf("keys %q: want one pc:token:<sha256>", keys)
	}
	vals, _ := c.HGetAll(context.Background(), keys[0]).Result()
	for k, v := range vals {
		if strings.Contains(v, tok) {
			t.Fatalf("field %s holds the token", k)
		}
	}

	p := tokens.Presenter{Conn: 7, Addr: addrA, UserID: "alice"}
	res := b.Redeem(tok, p, now.Add(time.Second))
	if res.Reason != reason.None || res.Grant == nil {
		t.Fatalf("first redemption on b: %+v", res)
	}
	if g := res.Grant; g.UserID() != "alice" || !g.Bound() || !g.Allows("news.x", "alice") || g.Allows("sport.x", "alice") ||
		g.Expires != exp.UnixNano() || len(g.FP()) != 8 {
		t.Fatalf("grant %+v", g)
	}
	// The same connection on b again: accepted.
	if res := b.Redeem(tok, p, now.Add(2*time.Second)); res.Reason != reason.None {
		t.Fatalf("same connection again: %+v", res)
	}
	// Connection 7 of node a is another connection: a reconnect from the
	// same address as the same user is a replay.
	res = a.Redeem(tok, p, now.Add(3*time.Second))
	if res.Reason != reason.TokenReplayed || res.Detail != tokens.DetailReconnect || res.Spent.By != addrA ||
		!res.Spent.At.Equal(now.Add(time.Second)) {
		t.Fatalf("same conn id on another node: %+v", res)
	}
	// Another address: theft.
	res = a.Redeem(tok, tokens.Presenter{Conn: 9, Addr: addrB, UserID: "alice"}, now.Add(4*time.Second))
	if res.Reason != reason.TokenTheft || res.Detail != tokens.DetailOtherAddress || res.Spent.By != addrA {
		t.Fatalf("other address: %+v", res)
	}
	// Another user from the same address: theft.
	res = b.Redeem(tok, tokens.Presenter{Conn: 10, Addr: addrA, UserID: "mallory"}, now.Add(4*time.Second))
	if res.Reason != reason.TokenTheft || res.Detail != tokens.DetailOtherUser {
		t.Fatalf("other user: %+v", res)
	}
}

func TestRefusals(t *testing.T) {
	srv := redistest.Start(t)
	s := newSource(t, newClient(t, srv.Addr), "a")
	now := time.Now()
	p := tokens.Presenter{Conn: 1, Addr: addrA, UserID: "u"}
	if res := s.Redeem("", p, now); res.Reason != reason.TokenMissing {
		t.Fatalf("empty: %+v", res)
	}
	if res := s.Redeem("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", p, now); res.Reason != reason.TokenUnknown {
		t.Fatalf("unknown: %+v", res)
	}
	tok, _, err := s.Mint("u", nil, 10*time.Second, now)
	if err != nil {
		t.Fatal(err)
	}
	if res := s.Redeem(tok, p, now.Add(10*time.Second)); res.Reason != reason.TokenExpired {
		t.Fatalf("at expiry: %+v", res)
	}
	// Expired and not redeemed: a later presentation is still expired.
	if res := s.Redeem(tok, p, now.Add(11*time.Second)); res.Reason != reason.TokenExpired {
		t.Fatalf("after expiry: %+v", res)
	}
	for _, tc := range []struct {
		user  string
		bound []string
		ttl   time.Duration
		want  string
	}{
		{"a.b", nil, 0, "user id"},
		{"", nil, 0, "user id"},
		{"u", nil, 2 * time.Hour, "ttl"},
		{"u", nil, -time.Second, "ttl"},
		{"u", []string{"a b"}, 0, "topic"},
		{"u", []string{""}, 0, "topic"},
	} {
		if _, _, err := s.Mint(tc.user, tc.bound, tc.ttl, now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Mint(%q, %q, %s): %v, want an error about %s", tc.user, tc.bound, tc.ttl, err, tc.want)
		}
	}
}

func TestRedisDownFailsClosed(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv.Addr)
	s, err := New(Options{Client: c, Prefix: "pc:", Node: "a", Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, _, err := s.Mint("u", nil, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	res := s.Redeem(tok, tokens.Presenter{Conn: 1, Addr: addrA, UserID: "u"}, now)
	if res.Reason != reason.TokenSourceUnavailable || res.Grant != nil || !strings.HasPrefix(res.Detail, "token store (Redis) unavailable: ") {
		t.Fatalf("Redis down: %+v", res)
	}
	if strings.Contains(res.Detail, tok) {
		t.Fatal("detail holds the token")
	}
	if _, _, err := s.Mint("u", nil, 0, now); err == nil || !strings.Contains(err.Error(), "store it in Redis") {
		t.Fatalf("Mint with Redis down: %v", err)
	}
}

// TestConcurrentRedemption: 100 connections on three nodes present one
// token at once; exactly one redeems it, every other is told it is spent.
func TestConcurrentRedemption(t *testing.T) {
	srv := redistest.Start(t)
	var nodes []*Source
	for _, n := range []string{"a", "b", "c"} {
		nodes = append(nodes, newSource(t, newClient(t, srv.Addr), n))
	}
	now := time.Now()
	tok, _, err := nodes[0].Mint("u", nil, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	results := make([]tokens.Result, 100)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i] = nodes[i%3].Redeem(tok, tokens.Presenter{Conn: uint64(i + 1), Addr: addrA, UserID: "u"}, now)
		}()
	}
	close(start)
	wg.Wait()
	ok := 0
	for i, r := range results {
		switch r.Reason {
		case reason.None:
			ok++
		case reason.TokenReplayed:
		default:
			t.Errorf("presentation %d: %+v", i, r)
		}
	}
	if ok != 1 {
		t.Fatalf("%d successful redemptions, want exactly 1", ok)
	}
}

func TestDegradedRefusesAtOnce(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv.Addr)
	var degraded bool
	s, err := New(Options{Client: c, Prefix: "pc:", Node: "a", Degraded: func() bool { return degraded }})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := s.Mint("u", nil, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	degraded = true
	p := tokens.Presenter{Conn: 1, Addr: addrA, UserID: "u"}
	if res := s.Redeem(tok, p, time.Now()); res.Reason != reason.TokenSourceUnavailable ||
		res.Detail != "token store (Redis) unavailable: the cluster is degraded (Redis unreachable)" {
		t.Fatalf("degraded: %+v", res)
	}
	// Refused without touching Redis: the token is still unredeemed.
	degraded = false
	if res := s.Redeem(tok, p, time.Now()); res.Reason != reason.None {
		t.Fatalf("after recovery: %+v", res)
	}
}

func TestNewChecks(t *testing.T) {
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:1"}})
	defer c.Close()
	if _, err := New(Options{Node: "a"}); err == nil {
		t.Error("no client accepted")
	}
	if _, err := New(Options{Client: c}); err == nil {
		t.Error("no node accepted")
	}
	s, err := New(Options{Client: c, Node: "a"})
	if err != nil || !s.RedeemsRemotely() {
		t.Fatalf("New: %v", err)
	}
}

// BenchmarkRedeem measures one redemption (the Lua script's round trip on
// a loopback redis-server), each of a fresh token.
func BenchmarkRedeem(b *testing.B) {
	srv := redistest.Start(b)
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{srv.Addr}})
	defer c.Close()
	s, err := New(Options{Client: c, Prefix: "pc:", Node: "a"})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	toks := make([]string, b.N)
	for i := range toks {
		if toks[i], _, err = s.Mint("u", nil, time.Hour, now); err != nil {
			b.Fatal(err)
		}
	}
	p := tokens.Presenter{Conn: 1, Addr: addrA, UserID: "u"}
	b.ResetTimer()
	for i := range toks {
		if res := s.Redeem(toks[i], p, now); res.Reason != reason.None {
			b.Fatal(res)
		}
	}
}
