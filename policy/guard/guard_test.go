package guard

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/bans"
	"github.com/portcullis-gw/portcullis/policy/blocklist"
	"github.com/portcullis-gw/portcullis/policy/ratelimit"
)

// recorder is an audit.Durable that keeps what it is given; durable lists
// the events given through EmitDurable, which fails with fail when set.
type recorder struct {
	mu      sync.Mutex
	ev      []audit.Event
	durable []audit.Event
	fail    error
}

func (r *recorder) Emit(e audit.Event) { r.mu.Lock(); r.ev = append(r.ev, e); r.mu.Unlock() }

func (r *recorder) EmitDurable(_ context.Context, e audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ev = append(r.ev, e)
	if r.fail != nil {
		return r.fail
	}
	r.durable = append(r.durable, e)
	return nil
}

// plainSink is an audit.Sink that cannot wait for the disk.
type plainSink struct{ n int }

func (s *plainSink) Emit(audit.Event) { s.n++ }

func (r *recorder) events(name audit.Kind) []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []audit.Event
	for _, e := range r.ev {
		if e.Event == name {
			out = append(out, e)
		}
	}
	return out
}

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func newGuard(t *testing.T, dryRun bool) (*Guard, *recorder, *[]netip.Prefix) {
	t.Helper()
	lists, err := blocklist.NewSet([]string{"198.51.100.0/24"}, []string{"192.0.2.1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	table, err := ratelimit.NewTable(ratelimit.Config{
		ConnRate:          ratelimit.Rate{PerSecond: 1, Burst: 2},
		HandshakeFailRate: ratelimit.Rate{PerSecond: 0.1, Burst: 1},
		PerIPConnections:  2,
	})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := bans.Open("", bans.Config{FindTime: 10 * time.Minute, MaxRetry: 5, BanTime: 10 * time.Minute,
		Factor: 2, MaxTime: 24 * time.Hour, DryRun: dryRun, Allowed: lists.Allowed}, t0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mgr.Close() })
	rec := &recorder{}
	var closed []netip.Prefix
	g, err := New(Options{Lists: lists, Limits: table, Bans: mgr, Audit: rec,
		Disconnect: func(p netip.Prefix) { closed = append(closed, p) }})
	if err != nil {
		t.Fatal(err)
	}
	return g, rec, &closed
}

func TestAdmit(t *testing.T) {
	g, _, _ := newGuard(t, false)
	a := netip.MustParseAddr("203.0.113.5")
	for i, want := range []reason.Reason{reason.None, reason.None, reason.PerIPConnections} {
		if r, _, _ := g.Admit(a, true, t0); r != want {
			t.Fatalf("attempt %d: %v, want %v", i, r, want)
		}
	}
	g.Release(a)
	if r, retry, _ := g.Admit(a, true, t0); r != reason.ConnRate || retry <= 0 {
		t.Fatalf("over the burst: %v retry %v, want conn_rate with a Retry-After", r, retry)
	}
	if r, _, _ := g.Admit(a, false, t0); r != reason.None {
		t.Fatalf("unlimited (trusted proxy) admission: %v", r)
	}
	if r, _, _ := g.Admit(netip.MustParseAddr("198.51.100.7"), true, t0); r != reason.Blocked {
		t.Fatalf("blocked address: %v", r)
	}
	allowed := netip.MustParseAddr("192.0.2.1")
	for i := 0; i < 10; i++ {
		if r, _, _ := g.Admit(allowed, true, t0); r != reason.None {
			t.Fatalf("allow-listed address limited: %v", r)
		}
	}
	if got := g.Counted(netip.MustParseAddr("2001:db8:1:2:3::9")).String(); got != "2001:db8:1:2::/64" {
		t.Fatalf("counted prefix %s", got)
	}
}

func TestStrikesBanAndDisconnect(t *testing.T) {
	g, rec, closed := newGuard(t, false)
	a := netip.MustParseAddr("203.0.113.9")
	for i := 0; i < 5; i++ {
		g.Strike(a, reason.TokenUnknown, t0.Add(time.Duration(i)*time.Second))
	}
	if r, _, _ := g.Admit(a, true, t0.Add(time.Minute)); r != reason.Banned {
		t.Fatalf("after 5 strikes: %v, want banned", r)
	}
	bs := rec.events(audit.KindBan)
	if len(bs) != 1 || bs[0].Severity != audit.Critical || bs[0].CountedPrefix != netip.MustParsePrefix("203.0.113.9/32") || bs[0].Actor != bans.ActorAuto ||
		bs[0].IP != a || bs[0].Reason != reason.TokenUnknown || bs[0].Strikes != 5 || bs[0].Count != 0 {
		t.Fatalf("ban events %+v: want one ban of 203.0.113.9 for token_unknown, 5 strikes and no count", bs)
	}
	if len(*closed) != 1 || (*closed)[0].String() != "203.0.113.9/32" {
		t.Fatalf("disconnected %v", *closed)
	}
	ok, err := g.Unban(context.Background(), netip.MustParsePrefix("203.0.113.9/32"), "test", t0.Add(2*time.Minute))
	if !ok || err != nil {
		t.Fatalf("unban: %v %v", ok, err)
	}
	if u := rec.events(audit.KindUnban); len(u) != 1 || u[0].Actor != "test" || u[0].IP != a || u[0].Reason != reason.Manual ||
		len(rec.durable) != 1 || rec.durable[0].Event != audit.KindUnban {
		t.Fatalf("unban events %+v (durable %+v)", u, rec.durable)
	}
	if r, _, _ := g.Admit(a, true, t0.Add(3*time.Minute)); r == reason.Banned {
		t.Fatal("still banned after unban")
	}
	// The allow-listed address is never struck.
	for i := 0; i < 20; i++ {
		g.Strike(netip.MustParseAddr("192.0.2.1"), reason.TokenReplayed, t0)
	}
	if len(rec.events(audit.KindBan)) != 1 {
		t.Fatal("allow-listed address banned")
	}
}

