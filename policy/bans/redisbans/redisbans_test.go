package redisbans

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/bans"
	"github.com/portcullis-gw/portcullis/policy/redistest"
)

// node is one gateway's bans and their sync.
type node struct {
	name string
	m    *bans.Manager
	s    *Sync
	mu   sync.Mutex
	got  []string // "ban <prefix> from <node>" / "unban ..." as Applied reported them
}

func newClient(t *testing.T, addr string) redis.UniversalClient {
	t.Helper()
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr}, DialTimeout: 200 * time.Millisecond,
		MinRetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 50 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// startNode opens a Manager (saved in dir when not "") and its Sync.
func startNode(t *testing.T, addr, name, path string) *node {
	t.Helper()
	m, err := bans.Open(path, bans.Config{MaxRetry: 3, BanTime: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	n := &node{name: name, m: m}
	s, err := New(Options{Client: newClient(t, addr), Prefix: "pc:", Node: name, Manager: m,
		Failed: func(err error) { t.Logf("%s: %v", name, err) },
		Applied: func(b bans.Ban, from string, removed bool) {
			n.mu.Lock()
			defer n.mu.Unlock()
			op := "ban"
			if removed {
				op = "unban"
			}
			n.got = append(n.got, op+" "+b.Prefix.String()+" from "+from)
		}})
	if err != nil {
		t.Fatal(err)
	}
	n.s = s
	s.Start()
	t.Cleanup(func() { n.stop() })
	<-s.Loaded()
	return n
}

func (n *node) stop() {
	if n.s != nil {
		n.s.Close()
		n.s = nil
		_ = n.m.Close()
	}
}

func (n *node) applied() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.got...)
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func banned(n *node, ip string) bool {
	_, ok := n.m.Banned(netip.MustParseAddr(ip), time.Now())
	return ok
}

func TestBansReachEveryNode(t *testing.T) {
	srv := redistest.Start(t)
	a, b := startNode(t, srv.Addr, "a", ""), startNode(t, srv.Addr, "b", "")

	// Strikes stay per node: two on a, two on b ban nothing.
	for _, n := range []*node{a, b} {
		for range 2 {
			if _, ok := n.m.Strike(netip.MustParseAddr("192.0.2.7"), reason.BadJSON, time.Now()); ok {
				t.Fatal("banned under maxretry")
			}
		}
	}
	// The third on a bans, on both.
	ban, ok := a.m.Strike(netip.MustParseAddr("192.0.2.7"), reason.BadJSON, time.Now())
	if !ok {
		t.Fatal("no ban at maxretry")
	}
	waitFor(t, "a's ban enforced on b", func() bool { return banned(b, "192.0.2.7") })
	got := b.m.List(time.Now())
	if len(got) != 1 || got[0].Prefix != ban.Prefix || !got[0].Until.Equal(ban.Until) || got[0].Reason != reason.BadJSON ||
		got[0].Actor != bans.ActorAuto || got[0].Strikes != 3 {
		t.Fatalf("b's copy %+v, want %+v", got, ban)
	}
	if g := b.applied(); len(g) != 1 || g[0] != "ban 192.0.2.7/32 from a" {
		t.Fatalf("b applied %q", g)
	}
	if g := a.applied(); len(g) != 0 {
		t.Fatalf("a applied its own ban: %q", g)
	}

	// A manual ban on b reaches a; lifting it on a lifts it on b.
	if _, err := b.m.Add(netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "scanner", "ops", time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's manual ban on a", func() bool { return banned(a, "198.51.100.9") })
	if removed, err := a.m.Remove(netip.MustParsePrefix("198.51.100.0/24"), "ops", time.Now()); err != nil || !removed {
		t.Fatalf("remove on a: %v %v", removed, err)
	}
	waitFor(t, "the lift on b", func() bool { return !banned(b, "198.51.100.9") })

	// A node that starts loads the set.
	c := startNode(t, srv.Addr, "c", "")
	if !banned(c, "192.0.2.7") || banned(c, "198.51.100.9") {
		t.Fatalf("c started with %+v", c.m.List(time.Now()))
	}
	// Redis holds the ban by prefix with its expiry, and a tombstone of the lifted one.
	rc := newClient(t, srv.Addr)
	ttl, err := rc.PTTL(context.Background(), "pc:ban:192.0.2.7/32").Result()
	if err != nil || ttl <= 0 || ttl > time.Hour {
		t.Fatalf("ban key ttl %v %v", ttl, err)
	}
	if n, _ := rc.Exists(context.Background(), "pc:unban:198.51.100.0/24").Result(); n != 1 {
		t.Fatal("no tombstone of the lifted ban")
	}
}

// A Redis that restarts empty gets the nodes' bans back when they
// reconnect; a node that was away while a ban was lifted lifts its saved
// copy.
func TestReloadAfterRedisRestartAndTombstones(t *testing.T) {
	srv := redistest.Start(t)
	dir := t.TempDir()
	a := startNode(t, srv.Addr, "a", "")
	c := startNode(t, srv.Addr, "c", filepath.Join(dir, "c.db"))
	if _, err := a.m.Add(netip.MustParsePrefix("203.0.113.5/32"), time.Hour, "", "ops", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.m.Add(netip.MustParsePrefix("203.0.113.6/32"), time.Hour, "", "ops", time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both bans on c", func() bool { return banned(c, "203.0.113.5") && banned(c, "203.0.113.6") })

	srv.Restart(t) // empty
	rc := newClient(t, srv.Addr)
	waitFor(t, "the bans written back", func() bool {
		n, _ := rc.Exists(context.Background(), "pc:ban:203.0.113.5/32", "pc:ban:203.0.113.6/32").Result()
		return n == 2
	})

	// c goes away (its state file keeps both bans); one is lifted meanwhile.
	c.stop()
	if _, err := a.m.Remove(netip.MustParsePrefix("203.0.113.6/32"), "ops", time.Now()); err != nil {
		t.Fatal(err)
	}
	// a writes the lift to Redis in the background; c is away until it is there.
	waitFor(t, "the tombstone of the lift", func() bool {
		n, _ := rc.Exists(context.Background(), "pc:unban:203.0.113.6/32").Result()
		return n == 1
	})
	c2 := startNode(t, srv.Addr, "c", filepath.Join(dir, "c.db"))
	if !banned(c2, "203.0.113.5") || banned(c2, "203.0.113.6") {
		t.Fatalf("c restarted with %+v", c2.m.List(time.Now()))
	}
	if n, _ := rc.Exists(context.Background(), "pc:ban:203.0.113.6/32").Result(); n != 0 {
		t.Fatal("the lifted ban was written back")
	}
}

// What another node (or whoever writes to Redis) announces is checked
// like a manual ban: too broad a prefix, a bad note, an unknown reason
// are not applied.
func TestHostileNoticesRefused(t *testing.T) {
	srv := redistest.Start(t)
	a := startNode(t, srv.Addr, "a", "")
	rc := newClient(t, srv.Addr)
	until := time.Now().Add(time.Hour).UnixNano()
	for _, rec := range []record{
		{Prefix: "0.0.0.0/0", Until: until, Reason: "manual", Actor: "x", Node: "evil"},
		{Prefix: "192.0.2.1/32", Until: until, Reason: "manual", Actor: "x", Note: "a\nb", Node: "evil"},
		{Prefix: "192.0.2.2/32", Until: until, Reason: "no_such_reason", Actor: "x", Node: "evil"},
		{Prefix: "192.0.2.3/32", Until: time.Now().Add(-time.Second).UnixNano(), Reason: "manual", Actor: "x", Node: "evil"},
		{Prefix: "192.0.2.5", Until: until, Reason: "manual", Actor: "x", Node: "evil"},    // not a CIDR
		{Prefix: "192.0.2.4/32", Until: until, Reason: "manual", Actor: "x", Node: "evil"}, // the good one
	} {
		body, _ := json.Marshal(notice{Op: "ban", Ban: rec})
		if err := rc.Publish(context.Background(), "pc:bans", body).Err(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the good one", func() bool { return banned(a, "192.0.2.4") })
	if l := a.m.List(time.Now()); len(l) != 1 {
		t.Fatalf("applied %+v", l)
	}
	if g := a.applied(); len(g) != 1 || !strings.HasPrefix(g[0], "ban 192.0.2.4/32 from evil") {
		t.Fatalf("applied %q", g)
	}
}

// An operator who lifts a ban while a load runs, after the load read
// that ban from Redis and before it applied it, still has it lifted: the
// lift is applied again after the load and its tombstone written.
func TestLiftDuringLoadWins(t *testing.T) {
	srv := redistest.Start(t)
	m, err := bans.Open("", bans.Config{MaxRetry: 3, BanTime: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	x, y := netip.MustParsePrefix("192.0.2.10/32"), netip.MustParsePrefix("192.0.2.11/32")
	var lift sync.Once
	s, err := New(Options{Client: newClient(t, srv.Addr), Prefix: "pc:", Node: "a", Manager: m, Reconcile: time.Hour,
		Failed: func(err error) { t.Logf("a: %v", err) },
		Applied: func(b bans.Ban, from string, removed bool) {
			// The load applies x (Redis lists it before y, by end
			// time) with y read already: the operator lifts y now.
			if b.Prefix == x && !removed {
				lift.Do(func() {
					if _, err := m.Remove(y, "ops", time.Now()); err != nil {
						t.Error(err)
					}
				})
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Close)
	<-s.Loaded()

	if _, err := m.Add(y, 2*time.Hour, "", "ops", time.Now()); err != nil {
		t.Fatal(err)
	}
	rc := newClient(t, srv.Addr)
	ctx := context.Background()
	waitFor(t, "y in Redis", func() bool { n, _ := rc.Exists(ctx, "pc:ban:"+y.String()).Result(); return n == 1 })
	// Another node's ban of x, in Redis only (its notice was lost).
	until := time.Now().Add(30 * time.Minute)
	body, _ := json.Marshal(record{Prefix: x.String(), Until: until.UnixNano(), Reason: "manual", Actor: "ops", Node: "b"})
	if err := rc.Set(ctx, "pc:ban:"+x.String(), body, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.ZAdd(ctx, "pc:bans", redis.Z{Score: float64(until.UnixMilli()), Member: x.String()}).Err(); err != nil {
		t.Fatal(err)
	}

	// The subscription's connection is lost: the resubscription loads.
	if err := rc.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the tombstone of y", func() bool { n, _ := rc.Exists(ctx, "pc:unban:"+y.String()).Result(); return n == 1 })
	if _, ok := m.Banned(netip.MustParseAddr("192.0.2.11"), time.Now()); ok {
		t.Fatalf("the lift of y was undone by the load: %+v", m.List(time.Now()))
	}
	if _, ok := m.Banned(netip.MustParseAddr("192.0.2.10"), time.Now()); !ok {
		t.Fatal("x was not loaded")
	}
	if n, _ := rc.Exists(ctx, "pc:ban:"+y.String()).Result(); n != 0 {
		t.Fatal("y is still banned in Redis")
	}
}

// A record's prefix is keyed as the Manager keys it, so that a load
// matches it with the ban this node holds.
func TestRecordPrefixNormalized(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7/24":         "192.0.2.0/24",
		"::ffff:192.0.2.7/128": "192.0.2.7/32",
		"2001:db8::1/64":       "2001:db8::/64",
	} {
		b, err := record{Prefix: in, Reason: "manual"}.ban()
		if err != nil || b.Prefix.String() != want {
			t.Errorf("%s: %v %v, want %s", in, b.Prefix, err, want)
		}
	}
	if _, err := (record{Prefix: "192.0.2.7", Reason: "manual"}).ban(); err == nil {
		t.Error("an address without a length was taken as a prefix")
	}
}
