package topics

import "testing"

func TestMatch(t *testing.T) {
	set, err := Compile([]Rule{
		{Match: "news"},
		{Match: "public.*", Subscribe: Public},
		{Match: "user.{userId}.**"},
		{Match: "chat.**", Publish: Token},
	}, Deny)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		topic, user string
		rule        string // "" = no rule
		allowed     bool   // RuleAllowsUser
	}{
		{"news", "1", "news", true},
		{"news.x", "1", "", false},
		{"public.a", "1", "public.*", true},
		{"public.a.b", "1", "", false},
		{"public", "1", "", false},
		{"user.42.inbox", "42", "user.{userId}.**", true},
		{"user.42.inbox", "43", "user.{userId}.**", false},
		{"user.42.a.b", "42", "user.{userId}.**", true},
		{"user.42", "42", "", false},
		{"chat.lobby", "1", "chat.**", true},
		{"chat", "1", "", false},
		{"chat.", "1", "", false},
	}
	for _, c := range cases {
		r := set.Match(c.topic)
		got := ""
		if r != nil {
			got = r.Match
		}
		if got != c.rule {
			t.Errorf("%s: rule %q, want %q", c.topic, got, c.rule)
			continue
		}
		if r != nil && RuleAllowsUser(r, c.topic, c.user) != c.allowed {
			t.Errorf("%s as %s: allowed %v", c.topic, c.user, !c.allowed)
		}
	}
	if set.Default() != Deny {
		t.Fatal("default")
	}
}

func TestTokenAllows(t *testing.T) {
	cases := []struct {
		pats  []string
		topic string
		want  bool
	}{
		{[]string{"news"}, "news", true},
		{[]string{"news"}, "sport", false},
		{[]string{"news.*"}, "news.eu", true},
		{[]string{"user.{userId}.**"}, "user.7.x", true},
		{[]string{"user.{userId}.**"}, "user.8.x", false},
	}
	for _, c := range cases {
		if got := TokenAllows(c.pats, c.topic, "7"); got != c.want {
			t.Errorf("%v %s: %v", c.pats, c.topic, got)
		}
	}
}

func TestValid(t *testing.T) {
	for _, ok := range []string{"news", "a.b-c_d:e@f", "x.1"} {
		if !ValidTopic(ok) {
			t.Errorf("%q should be valid", ok)
		}
	}
	for _, bad := range []string{"", ".a", "a.", "a..b", "a b", "a/b", "ü", string(make([]byte, 201))} {
		if ValidTopic(bad) {
			t.Errorf("%q should be invalid", bad)
		}
	}
	for _, bad := range []string{"a.**.b", "a.{user}", "**x"} {
		if ValidPattern(bad) {
			t.Errorf("pattern %q should be invalid", bad)
		}
	}
	if _, err := Compile([]Rule{{Match: "a", Subscribe: "maybe"}}, Token); err == nil {
		t.Error("bad access accepted")
	}
}

func TestMatchNoAllocs(t *testing.T) {
	set, _ := Compile([]Rule{{Match: "a.b"}, {Match: "user.{userId}.**"}}, Deny)
	n := testing.AllocsPerRun(100, func() {
		r := set.Match("user.42.inbox")
		_ = RuleAllowsUser(r, "user.42.inbox", "42")
	})
	if n != 0 {
		t.Fatalf("%v allocs", n)
	}
}
