package topics

import (
	"fmt"
	"strings"
)

// Warnings returns what `config check` should point out in a set that
// compiles: each user namespace — the topics that share a {userId} rule's
// prefix up to and including its {userId} segment — some of whose topics
// reach no rule while the default is not deny, or reach a rule that does
// not check the user. Either way one user can read another's topics there.
//
// For each {userId} rule it probes the namespace's root ("user.{userId}"),
// the rule's own shape with its literals after {userId} replaced by any
// segment, and one segment deeper than the rule, and reports the first
// probe that leaks, as a pattern ("user.{userId}.*"). One warning per rule
// at most.
func (s *Set) Warnings() []string {
	probe, probeUser := s.probeSegments()
	var out []string
	for i := range s.rules {
		r := &s.rules[i]
		if r.userSeg < 0 {
			continue
		}
		if w := s.leak(i, probe, probeUser); w != "" {
			out = append(out, fmt.Sprintf("topics[%d] (match %q): %s", i, r.Match, w))
		}
	}
	return out
}

// leak returns the warning for rule i, or "".
func (s *Set) leak(i int, probe, probeUser string) string {
	segs := s.rules[i].segs
	k := s.rules[i].userSeg
	for _, literal := range []bool{true, false} {
		for depth := k + 1; depth <= len(segs)+1; depth++ {
			topic, shown := probeTopic(segs, depth, literal, probe, probeUser)
			if !ValidTopic(topic) {
				continue
			}
			r, _ := s.MatchParams(topic)
			switch {
			case r == nil && s.def != Deny:
				who := "any token holder"
				if s.def == Public {
					who = "anyone"
				}
				return fmt.Sprintf("the topics %s of every user reach no rule, and default: %s lets %s read another user's; add a rule covering them (e.g. match %q) or set default: deny",
					shown, s.def, who, strings.Join(append(patternOf(segs[:k+1]), "**"), "."))
			case r != nil && r.userSeg < 0 && r.Subscribe != Deny:
				return fmt.Sprintf("the topics %s of every user are matched by the rule %q, which does not check {userId}: one user can read another's there",
					shown, r.Match)
			}
		}
	}
	return ""
}

// probeTopic builds a topic of depth segments in the shape of segs: the
// probe user at the {userId} position, the literals before it, the
// literals after it when literal is set, and probe everywhere else. shown
// is the same topic as a pattern for the warning.
func probeTopic(segs []seg, depth int, literal bool, probe, probeUser string) (topic, shown string) {
	parts := make([]string, depth)
	show := make([]string, depth)
	pastUser := false
	for j := range parts {
		parts[j], show[j] = probe, "*"
		if j >= len(segs) {
			continue
		}
		switch segs[j].kind {
		case user:
			parts[j], show[j] = probeUser, UserIDSegment
			pastUser = true
		case lit:
			if !pastUser || literal {
				parts[j], show[j] = segs[j].lit, segs[j].lit
			}
		}
	}
	return strings.Join(parts, "."), strings.Join(show, ".")
}

// patternOf spells segs as a pattern.
func patternOf(segs []seg) []string {
	out := make([]string, len(segs))
	for i, sg := range segs {
		switch sg.kind {
		case lit:
			out[i] = sg.lit
		case one:
			out[i] = "*"
		case rest:
			out[i] = "**"
		case user:
			out[i] = UserIDSegment
		}
	}
	return out
}

// probeSegments returns two distinct segments that equal no literal of any
// rule, so that a probe matches only through wildcards and {userId}.
func (s *Set) probeSegments() (probe, probeUser string) {
	used := map[string]bool{}
	for i := range s.rules {
		for _, sg := range s.rules[i].segs {
			if sg.kind == lit {
				used[sg.lit] = true
			}
		}
	}
	fresh := func(base string) string {
		for used[base] {
			base += "_"
		}
		used[base] = true
		return base
	}
	return fresh("probe"), fresh("probe-user")
}
