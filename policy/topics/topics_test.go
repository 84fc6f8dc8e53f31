package topics

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

func mustCompile(t testing.TB, rules []Rule, def Access) *Set {
	t.Helper()
	s, err := Compile(rules, def)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

func TestValidTopic(t *testing.T) {
	for _, ok := range []string{"news", "a.b-c_d:e@f", "x.1", "A.Z.0.9", "tenant:acme.orders", strings.Repeat("a", MaxLen),
		strings.Repeat("a.", MaxLen/2-1) + "ab"} {
		if !ValidTopic(ok) {
			t.Errorf("%q should be valid", ok)
		}
	}
	for _, bad := range []string{"", ".", ".a", "a.", "a..b", "a b", "a/b", "a*", "*", "**", "a.*", "{userId}", "user.{userId}",
		"ü", "a\x00", "a\n", "a,b", "a;b", "a%2e", "a#b", "a?b", "\"a\"", strings.Repeat("a", MaxLen+1)} {
		if ValidTopic(bad) {
			t.Errorf("%q should be invalid", bad)
		}
	}
}

func TestValidPattern(t *testing.T) {
	for _, ok := range []string{"news", "*", "**", "a.*", "a.**", "*.b", "user.{userId}.**", "{userId}", "a.*.{userId}.b", "a.*.*.**"} {
		if !ValidPattern(ok) {
			t.Errorf("%q should be valid", ok)
		}
	}
	for _, bad := range []string{"", "a.**.b", "**.a", "**.**", "a.{user}", "a.{userid}", "a.{userId}x", "**x", "a*", "a.*b",
		"a..b", "a.", ".a", "{userId}.{userId}", "a b", strings.Repeat("a", MaxLen+1)} {
		if ValidPattern(bad) {
			t.Errorf("pattern %q should be invalid", bad)
		}
	}
}

func TestMatch(t *testing.T) {
	set := mustCompile(t, []Rule{
		{Match: "news"},
		{Match: "public.*", Subscribe: Public},
		{Match: "user.{userId}.**"},
		{Match: "inbox.{userId}"},
		{Match: "chat.**", Publish: Token},
		{Match: "a.*.c"},
		{Match: "**", Subscribe: Deny},
	}, Token)
	cases := []struct {
		topic, rule, user string
	}{
		{"news", "news", ""},
		{"news.x", "**", ""},
		{"public.a", "public.*", ""},
		{"public.a.b", "**", ""},
		{"public", "**", ""},
		{"user.42.inbox", "user.{userId}.**", "42"},
		{"user.42.a.b", "user.{userId}.**", "42"},
		{"user.42", "user.{userId}.**", "42"}, // the namespace's root
		{"inbox.7", "inbox.{userId}", "7"},
		{"inbox.7.x", "**", ""},
		{"chat.lobby", "chat.**", ""},
		{"chat.a.b.c", "chat.**", ""},
		{"chat", "**", ""},
		{"a.b.c", "a.*.c", ""},
		{"a.b.d", "**", ""},
		{"a.b.c.d", "**", ""},
		{"zzz", "**", ""},
	}
	for _, c := range cases {
		r, p := set.MatchParams(c.topic)
		got := ""
		if r != nil {
			got = r.Match
		}
		if got != c.rule || p.UserID != c.user {
			t.Errorf("%s: rule %q params %+v, want %q %q", c.topic, got, p, c.rule, c.user)
		}
		if r2 := set.Match(c.topic); r2 != r {
			t.Errorf("%s: Match and MatchParams disagree", c.topic)
		}
	}
}

func TestFirstMatchWins(t *testing.T) {
	set := mustCompile(t, []Rule{
		{Match: "news.breaking", Subscribe: Public},
		{Match: "news.*", Subscribe: Deny},
	}, Token)
	if r := set.Match("news.breaking"); r == nil || r.Subscribe != Public {
		t.Errorf("news.breaking: %+v", r)
	}
	if r := set.Match("news.sport"); r == nil || r.Subscribe != Deny {
		t.Errorf("news.sport: %+v", r)
	}
}

func TestDefaultsFilled(t *testing.T) {
	set := mustCompile(t, []Rule{{Match: "news"}, {Match: "ticker", Subscribe: Public, Feed: &Feed{URL: "http://backend/ticker"}}}, "")
	r := set.Match("news")
	if r.Subscribe != Token || r.Publish != Deny || r.SlowConsumer != Disconnect || set.Default() != Token {
		t.Errorf("defaults: %+v default %v", r, set.Default())
	}
	if f := set.Match("ticker").Feed; f == nil || f.Every != DefaultFeedEvery {
		t.Errorf("feed default: %+v", f)
	}
	if set.SlowConsumer("nothing.here") != Disconnect || set.SlowConsumer("news") != Disconnect {
		t.Error("SlowConsumer default")
	}
	set = mustCompile(t, []Rule{{Match: "prices.*", SlowConsumer: KeepLatest}}, Deny)
	if set.SlowConsumer("prices.eur") != KeepLatest {
		t.Error("SlowConsumer of a rule")
	}
}

func TestCompileCopies(t *testing.T) {
	in := []Rule{{Match: "ticker", Subscribe: Public, Feed: &Feed{URL: "http://backend/ticker", Every: 2 * time.Second}}}
	set := mustCompile(t, in, Deny)
	in[0].Match, in[0].Subscribe, in[0].Feed.URL = "x", Deny, "http://evil/"
	r := set.Match("ticker")
	if r == nil || r.Subscribe != Public || r.Feed.URL != "http://backend/ticker" {
		t.Errorf("the Set shares the caller's rules: %+v", r)
	}
}

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name  string
		rules []Rule
		def   Access
		want  []string // substrings of the error
	}{
		{"bad default", nil, "maybe", []string{"default", `"maybe"`}},
		{"empty pattern", []Rule{{Match: ""}}, Deny, []string{"topics[0]", "empty"}},
		{"** in the middle", []Rule{{Match: "news"}, {Match: "a.**.b"}}, Deny, []string{"topics[1]", `"a.**.b"`, "last segment"}},
		{"bad segment", []Rule{{Match: "a.b c"}}, Deny, []string{"topics[0]", `"b c"`}},
		{"misspelt userId", []Rule{{Match: "user.{user}.**"}}, Deny, []string{"topics[0]", `"{user}"`}},
		{"two userId", []Rule{{Match: "dm.{userId}.{userId}"}}, Deny, []string{"topics[0]", "more than one"}},
		{"too long", []Rule{{Match: strings.Repeat("a", MaxLen+1)}}, Deny, []string{"topics[0]", "longer than"}},
		{"bad subscribe", []Rule{{Match: "a", Subscribe: "maybe"}}, Deny, []string{"topics[0]", "subscribe", `"maybe"`}},
		{"publish public", []Rule{{Match: "a", Publish: Public}}, Deny, []string{"topics[0]", "publish", `"public"`}},
		{"bad policy", []Rule{{Match: "a", SlowConsumer: "block"}}, Deny, []string{"topics[0]", "slow_consumer", `"block"`}},
		{"public userId", []Rule{{Match: "user.{userId}.**", Subscribe: Public}}, Deny, []string{"topics[0]", "public cannot be combined"}},
		{"schema without publish", []Rule{{Match: "a", DataSchema: "a.json"}}, Deny, []string{"topics[0]", "data_schema"}},
		{"feed on a wildcard", []Rule{{Match: "ticker.*", Feed: &Feed{URL: "http://b/"}}}, Deny, []string{"topics[0]", "feed", "without *"}},
		{"feed bad url", []Rule{{Match: "ticker", Feed: &Feed{URL: "backend/ticker"}}}, Deny, []string{"topics[0]", "feed", "absolute"}},
		{"feed file url", []Rule{{Match: "ticker", Feed: &Feed{URL: "file:///etc/passwd"}}}, Deny, []string{"feed", "absolute"}},
		{"feed user info", []Rule{{Match: "ticker", Feed: &Feed{URL: "http://u:p@b/"}}}, Deny, []string{"feed", "user info"}},
		{"feed too often", []Rule{{Match: "ticker", Feed: &Feed{URL: "http://b/", Every: time.Millisecond}}}, Deny, []string{"feed", "every"}},
		{"several at once", []Rule{{Match: "ok"}, {Match: "a.**.b"}, {Match: "c", Subscribe: "x"}}, "y",
			[]string{"default", "topics[1]", "topics[2]"}},
		{"duplicate", []Rule{{Match: "news"}, {Match: "news", Subscribe: Public}}, Deny,
			[]string{"topics[1]", "never used", "topics[0]"}},
		{"shadowed by *", []Rule{{Match: "news.*"}, {Match: "news.eu"}}, Deny, []string{"topics[1]", "never used"}},
		{"shadowed by **", []Rule{{Match: "a.**"}, {Match: "a.b.*.c"}}, Deny, []string{"topics[1]", "never used"}},
		{"catch-all first", []Rule{{Match: "**"}, {Match: "x"}}, Deny, []string{"topics[1]", "never used"}},
		{"public user.** before user.{userId}.**", []Rule{{Match: "user.**", Subscribe: Public}, {Match: "user.{userId}.**"}}, Deny,
			[]string{"topics[1]", "never used", `"user.**"`}},
		{"{userId} rule shadows a later *", []Rule{{Match: "user.{userId}.**"}, {Match: "user.*.public"}}, Deny,
			[]string{"topics[1]", "never used"}},
	}
	for _, tc := range cases {
		_, err := Compile(tc.rules, tc.def)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.name, err, w)
			}
		}
	}
}

