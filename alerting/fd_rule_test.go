package alerting

import (
	"testing"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// The gateway's file descriptor exhaustion (critical, stage system) is
// mailed by the default gateway_trouble rule, once per episode since the
// gateway emits it once; its end (info) mails nothing.
func TestDefaultRulesMailFDExhausted(t *testing.T) {
	rs := compileRules(DefaultRules())
	for _, tc := range []struct {
		e    audit.Event
		want string
	}{
		{audit.Event{Event: audit.KindFDExhausted, Reason: reason.FDExhausted, Severity: audit.Critical, Stage: audit.StageSystem}, RuleSystem},
		{audit.Event{Event: audit.KindFDRecovered, Reason: reason.FDExhausted, Severity: audit.Info, Stage: audit.StageSystem, Count: 12}, ""},
	} {
		var got []string
		for _, r := range rs {
			if r.Threshold == 0 && r.matches(&tc.e) {
				got = append(got, r.Name)
			}
		}
		if tc.want == "" && len(got) != 0 || tc.want != "" && (len(got) != 1 || got[0] != tc.want) {
			t.Errorf("%s: matched %v, want %q", tc.e.Event, got, tc.want)
		}
	}
}
