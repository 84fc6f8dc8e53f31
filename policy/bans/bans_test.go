package bans

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// t0 is the fake clock's origin; tests pass t0.Add(offset) as now.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustOpen(t testing.TB, path string, cfg Config, now time.Time) *Manager {
	t.Helper()
	m, err := Open(path, cfg, now)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

var (
	addrA = netip.MustParseAddr("192.0.2.1")
	addrB = netip.MustParseAddr("192.0.2.2")
	addr6 = netip.MustParseAddr("2001:db8:1:2::10")
)

type step struct {
	at   time.Duration // since t0
	addr netip.Addr    // zero: addrA
	r    reason.Reason // zero: ConnRate
}

func TestStrikeTable(t *testing.T) {
	min := time.Minute
	cases := []struct {
		name    string
		cfg     Config
		steps   []step
		banAt   int           // index of the step that bans, -1 none
		wantDur time.Duration // length of that ban
	}{
		{
			name:  "5 strikes in 10m ban for 10m",
			steps: []step{{at: 0}, {at: 1 * min}, {at: 2 * min}, {at: 3 * min}, {at: 4 * min}},
			banAt: 4, wantDur: 10 * min,
		},
		{
			name:  "4 strikes over 11m do not ban",
			steps: []step{{at: 0}, {at: 4 * min}, {at: 8 * min}, {at: 11 * min}},
			banAt: -1,
		},
		{
			name:  "sliding window: 5 over 11m do not, the 6th within 10m does",
			steps: []step{{at: 0}, {at: 3 * min}, {at: 6 * min}, {at: 9 * min}, {at: 11 * min}, {at: 12 * min}},
			banAt: 5, wantDur: 10 * min,
		},
		{
			name:  "a strike exactly findtime old has left the window",
			steps: []step{{at: 0}, {at: 1 * min}, {at: 2 * min}, {at: 3 * min}, {at: 10 * min}},
			banAt: -1,
		},
		{
			name:  "weights: token_theft_suspected bans at once",
			steps: []step{{r: reason.TokenTheft}},
			banAt: 0, wantDur: 10 * min,
		},
		{
			name:  "weights: token_replayed (a reconnect) weighs 1",
			steps: []step{{r: reason.TokenReplayed}, {at: min, r: reason.TokenReplayed}, {at: 2 * min, r: reason.TokenReplayed}, {at: 3 * min, r: reason.ConnRate}, {at: 4 * min, r: reason.TokenReplayed}},
			banAt: 4, wantDur: 10 * min,
		},
		{
			name:  "weights: schema abuse (2) counts double",
			steps: []step{{r: reason.SchemaViolation}, {r: reason.SchemaViolation}, {r: reason.TooDeep}},
			banAt: 2, wantDur: 10 * min,
		},
		{
			name: "weight 0 reasons never ban",
			steps: []step{{r: reason.ClientClosed}, {r: reason.SlowConsumer}, {r: reason.PingTimeout},
				{r: reason.ShuttingDown}, {r: reason.ClientClosed}, {r: reason.GlobalConnections}},
			banAt: -1,
		},
		{
			name:  "configured weight overrides the default",
			cfg:   Config{Weights: map[reason.Reason]int{reason.ConnRate: 0, reason.ClientClosed: 5}},
			steps: []step{{}, {}, {}, {}, {}, {r: reason.ClientClosed}},
			banAt: 5, wantDur: 10 * min,
		},
		{
			name:  "different addresses count separately",
			steps: []step{{}, {addr: addrB}, {}, {addr: addrB}, {}, {addr: addrB}, {}, {addr: addrB}},
			banAt: -1,
		},
		{
			name: "one IPv6 /64 counts as one client",
			steps: []step{
				{addr: netip.MustParseAddr("2001:db8:1:2::1")}, {addr: netip.MustParseAddr("2001:db8:1:2::2")},
				{addr: netip.MustParseAddr("2001:db8:1:2:ffff::3")}, {addr: netip.MustParseAddr("2001:db8:1:2::4")},
				{addr: netip.MustParseAddr("2001:db8:1:2::5")},
			},
			banAt: 4, wantDur: 10 * min,
		},
		{
			name:  "::ffff: form counts as IPv4",
			steps: []step{{}, {addr: netip.MustParseAddr("::ffff:192.0.2.1")}, {}, {addr: netip.MustParseAddr("::ffff:192.0.2.1")}, {}},
			banAt: 4, wantDur: 10 * min,
		},
		{
			name:  "custom maxretry and bantime",
			cfg:   Config{MaxRetry: 2, BanTime: time.Hour},
			steps: []step{{}, {at: time.Second}},
			banAt: 1, wantDur: time.Hour,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := mustOpen(t, "", tc.cfg, t0)
			got := -1
			for i, s := range tc.steps {
				a := s.addr
				if !a.IsValid() {
					a = addrA
				}
				r := s.r
				if r == reason.None {
					r = reason.ConnRate
				}
				now := t0.Add(s.at)
				b, banned := m.Strike(a, r, now)
				if !banned {
					continue
				}
				if got >= 0 {
					t.Fatalf("step %d banned again (first at %d)", i, got)
				}
				got = i
				if d := b.Until.Sub(now); d != tc.wantDur {
					t.Errorf("ban length %v, want %v", d, tc.wantDur)
				}
				if b.Actor != ActorAuto || b.Repeat != 0 || b.Reason != r || b.Note != "" || !b.Created.Equal(now) {
					t.Errorf("ban %+v: want actor auto, repeat 0, reason %s", b, r)
				}
				if _, ok := m.Banned(a, now); !ok {
					t.Errorf("Banned(%s) false right after the ban", a)
				}
			}
			if got != tc.banAt {
				t.Fatalf("banned at step %d, want %d", got, tc.banAt)
			}
		})
	}
}