func TestNotShadowed(t *testing.T) {
	// Specific before general is fine, and patterns that overlap without
	// one covering the other are fine.
	mustCompile(t, []Rule{
		{Match: "user.*.public", Subscribe: Public},
		{Match: "user.{userId}.**"},
		{Match: "news.eu"},
		{Match: "news.*"},
		{Match: "a.*.c"},
		{Match: "a.b.*"},
		{Match: "x.*"},
		{Match: "x.**"},
		{Match: "**"},
	}, Deny)
}

func TestCanSubscribe(t *testing.T) {
	set := mustCompile(t, []Rule{
		{Match: "closed.**", Subscribe: Deny},
		{Match: "public.*", Subscribe: Public},
		{Match: "user.{userId}.**"},
		{Match: "news"},
	}, Deny)
	cases := []struct {
		name  string
		topic string
		user  string
		token bool
		want  reason.Reason
	}{
		{"public without token", "public.x", "", false, reason.None},
		{"public with token", "public.x", "7", true, reason.None},
		{"token rule, token", "news", "7", true, reason.None},
		{"token rule, no token", "news", "", false, reason.TokenMissing},
		{"deny rule", "closed.x", "7", true, reason.TopicDenied},
		{"default deny", "other", "7", true, reason.TopicDenied},
		{"own user topic", "user.7.inbox", "7", true, reason.None},
		{"own user topic, deep", "user.7.a.b.c", "7", true, reason.None},
		{"another user's topic", "user.8.inbox", "7", true, reason.TopicOtherUser},
		{"another user's topic, no token", "user.8.inbox", "7", false, reason.TokenMissing},
		{"user topic with empty user", "user.8.inbox", "", true, reason.TopicOtherUser},
		{"user id prefix", "user.77.inbox", "7", true, reason.TopicOtherUser},
		{"user id suffix", "user.7.inbox", "77", true, reason.TopicOtherUser},
		{"user id case", "user.Ab.inbox", "ab", true, reason.TopicOtherUser},
		{"another user's root topic", "user.8", "7", true, reason.TopicOtherUser},
		{"own root topic", "user.7", "7", true, reason.None},
		{"root topic, no token", "user.7", "", false, reason.TokenMissing},
		{"user id with a dot", "user.alice.smith.inbox", "alice.smith", true, reason.TopicOtherUser},
		{"user id too long", "user." + strings.Repeat("u", 129) + ".x", strings.Repeat("u", 129), true, reason.TopicOtherUser},
		{"invalid topic", "user..inbox", "", true, reason.TopicDenied},
		{"invalid topic 2", "public.x.", "", false, reason.TopicDenied},
		{"pattern as topic", "public.*", "", false, reason.TopicDenied},
	}
	for _, tc := range cases {
		if got := set.CanSubscribe(tc.topic, tc.user, tc.token); got != tc.want {
			t.Errorf("%s: CanSubscribe(%q, %q, %v) = %v, want %v", tc.name, tc.topic, tc.user, tc.token, got, tc.want)
		}
	}
}

