package bans_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/bans"
)

func Example() {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m, err := bans.Open("", bans.Config{}, now) // the defaults, in memory
	if err != nil {
		panic(err)
	}
	defer m.Close()

	a := netip.MustParseAddr("2001:db8:1:2::7")
	m.Strike(a, reason.SchemaViolation, now) // weight 2
	m.Strike(a, reason.TooDeep, now)         // weight 2
	b, banned := m.Strike(netip.MustParseAddr("2001:db8:1:2::8"), reason.MsgRate, now.Add(time.Minute))
	fmt.Println(banned, b.Prefix, b.Remaining(now.Add(time.Minute)), b.Reason)

	_, refused := m.Banned(netip.MustParseAddr("2001:db8:1:2:ffff::1"), now.Add(5*time.Minute))
	fmt.Println("refused at accept:", refused)

	p, _ := bans.ParsePrefix("198.51.100.0/24", 0)
	if _, err := m.Add(p, time.Hour, "abuse report", "alice", now); err != nil {
		panic(err)
	}
	for _, b := range m.List(now.Add(5 * time.Minute)) {
		fmt.Println(b.Prefix, b.Actor, b.Until.Format(time.TimeOnly))
	}
	for _, b := range m.Sweep(now.Add(11 * time.Minute)) {
		fmt.Println("unban", b.Prefix, "by expiry")
	}
	// Output:
	// true 2001:db8:1:2::/64 10m0s msg_rate
	// refused at accept: true
	// 2001:db8:1:2::/64 auto 12:11:00
	// 198.51.100.0/24 alice 13:00:00
	// unban 2001:db8:1:2::/64 by expiry
}