// strikeUntilBan strikes addr with weight-1 reasons at now until it is
// banned, and returns the ban.
func strikeUntilBan(t *testing.T, m *Manager, a netip.Addr, now time.Time) Ban {
	t.Helper()
	for i := 0; i < 100; i++ {
		if b, ok := m.Strike(a, reason.ConnRate, now); ok {
			return b
		}
	}
	t.Fatalf("%s not banned after 100 strikes", a)
	return Ban{}
}

func TestRepeatBansGrow(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want []time.Duration
	}{
		{"defaults double", Config{}, []time.Duration{10 * time.Minute, 20 * time.Minute, 40 * time.Minute, 80 * time.Minute}},
		{"maxtime caps", Config{MaxTime: 30 * time.Minute}, []time.Duration{10 * time.Minute, 20 * time.Minute, 30 * time.Minute, 30 * time.Minute}},
		{"factor 1 never grows", Config{Factor: 1}, []time.Duration{10 * time.Minute, 10 * time.Minute, 10 * time.Minute}},
		{"factor 1.5", Config{Factor: 1.5}, []time.Duration{10 * time.Minute, 15 * time.Minute, 22*time.Minute + 30*time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := mustOpen(t, "", tc.cfg, t0)
			now := t0
			for i, want := range tc.want {
				b := strikeUntilBan(t, m, addrA, now)
				if got := b.Until.Sub(now); got != want || b.Repeat != i {
					t.Fatalf("ban %d: %v repeat %d, want %v repeat %d", i, got, b.Repeat, want, i)
				}
				now = b.Until // the ban has just ended
				if _, ok := m.Banned(addrA, now); ok {
					t.Fatalf("ban %d still enforced at its Until", i)
				}
			}
		})
	}
}

func TestHugeRepeatIsCapped(t *testing.T) {
	m := mustOpen(t, "", Config{Factor: 1e6}, t0)
	if d := m.banDuration(1000); d != DefaultMaxTime {
		t.Fatalf("banDuration(1000) = %v, want %v", d, DefaultMaxTime)
	}
}

