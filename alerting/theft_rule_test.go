package alerting

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// A suspected token theft matches exactly one default rule, critical, on
// the first event; an honest reconnect (token_replayed) stays with the
// warning rule.
func TestDefaultRulesTokenTheft(t *testing.T) {
	rs := compileRules(DefaultRules())
	for _, tc := range []struct {
		e    audit.Event
		want string
	}{
		{audit.Event{Event: audit.KindAuthFailed, Reason: reason.TokenTheft, Severity: audit.Critical}, RuleTokenTheft},
		{audit.Event{Event: audit.KindAuthFailed, Reason: reason.TokenReplayed, Severity: audit.Warning}, RuleTokenReplayed},
	} {
		var got []*rule
		for _, r := range rs {
			if r.Threshold == 0 && r.matches(&tc.e) {
				got = append(got, r)
			}
		}
		if len(got) != 1 || got[0].Name != tc.want {
			t.Errorf("%s: matched %d rules, want only %q", tc.e.Reason, len(got), tc.want)
			continue
		}
		if tc.want == RuleTokenTheft && got[0].Severity != audit.Critical {
			t.Errorf("theft rule severity %v, want critical", got[0].Severity)
		}
	}
}

// One theft event is mailed after group_wait, critical, with both
// addresses, the user and the token fingerprint in the sample line.
func TestEngineMailsTokenTheft(t *testing.T) {
	rec := &recNotifier{}
	h := newHarness(t, Config{}, rec)
	h.e.Emit(audit.Event{Time: t0, Event: audit.KindAuthFailed, Severity: audit.Critical, Stage: audit.StageMessage,
		IP: netip.MustParseAddr("198.51.100.7"), CountedPrefix: netip.MustParsePrefix("198.51.100.7/32"), UserID: "bob", Topic: "user.bob.inbox",
		Reason: reason.TokenTheft, TokenFP: "0a1b2c3d", RedeemedIP: netip.MustParseAddr("192.0.2.10"), RedeemedAgoS: 12})
	h.run(0, 2*time.Minute, 10*time.Second)
	msgs := rec.sent()
	if len(msgs) != 1 {
		t.Fatalf("%d mails, want 1", len(msgs))
	}
	m := msgs[0]
	if !strings.Contains(m.Subject, "CRITICAL") || !strings.Contains(m.Subject, "stolen tokens") {
		t.Errorf("subject %q", m.Subject)
	}
	for _, want := range []string{"198.51.100.7", `redeemed_ip="192.0.2.10"`, `userId="bob"`, `token_fp="0a1b2c3d"`, "token_theft_suspected"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("mail text lacks %q:\n%s", want, m.Text)
		}
	}
}
