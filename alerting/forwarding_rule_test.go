package alerting

import (
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
)

// untrusted_forwarding is audited once per peer per hour; the default
// rule mails when one peer persists for three hours, not on the first
// report nor for three different peers.
func TestDefaultRuleUntrustedForwardingPersists(t *testing.T) {
	var rule *rule
	for _, r := range compileRules(DefaultRules()) {
		if r.Name == RuleUntrustedForwarding {
			rule = r
		}
	}
	if rule == nil {
		t.Fatalf("no default rule %s", RuleUntrustedForwarding)
	}
	t0 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	report := func(peer string, at time.Time) bool {
		e := audit.Event{Time: at, Event: audit.KindUntrustedForwarding, Severity: audit.Warning, Stage: audit.StageHandshake,
			PeerIP: netip.MustParseAddr(peer)}
		_, fired := rule.observe(&e)
		return fired
	}
	for i, peer := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		if report(peer, t0.Add(time.Duration(i)*time.Minute)) {
			t.Fatalf("fired for %d different peers, each reported once", i+1)
		}
	}
	if report("198.51.100.7", t0) || report("198.51.100.7", t0.Add(time.Hour)) {
		t.Fatal("fired before the third hourly report of one peer")
	}
	if !report("198.51.100.7", t0.Add(2*time.Hour)) {
		t.Fatal("did not fire on the third hourly report of one peer")
	}
}