func TestRepeatHistoryIsForgotten(t *testing.T) {
	m := mustOpen(t, "", Config{RepeatTime: time.Hour}, t0)
	b := strikeUntilBan(t, m, addrA, t0)
	// Within the repeat time after the ban: the next ban doubles.
	now := b.Until.Add(59 * time.Minute)
	b2 := strikeUntilBan(t, m, addrA, now)
	if d := b2.Until.Sub(now); d != 20*time.Minute {
		t.Fatalf("second ban %v, want 20m", d)
	}
	// An hour after the second ban ended, the history is gone.
	now = b2.Until.Add(time.Hour)
	if exp := m.Sweep(now); len(exp) != 1 || m.Stats().History != 0 {
		t.Fatalf("Sweep: expired %v, history %d; want 1 ban and no history", exp, m.Stats().History)
	}
	b3 := strikeUntilBan(t, m, addrA, now)
	if d := b3.Until.Sub(now); d != 10*time.Minute || b3.Repeat != 0 {
		t.Fatalf("ban after the history was forgotten: %v repeat %d, want 10m repeat 0", d, b3.Repeat)
	}
}

func TestBannedAddressIsNotCounted(t *testing.T) {
	m := mustOpen(t, "", Config{}, t0)
	b := strikeUntilBan(t, m, addrA, t0)
	for i := 0; i < 20; i++ {
		if _, ok := m.Strike(addrA, reason.TokenReplayed, t0.Add(time.Minute)); ok {
			t.Fatal("a banned address was banned again")
		}
	}
	if n := m.Stats().StrikeEntries; n != 0 {
		t.Fatalf("%d strike entries during the ban, want 0", n)
	}
	// After the ban it starts from zero strikes: four do not ban.
	for i := 0; i < 4; i++ {
		if _, ok := m.Strike(addrA, reason.ConnRate, b.Until); ok {
			t.Fatalf("banned after %d strikes following a ban", i+1)
		}
	}
}

func TestAllowListed(t *testing.T) {
	allowNet := netip.MustParsePrefix("192.0.2.0/28")
	cfg := Config{Allowed: func(a netip.Addr) bool { return allowNet.Contains(a) }}
	m := mustOpen(t, "", cfg, t0)
	for i := 0; i < 100; i++ {
		if _, ok := m.Strike(addrA, reason.TokenReplayed, t0); ok {
			t.Fatal("allow-listed address banned")
		}
		if _, ok := m.Strike(netip.MustParseAddr("::ffff:192.0.2.1"), reason.TokenReplayed, t0); ok {
			t.Fatal("allow-listed address banned in its ::ffff: form")
		}
	}
	st := m.Stats()
	if st.AllowedStrikes != 200 || st.Strikes != 0 || st.StrikeEntries != 0 {
		t.Fatalf("stats %+v: want 200 allowed strikes and nothing counted", st)
	}
	if _, err := m.Add(netip.PrefixFrom(addrA, 32), time.Hour, "x", "admin", t0); !errors.Is(err, ErrAllowed) {
		t.Fatalf("Add(allowed) error %v, want ErrAllowed", err)
	}
	// A CIDR ban around an allow-listed address never refuses it.
	if _, err := m.Add(netip.MustParsePrefix("192.0.2.0/24"), time.Hour, "x", "admin", t0); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Banned(addrA, t0); ok {
		t.Fatal("allow-listed address inside a banned CIDR reported banned")
	}
	if _, ok := m.Banned(netip.MustParseAddr("192.0.2.200"), t0); !ok {
		t.Fatal("address inside the banned CIDR and outside the allow-list not banned")
	}
}