func TestHandshakeFailuresRefuseAtAccept(t *testing.T) {
	g, _, _ := newGuard(t, false)
	a := netip.MustParseAddr("203.0.113.20")
	g.Strike(a, reason.BadOrigin, t0)
	g.Strike(a, reason.BadOrigin, t0)
	if r, _, _ := g.Admit(a, true, t0); r != reason.HandshakeFailRate {
		t.Fatalf("after failed handshakes: %v, want handshake_fail_rate", r)
	}
}

func TestDryRunAuditsButDoesNotEnforce(t *testing.T) {
	g, rec, closed := newGuard(t, true)
	a := netip.MustParseAddr("203.0.113.30")
	for i := 0; i < 5; i++ {
		g.Strike(a, reason.TokenUnknown, t0)
	}
	if r, _, _ := g.Admit(a, true, t0); r == reason.Banned {
		t.Fatal("dry run enforced a ban")
	}
	bs := rec.events(audit.KindBan)
	if len(bs) != 1 || len(*closed) != 0 {
		t.Fatalf("dry run: %d ban events, %d disconnects", len(bs), len(*closed))
	}
	if want := "dry run, not enforced"; len(bs[0].Detail) < len(want) || bs[0].Detail[:len(want)] != want {
		t.Fatalf("detail %q", bs[0].Detail)
	}
}

func TestManualBanOfAllowListed(t *testing.T) {
	g, rec, _ := newGuard(t, false)
	if _, err := g.Ban(context.Background(), netip.MustParsePrefix("192.0.2.1/32"), time.Hour, "x", "test", t0); err == nil {
		t.Fatal("allow-listed address banned manually")
	}
	b, err := g.Ban(context.Background(), netip.MustParsePrefix("203.0.113.0/24"), time.Hour, "x", "test", t0)
	if err != nil || b.Until != t0.Add(time.Hour) {
		t.Fatalf("manual ban: %+v %v", b, err)
	}
	if len(rec.durable) != 1 || rec.durable[0].Event != audit.KindBan || rec.durable[0].IP.IsValid() {
		t.Fatalf("a range's manual ban: durable events %+v, want one ban without ip", rec.durable)
	}
	if r, _, p := g.Admit(netip.MustParseAddr("203.0.113.77"), true, t0); r != reason.Banned || p.String() != "203.0.113.0/24" {
		t.Fatalf("address inside a banned CIDR: %v under %s", r, p)
	}
}

func TestKernelDropEngagesUnderFloodAndReleases(t *testing.T) {
	lists, _ := blocklist.NewSet(nil, nil, nil)
	table, _ := ratelimit.NewTable(ratelimit.Config{ConnRate: ratelimit.Rate{PerSecond: 100, Burst: 100}})
	mgr, err := bans.Open("", bans.Config{}, t0)
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Close()
	rec := &recorder{}
	var sets [][]netip.Prefix
	g, _ := New(Options{Lists: lists, Limits: table, Bans: mgr, Audit: rec, KernelDropRate: 50,
		KernelDrop: func(ps []netip.Prefix) { sets = append(sets, ps) }})
	p := netip.MustParsePrefix("203.0.113.0/24")
	if _, err := g.Ban(context.Background(), p, time.Hour, "flood", "test", t0); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("203.0.113.9")
	// 49 refusals a second, twice: below the rate.
	for s := 0; s < 2; s++ {
		for i := 0; i < 49; i++ {
			g.Admit(a, true, t0.Add(time.Duration(s)*time.Second+time.Duration(i)*time.Millisecond))
		}
	}
	if len(sets) != 0 {
		t.Fatalf("engaged below the rate: %v", sets)
	}
	for i := 0; i < 50; i++ {
		g.Admit(a, true, t0.Add(3*time.Second+time.Duration(i)*time.Millisecond))
	}
	if len(sets) != 1 || len(sets[0]) != 1 || sets[0][0] != p {
		t.Fatalf("kernel drop sets %v, want [[%s]]", sets, p)
	}
	if ev := rec.events(audit.KindKernelDrop); len(ev) != 1 || ev[0].CountedPrefix != p || ev[0].Count != 50 {
		t.Fatalf("kernel_drop events %+v", ev)
	}
	for i := 0; i < 100; i++ {
		g.Admit(a, true, t0.Add(3*time.Second))
	}
	if len(sets) != 1 {
		t.Fatal("engaged twice")
	}
	if _, err := g.Unban(context.Background(), p, "test", t0.Add(4*time.Second)); err != nil {
		t.Fatal(err)
	}
	if len(sets) != 2 || len(sets[1]) != 0 {
		t.Fatalf("after unban: %v, want an empty set", sets)
	}
}