func TestCanSubscribeDefaults(t *testing.T) {
	// With no rule, every topic needs a token.
	set := mustCompile(t, nil, "")
	if got := set.CanSubscribe("anything", "", false); got != reason.TokenMissing {
		t.Errorf("no rules, no token: %v", got)
	}
	if got := set.CanSubscribe("anything", "1", true); got != reason.None {
		t.Errorf("no rules, token: %v", got)
	}
	if got := set.CanPublish("anything", "1", true); got != reason.PublishDenied {
		t.Errorf("no rules, publish: %v", got)
	}
	if got := mustCompile(t, nil, Public).CanSubscribe("anything", "", false); got != reason.None {
		t.Errorf("default public: %v", got)
	}
}

func TestCanPublish(t *testing.T) {
	set := mustCompile(t, []Rule{
		{Match: "chat.**", Publish: Token, Subscribe: Public},
		{Match: "user.{userId}.outbox", Publish: Token},
		{Match: "news", Subscribe: Public},
	}, Public)
	cases := []struct {
		name  string
		topic string
		user  string
		token bool
		want  reason.Reason
	}{
		{"token rule, token", "chat.lobby", "7", true, reason.None},
		{"token rule, no token", "chat.lobby", "", false, reason.TokenMissing},
		{"publish deny by default", "news", "7", true, reason.PublishDenied},
		{"no rule: never, even with default public", "other", "7", true, reason.PublishDenied},
		{"own outbox", "user.7.outbox", "7", true, reason.None},
		{"another user's outbox", "user.8.outbox", "7", true, reason.TopicOtherUser},
		{"invalid topic", "chat..x", "7", true, reason.PublishDenied},
	}
	for _, tc := range cases {
		if got := set.CanPublish(tc.topic, tc.user, tc.token); got != tc.want {
			t.Errorf("%s: CanPublish(%q, %q, %v) = %v, want %v", tc.name, tc.topic, tc.user, tc.token, got, tc.want)
		}
	}
}