func TestDryRun(t *testing.T) {
	m := mustOpen(t, "", Config{DryRun: true}, t0)
	if !m.DryRun() {
		t.Fatal("DryRun() false")
	}
	b := strikeUntilBan(t, m, addrA, t0)
	if !b.DryRun || b.Until.Sub(t0) != 10*time.Minute {
		t.Fatalf("would-be ban %+v: want DryRun and 10m", b)
	}
	if _, ok := m.Banned(addrA, t0); ok {
		t.Fatal("dry run enforced a ban")
	}
	// During the would-be ban, strikes are not counted (as if refused).
	for i := 0; i < 10; i++ {
		if _, ok := m.Strike(addrA, reason.ConnRate, t0.Add(time.Minute)); ok {
			t.Fatal("dry run reported a second ban during the first")
		}
	}
	if l := m.List(t0); len(l) != 1 || !l[0].DryRun {
		t.Fatalf("List = %+v, want the dry-run ban", l)
	}
	st := m.Stats()
	if st.Bans != 0 || st.DryRunBans != 1 || st.BansCreated != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The would-be repeat grows like a real one.
	b2 := strikeUntilBan(t, m, addrA, b.Until)
	if b2.Until.Sub(b.Until) != 20*time.Minute || !b2.DryRun {
		t.Fatalf("second would-be ban %+v, want 20m", b2)
	}
	// Manual bans are enforced even in dry run.
	if _, err := m.Add(netip.PrefixFrom(addrB, 32), time.Hour, "", "admin", t0); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Banned(addrB, t0); !ok {
		t.Fatal("manual ban not enforced in dry run")
	}
}

func TestExpiry(t *testing.T) {
	m := mustOpen(t, "", Config{}, t0)
	b := strikeUntilBan(t, m, addrA, t0)
	if _, ok := m.Banned(addrA, b.Until.Add(-time.Nanosecond)); !ok {
		t.Fatal("not banned just before Until")
	}
	if r := b.Remaining(t0.Add(4 * time.Minute)); r != 6*time.Minute {
		t.Fatalf("Remaining = %v, want 6m", r)
	}
	if _, ok := m.Banned(addrA, b.Until); ok {
		t.Fatal("banned at Until")
	}
	if l := m.List(b.Until); len(l) != 0 {
		t.Fatalf("List at Until = %v, want none", l)
	}
	if exp := m.Sweep(b.Until.Add(-time.Second)); len(exp) != 0 {
		t.Fatalf("Sweep before Until expired %v", exp)
	}
	exp := m.Sweep(b.Until)
	if len(exp) != 1 || exp[0].Prefix != netip.MustParsePrefix("192.0.2.1/32") {
		t.Fatalf("Sweep = %v, want the ban of 192.0.2.1/32", exp)
	}
	if st := m.Stats(); st.Bans != 0 || st.History != 1 {
		t.Fatalf("stats after sweep %+v: want no ban, history kept", st)
	}
}

func TestManualBans(t *testing.T) {
	m := mustOpen(t, "", Config{}, t0)
	for _, s := range []string{"198.51.100.0/24", "2001:db8::/48", "203.0.113.9", "2001:db8:ffff::1", "2001:db8:aaaa::5/128"} {
		p, err := ParsePrefix(s, 0)
		if err != nil {
			t.Fatal(err)
		}
		b, err := m.Add(p, time.Hour, "abuse report #12", "alice", t0)
		if err != nil {
			t.Fatalf("Add(%s): %v", s, err)
		}
		if b.Actor != "alice" || b.Reason != reason.Manual || b.Note != "abuse report #12" || b.Until != t0.Add(time.Hour) {
			t.Fatalf("Add(%s) = %+v", s, b)
		}
	}
	cases := []struct {
		addr string
		want bool
	}{
		{"198.51.100.0", true},
		{"198.51.100.77", true},
		{"198.51.100.255", true},
		{"::ffff:198.51.100.9", true},
		{"198.51.101.1", false},
		{"198.51.99.255", false},
		{"2001:db8::1", true},
		{"2001:db8:0:ffff::1", true},
		{"2001:db8:0:ffff:ffff:ffff:ffff:ffff", true},
		{"2001:db8:1::1", false},
		{"203.0.113.9", true},
		{"203.0.113.10", false},
		{"2001:db8:ffff::abcd", true}, // same /64 as the banned address
		{"2001:db8:ffff:1::1", false},
		{"2001:db8:aaaa::5", true},
		{"2001:db8:aaaa::6", false}, // only the /128
		{"fe80::1%eth0", false},
	}
	for _, c := range cases {
		if _, got := m.Banned(netip.MustParseAddr(c.addr), t0.Add(time.Minute)); got != c.want {
			t.Errorf("Banned(%s) = %v, want %v", c.addr, got, c.want)
		}
	}
	if _, ok := m.Banned(netip.MustParseAddr("198.51.100.77"), t0.Add(time.Hour)); ok {
		t.Error("CIDR ban still enforced at its end")
	}
	if l := m.List(t0); len(l) != 5 {
		t.Fatalf("List has %d bans, want 5", len(l))
	}
}

