// Package topics holds the topic rules of SPEC §7: which topics a client may
// subscribe or publish to, and the pattern syntax shared by rules and by
// tokens bound to topics. It imports only policy/reason from the project.
package topics

import (
	"fmt"
	"strings"
)

// MaxLen is the longest topic name, in bytes.
const MaxLen = 200

// Access says what a client needs to subscribe or publish.
type Access string

// Access levels.
const (
	Token  Access = "token"  // a valid token for the topic
	Public Access = "public" // anyone (subscribe only)
	Deny   Access = "deny"   // nobody
)

// Rule is one entry of the `topics:` config list.
type Rule struct {
	Match     string // pattern: exact segments, "*" one segment, "**" the rest, "{userId}"
	Subscribe Access
	Publish   Access

	segs []seg
}

type segKind uint8

const (
	lit segKind = iota
	star
	starStar
	user
)

type seg struct {
	kind segKind
	lit  string
}

// Set is a compiled, ordered list of rules: the first match wins. It is
// immutable and safe for concurrent use.
type Set struct {
	rules []Rule
	def   Access
}

// Compile checks and compiles rules; def applies to topics no rule matches.
func Compile(rules []Rule, def Access) (*Set, error) {
	if def == "" {
		def = Token
	}
	if def != Token && def != Public && def != Deny {
		return nil, fmt.Errorf("default: %q is not token, public or deny", def)
	}
	s := &Set{def: def, rules: make([]Rule, len(rules))}
	for i, r := range rules {
		segs, err := compilePattern(r.Match)
		if err != nil {
			return nil, fmt.Errorf("topics[%d].match: %w", i, err)
		}
		if r.Subscribe == "" {
			r.Subscribe = Token
		}
		if r.Publish == "" {
			r.Publish = Deny
		}
		if r.Subscribe != Token && r.Subscribe != Public && r.Subscribe != Deny {
			return nil, fmt.Errorf("topics[%d].subscribe: %q is not token, public or deny", i, r.Subscribe)
		}
		if r.Publish != Token && r.Publish != Deny {
			return nil, fmt.Errorf("topics[%d].publish: %q is not token or deny", i, r.Publish)
		}
		r.segs = segs
		s.rules[i] = r
	}
	return s, nil
}

func compilePattern(p string) ([]seg, error) {
	if p == "" || len(p) > MaxLen {
		return nil, fmt.Errorf("pattern %q: empty or longer than %d", p, MaxLen)
	}
	parts := strings.Split(p, ".")
	segs := make([]seg, 0, len(parts))
	for i, part := range parts {
		switch {
		case part == "*":
			segs = append(segs, seg{kind: star})
		case part == "**":
			if i != len(parts)-1 {
				return nil, fmt.Errorf("pattern %q: \"**\" may only be the last segment", p)
			}
			segs = append(segs, seg{kind: starStar})
		case part == "{userId}":
			segs = append(segs, seg{kind: user})
		case validSegment(part):
			segs = append(segs, seg{kind: lit, lit: part})
		default:
			return nil, fmt.Errorf("pattern %q: bad segment %q (allowed: [A-Za-z0-9_:@-], *, **, {userId})", p, part)
		}
	}
	return segs, nil
}

func validSegment(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == ':' || c == '@') {
			return false
		}
	}
	return true
}

// ValidTopic reports whether t is a concrete topic name: dot-separated
// segments of [A-Za-z0-9_:@-], at most MaxLen bytes.
func ValidTopic(t string) bool {
	if t == "" || len(t) > MaxLen {
		return false
	}
	for {
		i := strings.IndexByte(t, '.')
		if i < 0 {
			return validSegment(t)
		}
		if !validSegment(t[:i]) {
			return false
		}
		t = t[i+1:]
	}
}

// ValidPattern reports whether p is a topic or a pattern.
func ValidPattern(p string) bool {
	_, err := compilePattern(p)
	return err == nil
}

// match reports whether topic matches segs. A {userId} segment must equal
// userID unless anyUser is set. It does not allocate.
func match(segs []seg, topic, userID string, anyUser bool) bool {
	for _, s := range segs {
		if s.kind == starStar {
			return topic != ""
		}
		part, rest, found := strings.Cut(topic, ".")
		if part == "" || (found && rest == "") {
			return false
		}
		switch s.kind {
		case lit:
			if part != s.lit {
				return false
			}
		case user:
			if !anyUser && part != userID {
				return false
			}
		}
		topic = rest // "" when this was the last segment of the topic
	}
	return topic == ""
}

// Match returns the first rule governing topic, or nil (then Default
// applies). A {userId} segment matches any user here; RuleAllowsUser then
// decides whether the asking user is the one named in the topic.
func (s *Set) Match(topic string) *Rule {
	for i := range s.rules {
		if match(s.rules[i].segs, topic, "", true) {
			return &s.rules[i]
		}
	}
	return nil
}

// Default is the access for topics no rule matches.
func (s *Set) Default() Access { return s.def }

// RuleAllowsUser reports whether userID may use topic under r: a rule with a
// {userId} segment only matches the asking user's own topics, so nobody
// reads another user's `user.{userId}.**` whatever token they hold.
func RuleAllowsUser(r *Rule, topic, userID string) bool {
	return match(r.segs, topic, userID, false)
}

// TokenAllows reports whether a token bound to patterns covers topic for
// userID.
func TokenAllows(patterns []string, topic, userID string) bool {
	for _, p := range patterns {
		if p == topic {
			return true
		}
		segs, err := compilePattern(p)
		if err == nil && match(segs, topic, userID, false) {
			return true
		}
	}
	return false
}
