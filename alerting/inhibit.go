package alerting

import "time"

// Stage 3a: inhibition. While any group of a rule that lists R in its
// Inhibits fires (an attack-rate or flood rule), notifications of rule R
// (per-address bans) are muted. A muted notification counts as handled:
// its group waits for news before it mails again.

type inhibitor struct {
	d      *dispatcher
	by     map[string][]string // muted rule → rules that mute it
	report func(*notification, Decision, string)
}

func newInhibitor(d *dispatcher, rules []*rule, report func(*notification, Decision, string)) *inhibitor {
	in := &inhibitor{d: d, by: map[string][]string{}, report: report}
	for _, r := range rules {
		for _, t := range r.Inhibits {
			in.by[t] = append(in.by[t], r.Name)
		}
	}
	return in
}

func (in *inhibitor) exec(now time.Time, ns []*notification) []*notification {
	out := ns[:0]
next:
	for _, n := range ns {
		for _, src := range in.by[n.Rule] {
			if ls, ok := in.d.firingRule(src, now); ok {
				in.report(n, Inhibited, "muted while "+ls+" fires")
				continue next
			}
		}
		out = append(out, n)
	}
	return out
}