func TestAddReplacesAndDefaults(t *testing.T) {
	m := mustOpen(t, "", Config{}, t0)
	p := netip.MustParsePrefix("192.0.2.1/32")
	b, err := m.Add(p, 0, "", "bob", t0)
	if err != nil {
		t.Fatal(err)
	}
	if b.Until != t0.Add(DefaultBanTime) || b.Reason != reason.Manual || b.Note != "" {
		t.Fatalf("Add with defaults = %+v", b)
	}
	// Shorten it: the newer ban wins.
	if _, err := m.Add(p, time.Minute, "", "bob", t0); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Banned(addrA, t0.Add(2*time.Minute)); ok {
		t.Fatal("shortened ban still enforced")
	}
	if exp := m.Sweep(t0.Add(time.Minute)); len(exp) != 1 || exp[0].Until != t0.Add(time.Minute) {
		t.Fatalf("Sweep at the shortened end = %v, want the 1m ban", exp)
	}
	// Lengthen a ban: Sweep at the old end leaves it alone.
	if _, err := m.Add(p, time.Minute, "", "bob", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Add(p, time.Hour, "", "bob", t0); err != nil {
		t.Fatal(err)
	}
	if exp := m.Sweep(t0.Add(2 * time.Minute)); len(exp) != 0 {
		t.Fatalf("Sweep expired a lengthened ban: %v", exp)
	}
	if _, ok := m.Banned(addrA, t0.Add(2*time.Minute)); !ok {
		t.Fatal("lengthened ban not enforced")
	}
	// Many manual bans of client keys.
	for i := range 100 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i)})
		if _, err := m.Add(netip.PrefixFrom(a, 32), time.Hour, "", "bob", t0); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i)})
		if _, ok := m.Banned(a, t0); !ok {
			t.Fatalf("%s not banned", a)
		}
	}
}

func TestAddRefuses(t *testing.T) {
	m := mustOpen(t, "", Config{}, t0)
	p := netip.MustParsePrefix("192.0.2.0/24")
	cases := []struct {
		name        string
		p           netip.Prefix
		d           time.Duration
		why, actor  string
		errContains string
	}{
		{"no actor", p, time.Hour, "", "", "actor is required"},
		{"invalid prefix", netip.Prefix{}, time.Hour, "", "a", "invalid prefix"},
		{"negative duration", p, -time.Hour, "", "a", "negative duration"},
		{"too broad v4", netip.MustParsePrefix("10.0.0.0/7"), time.Hour, "", "a", "too broad"},
		{"too broad v6", netip.MustParsePrefix("2001::/15"), time.Hour, "", "a", "too broad"},
		{"control char in reason", p, time.Hour, "a\nb", "a", "control character"},
		{"control char in actor", p, time.Hour, "", "a\x1b[31m", "control character"},
		{"long reason", p, time.Hour, strings.Repeat("x", MaxTextLen+1), "a", "more than"},
		{"bad utf8", p, time.Hour, "\xff", "a", "not UTF-8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := m.Add(c.p, c.d, c.why, c.actor, t0)
			if err == nil || !strings.Contains(err.Error(), c.errContains) {
				t.Fatalf("error %v, want one containing %q", err, c.errContains)
			}
		})
	}
	if l := m.List(t0); len(l) != 0 {
		t.Fatalf("refused bans listed: %v", l)
	}
}