// tokenAllows is TokenAllowsSpaced for a list of patterns, as a token's
// grant joins them.
func tokenAllows(pats []string, topic, userID string) bool {
	return TokenAllowsSpaced(strings.Join(pats, " "), topic, userID)
}

func TestTokenAllowsSpaced(t *testing.T) {
	cases := []struct {
		name  string
		pats  []string
		topic string
		want  bool
	}{
		{"exact", []string{"news"}, "news", true},
		{"exact, other", []string{"news"}, "sport", false},
		{"exact is not a prefix", []string{"news"}, "news.eu", false},
		{"one of several", []string{"sport", "news"}, "news", true},
		{"star", []string{"news.*"}, "news.eu", true},
		{"star is one segment", []string{"news.*"}, "news.eu.fr", false},
		{"star needs a segment", []string{"news.*"}, "news", false},
		{"double star", []string{"news.**"}, "news.eu.fr", true},
		{"double star needs a segment", []string{"news.**"}, "news", false},
		{"catch-all", []string{"**"}, "a.b.c", true},
		{"own user", []string{"user.{userId}.**"}, "user.7.x", true},
		{"other user", []string{"user.{userId}.**"}, "user.8.x", false},
		{"user id prefix", []string{"user.{userId}.**"}, "user.77.x", false},
		{"own user root", []string{"user.{userId}.**"}, "user.7", true},
		{"other user root", []string{"user.{userId}.**"}, "user.8", false},
		{"root needs {userId} before **", []string{"user.*.**"}, "user.7", false},
		{"user last", []string{"inbox.{userId}"}, "inbox.7", true},
		{"user last, longer topic", []string{"inbox.{userId}"}, "inbox.7.x", false},
		{"empty list", nil, "news", false},
		{"invalid pattern ** in middle", []string{"a.**.c"}, "a.b.c", false},
		{"invalid pattern trailing dot", []string{"news."}, "news", false},
		{"invalid pattern empty", []string{""}, "news", false},
		{"invalid topic", []string{"**"}, "a..b", false},
		{"invalid topic, trailing dot", []string{"news.**"}, "news.", false},
		{"pattern longer than topic", []string{"a.b.c"}, "a.b", false},
		{"topic longer than pattern", []string{"a.b"}, "a.b.c", false},
	}
	for _, tc := range cases {
		if got := tokenAllows(tc.pats, tc.topic, "7"); got != tc.want {
			t.Errorf("%s: TokenAllowsSpaced(%q, %q) = %v, want %v", tc.name, tc.pats, tc.topic, got, tc.want)
		}
	}
	if tokenAllows([]string{"user.{userId}.**"}, "user.7.x", "") {
		t.Error("{userId} matched an empty user")
	}
	if tokenAllows([]string{"user.{userId}.**"}, "user.alice.smith.x", "alice.smith") {
		t.Error("{userId} matched a user id with a dot")
	}
}