func TestKernelDropSparesRangesWithAllowListed(t *testing.T) {
	lists, _ := blocklist.NewSet(nil, []string{"203.0.113.1"}, nil)
	table, _ := ratelimit.NewTable(ratelimit.Config{})
	mgr, _ := bans.Open("", bans.Config{Allowed: lists.Allowed}, t0)
	defer mgr.Close()
	var sets [][]netip.Prefix
	g, _ := New(Options{Lists: lists, Limits: table, Bans: mgr, KernelDropRate: 5,
		KernelDrop: func(ps []netip.Prefix) { sets = append(sets, ps) }})
	if _, err := g.Ban(context.Background(), netip.MustParsePrefix("203.0.113.0/24"), time.Hour, "x", "test", t0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if r, _, _ := g.Admit(netip.MustParseAddr("203.0.113.9"), true, t0); r != reason.Banned {
			t.Fatalf("refusal %d: %v", i, r)
		}
	}
	if len(sets) != 0 {
		t.Fatalf("a range holding an allow-listed address went to the kernel: %v", sets)
	}
}

// TestManualBanLine: a manual ban of one address is a durable line with
// ip, counted_prefix, reason manual, the operator's note in detail and no
// strikes; its kernel_drop and expiry lines name the address too.
func TestManualBanLine(t *testing.T) {
	g, rec, closed := newGuard(t, false)
	p := netip.MustParsePrefix("203.0.113.7/32")
	b, err := g.Ban(context.Background(), p, time.Minute, "abuse report #12", "alice via api@127.0.0.1", t0)
	if err != nil || b.Reason != reason.Manual || b.Note != "abuse report #12" {
		t.Fatalf("Ban = %+v, %v", b, err)
	}
	if len(rec.durable) != 1 {
		t.Fatalf("durable events %+v, want the ban", rec.durable)
	}
	e := rec.durable[0]
	if e.Event != audit.KindBan || e.IP != p.Addr() || e.CountedPrefix != p || e.Reason != reason.Manual ||
		e.Strikes != 0 || e.Count != 0 || e.Actor != "alice via api@127.0.0.1" || !strings.HasPrefix(e.Detail, `"abuse report #12"; banned for 1m0s`) {
		t.Fatalf("ban line %+v", e)
	}
	if len(*closed) != 1 || (*closed)[0] != p {
		t.Fatalf("disconnected %v", *closed)
	}
	g.Sweep(t0.Add(2 * time.Minute))
	if u := rec.events(audit.KindUnban); len(u) != 1 || u[0].IP != p.Addr() || u[0].Actor != "expiry" || u[0].Reason != reason.Manual {
		t.Fatalf("expiry lines %+v", u)
	}
}

// TestManualBanNotDurable: when the line cannot be made durable the ban
// (or unban) still takes effect, and the error says the trail failed, so
// the admin API answers 503 audit_unavailable rather than success.
func TestManualBanNotDurable(t *testing.T) {
	g, rec, _ := newGuard(t, false)
	rec.fail = errors.Join(audit.ErrNotDurable, errors.New("disk full"))
	p := netip.MustParsePrefix("203.0.113.7/32")
	if _, err := g.Ban(context.Background(), p, time.Hour, "", "alice", t0); !errors.Is(err, audit.ErrNotDurable) {
		t.Fatalf("Ban with a failing trail: %v, want ErrNotDurable", err)
	}
	if r, _, _ := g.Admit(p.Addr(), true, t0); r != reason.Banned {
		t.Fatalf("the ban is not in force: %v", r)
	}
	if ok, err := g.Unban(context.Background(), p, "alice", t0); !ok || !errors.Is(err, audit.ErrNotDurable) {
		t.Fatalf("Unban with a failing trail: %v %v, want lifted and ErrNotDurable", ok, err)
	}

	// A sink that cannot wait for the disk at all is no durable trail.
	lists, _ := blocklist.NewSet(nil, nil, nil)
	table, _ := ratelimit.NewTable(ratelimit.Config{})
	mgr, _ := bans.Open("", bans.Config{}, t0)
	defer mgr.Close()
	sink := &plainSink{}
	g2, _ := New(Options{Lists: lists, Limits: table, Bans: mgr, Audit: sink})
	if _, err := g2.Ban(context.Background(), p, time.Hour, "", "alice", t0); !errors.Is(err, audit.ErrNotDurable) || sink.n != 1 {
		t.Fatalf("Ban through a plain sink: %v (%d events), want ErrNotDurable and the event emitted", err, sink.n)
	}
}