func TestRemove(t *testing.T) {
	m := mustOpen(t, "", Config{}, t0)
	b := strikeUntilBan(t, m, addrA, t0)
	if _, err := m.Remove(b.Prefix, "", t0); err == nil {
		t.Fatal("Remove without actor succeeded")
	}
	ok, err := m.Remove(b.Prefix, "carol", t0.Add(time.Minute))
	if err != nil || !ok {
		t.Fatalf("Remove = %v, %v; want true, nil", ok, err)
	}
	if _, banned := m.Banned(addrA, t0.Add(time.Minute)); banned {
		t.Fatal("still banned after Remove")
	}
	if ok, err := m.Remove(b.Prefix, "carol", t0); ok || err != nil {
		t.Fatalf("second Remove = %v, %v; want false, nil", ok, err)
	}

	// Remove clears the strikes: 4 strikes, remove, 1 more does not ban.
	for i := 0; i < 4; i++ {
		m.Strike(addrB, reason.ConnRate, t0)
	}
	if _, err := m.Remove(netip.PrefixFrom(addrB, 32), "carol", t0); err != nil {
		t.Fatal(err)
	}
	if _, banned := m.Strike(addrB, reason.ConnRate, t0); banned {
		t.Fatal("strikes survived Remove")
	}

	// Remove of a CIDR clears the strikes inside it; repeat history is kept.
	for i := 0; i < 4; i++ {
		m.Strike(addr6, reason.ConnRate, t0)
	}
	if _, err := m.Remove(netip.MustParsePrefix("2001:db8::/32"), "carol", t0); err != nil {
		t.Fatal(err)
	}
	if _, banned := m.Strike(addr6, reason.ConnRate, t0); banned {
		t.Fatal("strikes inside a removed CIDR survived")
	}
	b2 := strikeUntilBan(t, m, addrA, t0.Add(time.Hour))
	if b2.Repeat != 1 {
		t.Fatalf("ban after a removed ban has repeat %d, want 1", b2.Repeat)
	}

	// Removing a CIDR ban lifts it.
	cidr := netip.MustParsePrefix("198.51.100.0/24")
	if _, err := m.Add(cidr, time.Hour, "", "carol", t0); err != nil {
		t.Fatal(err)
	}
	if ok, err := m.Remove(netip.MustParsePrefix("198.51.100.5/24"), "carol", t0); !ok || err != nil {
		t.Fatalf("Remove(CIDR, unmasked) = %v, %v", ok, err)
	}
	if _, banned := m.Banned(netip.MustParseAddr("198.51.100.5"), t0); banned {
		t.Fatal("CIDR still banned after Remove")
	}
}

func TestListSorted(t *testing.T) {
	m := mustOpen(t, "", Config{}, t0)
	for i, d := range []time.Duration{3 * time.Hour, time.Hour, 2 * time.Hour} {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
		if _, err := m.Add(netip.PrefixFrom(a, 32), d, "", "x", t0); err != nil {
			t.Fatal(err)
		}
	}
	l := m.List(t0)
	for i := 1; i < len(l); i++ {
		if l[i].Until.Before(l[i-1].Until) {
			t.Fatalf("List not sorted by Until: %v", l)
		}
	}
	if len(l) != 3 || l[0].Prefix.String() != "192.0.2.11/32" {
		t.Fatalf("List = %v", l)
	}
}

func TestStrikeTableBounded(t *testing.T) {
	m := mustOpen(t, "", Config{MaxStrikeEntries: 100}, t0)
	for i := range 1000 {
		a := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		m.Strike(a, reason.ConnRate, t0)
	}
	st := m.Stats()
	if st.StrikeEntries != 100 || st.Evictions != 900 {
		t.Fatalf("stats %+v: want 100 entries and 900 evictions", st)
	}
	// Sweep drops entries whose strikes left the window.
	m.Sweep(t0.Add(DefaultFindTime))
	if n := m.Stats().StrikeEntries; n != 0 {
		t.Fatalf("%d strike entries after the window, want 0", n)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero Config: %v", err)
	}
	bad := Config{FindTime: -1, MaxRetry: -1, Factor: 0.5, BanTime: time.Hour, MaxTime: time.Minute,
		IPv6Prefix: 129, Weights: map[reason.Reason]int{reason.ConnRate: -1}}
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad Config accepted")
	}
	for _, want := range []string{"findtime", "maxretry", "factor", "maxtime 1m0s cannot be below bantime 1h0m0s", "ipv6_prefix", "weight -1 for conn_rate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := Open("", bad, t0); err == nil {
		t.Fatal("Open accepted a bad Config")
	}
}