// TestTokenAllowsAgreesWithRules checks that the uncompiled matcher used
// for tokens agrees with the compiled one used for rules (a token holder
// of user 7 subscribing under a single token rule).
func TestTokenAllowsAgreesWithRules(t *testing.T) {
	pats := []string{"news", "news.*", "news.**", "*", "**", "*.eu", "a.*.c", "user.{userId}.**", "inbox.{userId}", "*.*.*"}
	topicsList := []string{"news", "news.eu", "news.eu.fr", "a.b.c", "a.c", "user.7.x", "user.8.x", "user.7", "inbox.7", "inbox.8", "x.eu", "q"}
	for _, p := range pats {
		set := mustCompile(t, []Rule{{Match: p}}, Deny)
		for _, tp := range topicsList {
			want := set.CanSubscribe(tp, "7", true) == reason.None
			if got := TokenAllowsSpaced(p, tp, "7"); got != want {
				t.Errorf("pattern %q topic %q: TokenAllowsSpaced %v, rule %v", p, tp, got, want)
			}
		}
	}
}

func TestEnums(t *testing.T) {
	for _, a := range []Access{Token, Public, Deny} {
		if got, err := ParseAccess(a.String()); err != nil || got != a {
			t.Errorf("ParseAccess(%q) = %v %v", a, got, err)
		}
	}
	for _, p := range []Policy{Disconnect, DropOldest, KeepLatest} {
		if got, err := ParsePolicy(p.String()); err != nil || got != p {
			t.Errorf("ParsePolicy(%q) = %v %v", p, got, err)
		}
	}
	for _, bad := range []string{"", "Token", "TOKEN", "allow", " token"} {
		if _, err := ParseAccess(bad); err == nil {
			t.Errorf("ParseAccess(%q) accepted", bad)
		}
		if _, err := ParsePolicy(bad); err == nil {
			t.Errorf("ParsePolicy(%q) accepted", bad)
		}
	}
}

