package topics

import (
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// The case: default token and only user.{userId}.**. The root
// topic user.bob is bob's, not every token holder's.
func TestUserNamespaceProtectsItsRoot(t *testing.T) {
	set := mustCompile(t, []Rule{{Match: "news"}, {Match: "user.{userId}.**"}}, Token)
	for _, tc := range []struct {
		name, topic, user string
		want              reason.Reason
	}{
		{"bob's root, bob", "user.bob", "bob", reason.None},
		{"bob's root, carol", "user.bob", "carol", reason.TopicOtherUser},
		{"bob's inbox, carol", "user.bob.inbox", "carol", reason.TopicOtherUser},
		{"alice reads alice.smith's inbox", "user.alice.smith.inbox", "alice.smith", reason.TopicOtherUser},
		{"the prefix itself falls to the default", "user", "carol", reason.None},
	} {
		if got := set.CanSubscribe(tc.topic, tc.user, true); got != tc.want {
			t.Errorf("%s: CanSubscribe(%q, %q) = %v, want %v", tc.name, tc.topic, tc.user, got, tc.want)
		}
	}
	r, p := set.MatchParams("user.bob")
	if r == nil || r.Match != "user.{userId}.**" || p.UserID != "bob" {
		t.Fatalf("user.bob matched %+v %+v", r, p)
	}
	// Only a ** right after {userId} may match nothing.
	for _, pat := range []string{"chat.**", "user.*.**", "a.{userId}.b.**"} {
		set := mustCompile(t, []Rule{{Match: pat}}, Deny)
		root := strings.TrimSuffix(strings.NewReplacer("*", "x", "{userId}", "x").Replace(pat), ".xx")
		if r := set.Match(root); r != nil {
			t.Errorf("%s matched %q", pat, root)
		}
	}
}

// A rule that the root semantics makes unreachable is refused like any
// other shadowed rule, and the check does not over-reach.
func TestUserNamespaceShadowing(t *testing.T) {
	for _, rules := range [][]Rule{
		{{Match: "user.{userId}.**"}, {Match: "user.*", Subscribe: Public}},
		{{Match: "user.{userId}.**"}, {Match: "user.**", Subscribe: Public}},
		{{Match: "user.{userId}.**"}, {Match: "user.{userId}"}},
		{{Match: "a.{userId}.**"}, {Match: "a.*.**"}},
	} {
		if _, err := Compile(rules, Deny); err == nil || !strings.Contains(err.Error(), "never used") {
			t.Errorf("%s then %s: %v, want never used", rules[0].Match, rules[1].Match, err)
		}
	}
	for _, rules := range [][]Rule{
		{{Match: "user.*"}, {Match: "user.{userId}.**"}},                 // user.x.y still reaches the second
		{{Match: "user.*.**"}, {Match: "user.{userId}.**"}},              // user.x still reaches the second
		{{Match: "user.{userId}.*"}, {Match: "user.*", Subscribe: Deny}}, // user.x is not user.{userId}.*'s
	} {
		if _, err := Compile(rules, Deny); err != nil {
			t.Errorf("%s then %s: %v", rules[0].Match, rules[1].Match, err)
		}
	}
	// covers and match agree on the root: a.*.** does not match a.x.
	set := mustCompile(t, []Rule{{Match: "a.*.**"}, {Match: "a.{userId}.**"}}, Deny)
	if r := set.Match("a.x"); r == nil || r.Match != "a.{userId}.**" {
		t.Errorf("a.x matched %+v", r)
	}
}

func TestWarnings(t *testing.T) {
	cases := []struct {
		name  string
		rules []Rule
		def   Access
		want  []string // substrings of the one warning; nil: none
	}{
		{"root covered by the rule itself", []Rule{{Match: "user.{userId}.**"}}, Token, nil},
		{"default deny", []Rule{{Match: "user.{userId}.inbox"}}, Deny, nil},
		{"root falls to default token", []Rule{{Match: "user.{userId}.inbox"}}, Token,
			[]string{"topics[0]", `"user.{userId}.inbox"`, "user.{userId} ", "default: token", "any token holder", `"user.{userId}.**"`}},
		{"siblings fall to default public", []Rule{{Match: "user.{userId}"}}, Public,
			[]string{"user.{userId}.*", "anyone"}},
		{"other literals after {userId}", []Rule{{Match: "user.{userId}"}, {Match: "user.*.inbox", Subscribe: Deny}, {Match: "user.*.*"}}, Deny,
			[]string{`"user.*.*"`, "does not check {userId}"}},
		{"a token rule for the root", []Rule{{Match: "user.*"}, {Match: "user.{userId}.**"}}, Deny,
			[]string{"user.{userId} ", `"user.*"`, "does not check {userId}"}},
		{"a deny rule for the root", []Rule{{Match: "user.*", Subscribe: Deny}, {Match: "user.{userId}.**"}}, Token, nil},
		{"wildcard before {userId}", []Rule{{Match: "t.*.u.{userId}.x"}}, Token, []string{"t.*.u.{userId} "}},
		{"probes equal no literal", []Rule{{Match: "x.{userId}"}, {Match: "x.*.probe", Subscribe: Deny}, {Match: "x.*.probe_", Subscribe: Deny}}, Token,
			[]string{"x.{userId}.*"}},
		{"deeper topics reach a token rule", []Rule{{Match: "user.*.**"}, {Match: "user.{userId}.**"}}, Deny,
			[]string{"user.{userId}.*", `"user.*.**"`}},
	}
	for _, tc := range cases {
		set := mustCompile(t, tc.rules, tc.def)
		got := set.Warnings()
		if tc.want == nil {
			if len(got) != 0 {
				t.Errorf("%s: warnings %q, want none", tc.name, got)
			}
			continue
		}
		if len(got) != 1 {
			t.Errorf("%s: warnings %q, want one", tc.name, got)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(got[0], w) {
				t.Errorf("%s: warning %q lacks %q", tc.name, got[0], w)
			}
		}
	}
}

func TestValidUserIDIsOneSegment(t *testing.T) {
	for _, ok := range []string{"42", "alice", "alice_smith", "a@b", "tenant:acme", "a-b", strings.Repeat("u", MaxUserIDLen)} {
		if !ValidUserID(ok) {
			t.Errorf("ValidUserID(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "alice.smith", ".", "a.", ".a", "a b", "a*", "{userId}", "é", strings.Repeat("u", MaxUserIDLen+1)} {
		if ValidUserID(bad) {
			t.Errorf("ValidUserID(%q) = true", bad)
		}
	}
}

// covers is exact against match over a small universe: a rule is refused as
// shadowed exactly when every topic it matches goes to the earlier rule.
func TestCoversAgreesWithMatch(t *testing.T) {
	pats := []string{"a", "*", "**", "a.*", "a.**", "*.**", "a.{userId}", "a.{userId}.**", "{userId}.**",
		"a.{userId}.*", "a.*.**", "a.b", "a.b.**", "*.{userId}.**", "a.*.*", "{userId}", "a.{userId}.b"}
	var universe []string
	segs := []string{"a", "b", "c"}
	var gen func(prefix string, depth int)
	gen = func(prefix string, depth int) {
		if depth == 0 {
			return
		}
		for _, s := range segs {
			t := s
			if prefix != "" {
				t = prefix + "." + s
			}
			universe = append(universe, t)
			gen(t, depth-1)
		}
	}
	gen("", 4)
	for _, pa := range pats {
		for _, pb := range pats {
			a, _, _ := compilePattern(pa)
			b, _, _ := compilePattern(pb)
			want := true
			for _, topic := range universe {
				_, okb := match(b, topic)
				_, oka := match(a, topic)
				if okb && !oka {
					want = false
					break
				}
			}
			if got := covers(a, b); got != want {
				t.Errorf("covers(%q, %q) = %v, want %v", pa, pb, got, want)
			}
		}
	}
}