func TestParsePrefix(t *testing.T) {
	cases := []struct {
		in     string
		v6Bits int
		want   string
		err    bool
	}{
		{"1.2.3.4", 0, "1.2.3.4/32", false},
		{" 1.2.3.4 ", 0, "1.2.3.4/32", false},
		{"1.2.3.0/24", 0, "1.2.3.0/24", false},
		{"1.2.3.7/24", 0, "1.2.3.0/24", false},
		{"2001:db8::1", 0, "2001:db8::/64", false},
		{"2001:db8::1", 56, "2001:db8::/56", false},
		{"2001:db8::/48", 0, "2001:db8::/48", false},
		{"::ffff:1.2.3.4", 0, "1.2.3.4/32", false},
		{"::ffff:1.2.3.0/120", 0, "1.2.3.0/24", false},
		{"fe80::1%eth0", 0, "fe80::/64", false},
		{"", 0, "", true},
		{"1.2.3", 0, "", true},
		{"1.2.3.4/33", 0, "", true},
		{"example.com", 0, "", true},
		{"1.2.3.4/", 0, "", true},
	}
	for _, c := range cases {
		p, err := ParsePrefix(c.in, c.v6Bits)
		if c.err {
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", c.in)) {
				t.Errorf("ParsePrefix(%q) error %v, want one quoting the input", c.in, err)
			}
			continue
		}
		if err != nil || p.String() != c.want {
			t.Errorf("ParsePrefix(%q, %d) = %v, %v; want %s", c.in, c.v6Bits, p, err, c.want)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	m := mustOpen(t, "", Config{FindTime: time.Second}, t0)
	probe := netip.MustParseAddr("203.0.113.1")
	if n := testing.AllocsPerRun(100, func() { m.Banned(probe, t0) }); n != 0 {
		t.Errorf("Banned with no bans: %v allocs", n)
	}
	for i := range 1000 {
		a := netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
		if _, err := m.Add(netip.PrefixFrom(a, 32), time.Hour, "", "x", t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Add(netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "", "x", t0); err != nil {
		t.Fatal(err)
	}
	hit := netip.MustParseAddr("10.2.0.5")
	for _, a := range []netip.Addr{probe, hit, netip.MustParseAddr("198.51.100.1"), addr6} {
		if n := testing.AllocsPerRun(100, func() { m.Banned(a, t0) }); n != 0 {
			t.Errorf("Banned(%s) with bans: %v allocs", a, n)
		}
	}
	i := 0
	if n := testing.AllocsPerRun(100, func() {
		i++
		m.Strike(addrA, reason.ConnRate, t0.Add(time.Duration(i)*250*time.Millisecond))
	}); n != 0 {
		t.Errorf("Strike on an existing key: %v allocs", n)
	}
}

// TestConcurrent is for -race: strikes, lookups and admin changes at once.
func TestConcurrent(t *testing.T) {
	m := mustOpen(t, filepath.Join(t.TempDir(), "state.db"), Config{MaxStrikeEntries: 500}, t0)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				a := netip.AddrFrom4([4]byte{10, byte(g), 0, byte(i % 64)})
				now := t0.Add(time.Duration(i) * time.Millisecond)
				m.Strike(a, reason.ConnRate, now)
				m.Banned(a, now)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 50 {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i), 0}), 24)
			if _, err := m.Add(p, time.Hour, "", "admin", t0); err != nil {
				t.Error(err)
			}
			if i%2 == 0 {
				if _, err := m.Remove(p, "admin", t0); err != nil {
					t.Error(err)
				}
			}
			m.List(t0)
			m.Sweep(t0.Add(time.Duration(i) * time.Second))
			m.Stats()
		}
	}()
	wg.Wait()
	if st := m.Stats(); st.BansCreated != 4*64 {
		t.Fatalf("BansCreated = %d, want %d", st.BansCreated, 4*64)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Add(netip.MustParsePrefix("192.0.2.0/24"), time.Hour, "", "a", t0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close: %v, want ErrClosed", err)
	}
}