// benchRules is a realistic config: ten rules, the common topics late.
func benchRules() []Rule {
	return []Rule{
		{Match: "admin.**", Subscribe: Deny},
		{Match: "internal.*", Subscribe: Deny},
		{Match: "public.news.*", Subscribe: Public},
		{Match: "public.prices.*", Subscribe: Public, SlowConsumer: KeepLatest},
		{Match: "chat.rooms.*", Publish: Token},
		{Match: "team.*.board"},
		{Match: "inbox.{userId}"},
		{Match: "ticker", Subscribe: Public},
		{Match: "user.{userId}.**"},
		{Match: "**", Subscribe: Deny},
	}
}

func TestMatchNoAllocs(t *testing.T) {
	set := mustCompile(t, benchRules(), Deny)
	pats := "chat.rooms.* user.{userId}.**"
	n := testing.AllocsPerRun(200, func() {
		if r, p := set.MatchParams("user.42.inbox"); r == nil || p.UserID != "42" {
			t.Fatal("no match")
		}
		_ = set.Match("public.prices.eur")
		if set.CanSubscribe("user.42.inbox", "42", true) != reason.None ||
			set.CanSubscribe("user.43.inbox", "42", true) != reason.TopicOtherUser ||
			set.CanPublish("chat.rooms.a", "42", true) != reason.None ||
			set.CanSubscribe("user.42.inbox", "42", false) != reason.TokenMissing ||
			set.CanPublish("chat.rooms.a", "", false) != reason.TokenMissing ||
			!TokenAllowsSpaced(pats, "user.42.inbox", "42") ||
			!ValidTopic("user.42.inbox") {
			t.Fatal("wrong verdict")
		}
	})
	if n != 0 {
		t.Fatalf("%v allocs per run", n)
	}
}

func ExampleSet_CanSubscribe() {
	set, err := Compile([]Rule{
		{Match: "news", Subscribe: Public},
		{Match: "user.{userId}.**", Subscribe: Token},
	}, Deny)
	if err != nil {
		panic(err)
	}
	fmt.Println(set.CanSubscribe("news", "", false))
	fmt.Println(set.CanSubscribe("user.42.inbox", "42", true))
	fmt.Println(set.CanSubscribe("user.42.inbox", "43", true))
	fmt.Println(set.CanSubscribe("sport", "42", true))
	// Output:
	// none
	// none
	// topic_other_user
	// topic_denied
}

func BenchmarkMatch(b *testing.B) {
	set, err := Compile(benchRules(), Deny)
	if err != nil {
		b.Fatal(err)
	}
	for _, topic := range []string{"user.42.inbox", "public.news.eu", "nothing.matches.here"} {
		b.Run(topic, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				set.MatchParams(topic)
			}
		})
	}
}

func BenchmarkCanSubscribe(b *testing.B) {
	set, err := Compile(benchRules(), Deny)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		set.CanSubscribe("user.42.inbox", "42", true)
	}
}

func BenchmarkTokenAllowsSpaced(b *testing.B) {
	pats := "news.* chat.rooms.* user.{userId}.**"
	b.ReportAllocs()
	for b.Loop() {
		TokenAllowsSpaced(pats, "user.42.inbox", "42")
	}
}

func TestValidUserID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"42", true},
		{"alice", true},
		{"alice_smith-2@example:1", true},
		{"", false},
		{"alice.smith", false}, // the topic separator: would let "alice" read alice.smith's topics
		{"*", false},
		{"**", false},
		{"{userId}", false},
		{"a b", false},
		{"a\x00", false},
		{strings.Repeat("a", MaxUserIDLen), true},
		{strings.Repeat("a", MaxUserIDLen+1), false},
	} {
		if got := ValidUserID(tc.id); got != tc.want {
			t.Errorf("ValidUserID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}
