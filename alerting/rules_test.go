package alerting

import (
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

func TestRuleThresholdSlidingWindow(t *testing.T) {
	r := compileRules([]Rule{{Name: "r", Event: audit.KindAuthFailed, Threshold: 3, Window: time.Minute,
		CountBy: []string{"ip_prefix24"}}})[0]
	for _, tc := range []struct {
		name  string
		at    time.Duration
		ip    string
		count int64
		hit   bool
		n     int64
	}{
		{"first", 0, "198.51.100.1", 0, false, 0},
		{"second", 10 * time.Second, "198.51.100.2", 0, false, 0},
		{"third", 20 * time.Second, "198.51.100.3", 0, false, 0},
		{"other /24 counts apart", 25 * time.Second, "198.51.101.1", 0, false, 0},
		{"fourth crosses, carries the window", 30 * time.Second, "198.51.100.4", 0, true, 4},
		{"fifth still above", 40 * time.Second, "198.51.100.5", 0, true, 1},
		{"old ones slid out", 100 * time.Second, "198.51.100.6", 0, false, 0},
		{"a folded summary weighs its count", 101 * time.Second, "198.51.100.6", 5, true, 6},
	} {
		e := audit.Event{Time: t0.Add(tc.at), Event: audit.KindAuthFailed, IP: netip.MustParseAddr(tc.ip), Count: tc.count}
		h, ok := r.observe(&e)
		if ok != tc.hit || ok && h.n != tc.n {
			t.Errorf("%s: hit %v n %d; want %v %d", tc.name, ok, h.n, tc.hit, tc.n)
		}
	}
	r.gc(t0.Add(10 * time.Minute))
	if len(r.windows) != 0 {
		t.Errorf("%d windows left after gc", len(r.windows))
	}
}

func TestDefaultRulesMatch(t *testing.T) {
	rs := compileRules(DefaultRules())
	for _, tc := range []struct {
		name string
		e    audit.Event
		want string
	}{
		{"ban", audit.Event{Event: audit.KindBan, Severity: audit.Critical, Stage: audit.StageSystem}, RuleBan},
		{"replay", audit.Event{Event: audit.KindAuthFailed, Reason: reason.TokenReplayed, Severity: audit.Warning}, RuleTokenReplayed},
		{"audit dropped", audit.Event{Event: audit.KindAuditDropped, Severity: audit.Critical, Stage: audit.StageSystem}, RuleAuditDropped},
		{"gateway trouble", audit.Event{Event: audit.KindLoopStalled, Severity: audit.Critical, Stage: audit.StageSystem}, RuleSystem},
		{"notice system event", audit.Event{Event: audit.KindConfigReload, Severity: audit.Notice, Stage: audit.StageSystem}, ""},
	} {
		var got []string
		for _, r := range rs {
			if r.Threshold == 0 && r.matches(&tc.e) {
				got = append(got, r.Name)
			}
		}
		if tc.want == "" && len(got) != 0 || tc.want != "" && (len(got) != 1 || got[0] != tc.want) {
			t.Errorf("%s: matched %v, want %q", tc.name, got, tc.want)
		}
	}
}
