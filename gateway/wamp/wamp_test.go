package wamp

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

func TestParseV1(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want V1Message
		kind ErrKind // 0: success
	}{
		{"prefix", `[1,"app","http://example.com/"]`, V1Message{Type: V1Prefix, Prefix: "app", Topic: "http://example.com/"}, 0},
		{"call", `[2,"c1","app:add",1,2]`, V1Message{Type: V1Call, CallID: "c1", Topic: "app:add"}, 0},
		{"subscribe", `[5,"news"]`, V1Message{Type: V1Subscribe, Topic: "news"}, 0},
		{"subscribe seed", `[5,"{\"topic\":\"news\"}"]`, V1Message{Type: V1Subscribe, Topic: `{"topic":"news"}`}, 0},
		{"unsubscribe", ` [6, "news"] `, V1Message{Type: V1Unsubscribe, Topic: "news"}, 0},
		{"publish", `[7,"news",{"a":1}]`, V1Message{Type: V1Publish, Topic: "news", Event: json.RawMessage(`{"a":1}`)}, 0},
		{"publish excludeMe", `[7,"news",1,true]`, V1Message{Type: V1Publish, Topic: "news", Event: json.RawMessage(`1`), ExcludeMe: true}, 0},
		{"publish excludeMe false", `[7,"news",1,false]`, V1Message{Type: V1Publish, Topic: "news", Event: json.RawMessage(`1`)}, 0},
		{"publish exclude", `[7,"news",1,["s1","s2"]]`, V1Message{Type: V1Publish, Topic: "news", Event: json.RawMessage(`1`), Exclude: []string{"s1", "s2"}}, 0},
		{"publish eligible", `[7,"news",1,[],["s3"]]`, V1Message{Type: V1Publish, Topic: "news", Event: json.RawMessage(`1`), Exclude: []string{}, Eligible: []string{"s3"}, HasEligible: true}, 0},
		{"not JSON", `[5,"news"`, V1Message{}, ErrJSON},
		{"not an array", `{"a":1}`, V1Message{}, ErrShape},
		{"empty array", `[]`, V1Message{}, ErrShape},
		{"type not a number", `["5","news"]`, V1Message{}, ErrShape},
		{"type fraction", `[5.0,"news"]`, V1Message{}, ErrShape},
		{"unknown type", `[99,"x"]`, V1Message{}, ErrUnknownType},
		{"server type", `[8,"news",1]`, V1Message{}, ErrUnknownType},
		{"topic not a string", `[5,5]`, V1Message{}, ErrShape},
		{"subscribe extra", `[5,"a","b"]`, V1Message{}, ErrShape},
		{"publish too short", `[7,"news"]`, V1Message{}, ErrShape},
		{"publish too long", `[7,"news",1,[],[],[]]`, V1Message{}, ErrShape},
		{"publish bad 4th", `[7,"news",1,"x"]`, V1Message{}, ErrShape},
		{"publish exclude numbers", `[7,"news",1,[1,2]]`, V1Message{}, ErrShape},
		{"call id number", `[2,1,"p"]`, V1Message{}, ErrShape},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := ParseV1([]byte(c.in))
			if c.kind != 0 {
				pe, ok := err.(*ParseError)
				if !ok || pe.Kind != c.kind {
					t.Fatalf("ParseV1(%s) = %+v, %v; want error kind %d", c.in, m, err, c.kind)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseV1(%s): %v", c.in, err)
			}
			mj, _ := json.Marshal(m)
			wj, _ := json.Marshal(c.want)
			if string(mj) != string(wj) {
				t.Fatalf("ParseV1(%s) = %s, want %s", c.in, mj, wj)
			}
		})
	}
}

func TestParseErrorsNeverQuoteInput(t *testing.T) {
	secret := "SECRETTOKENSECRETTOKEN"
	for _, in := range []string{
		`[5,` + secret + `]`, `[99,"` + secret + `"]`, `[7,"` + secret + `",1,"` + secret + `"]`,
	} {
		if _, err := ParseV1([]byte(in)); err == nil || strings.Contains(err.Error(), secret) {
			t.Fatalf("ParseV1(%s) error %v", in, err)
		}
	}
	for _, s := range []string{`{"topic":1,"token":"` + secret + `"}`, `{"topic":"a","x":"` + secret + `"}`, `{"` + secret} {
		if _, err := ParseSeed(s); err == nil || strings.Contains(err.Error(), secret) {
			t.Fatalf("ParseSeed(%s) error %v", s, err)
		}
	}
}

func TestPrefixes(t *testing.T) {
	var p Prefixes
	if got := p.Expand("app:news"); got != "app:news" {
		t.Fatalf("empty table expanded to %q", got)
	}
	if err := p.Set("app", "sport."); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"app:news":        "sport.news", // plain concatenation
		"app:":            "sport.",
		"other:news":      "other:news",
		"news":            "news",
		":news":           ":news",
		"http://x/y":      "http://x/y",
		`{"topic":"a:b"}`: `{"topic":"a:b"}`,
	}
	for in, want := range cases {
		if got := p.Expand(in); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
	if err := p.Set("a:b", "x"); err == nil {
		t.Error("prefix with ':' accepted")
	}
	if err := p.Set("", "x"); err == nil {
		t.Error("empty prefix accepted")
	}
	if err := p.Set("long", strings.Repeat("u", MaxURIBytes+1)); err == nil {
		t.Error("uri over the cap accepted")
	}
	for i := p.Len(); i < MaxPrefixes; i++ {
		if err := p.Set("p"+strconv.Itoa(i), "u"); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Set("one-too-many", "u"); err == nil {
		t.Error("prefix over MaxPrefixes accepted")
	}
	if err := p.Set("app", "replaced."); err != nil {
		t.Errorf("replacing a prefix in a full table: %v", err)
	}
}

func TestParseSeed(t *testing.T) {
	cases := []struct {
		name, in string
		want     Seed
		kind     ErrKind
	}{
		{"full", `{"topic":"news","userId":"42","token":"tok"}`, Seed{Topic: "news", UserID: json.RawMessage(`"42"`), Token: "tok"}, 0},
		{"integer user", `{"topic":"news","userId":42}`, Seed{Topic: "news", UserID: json.RawMessage(`42`)}, 0},
		{"topic only", `{"topic":"news"}`, Seed{Topic: "news"}, 0},
		{"null token", `{"topic":"news","token":null}`, Seed{Topic: "news"}, 0},
		{"not JSON", `{"topic":`, Seed{}, ErrJSON},
		{"not an object", `{"topic":"a"} x`, Seed{}, ErrJSON},
		{"no topic", `{"userId":"1"}`, Seed{}, ErrShape},
		{"extra key", `{"topic":"a","op":"publish"}`, Seed{}, ErrShape},
		{"topic not a string", `{"topic":["a"]}`, Seed{}, ErrShape},
		{"user an object", `{"topic":"a","userId":{}}`, Seed{}, ErrShape},
		{"too long", `{"topic":"a","token":"` + strings.Repeat("t", MaxSeedBytes) + `"}`, Seed{}, ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !IsSeed(c.in) {
				t.Fatal("IsSeed false")
			}
			sd, err := ParseSeed(c.in)
			if c.kind != 0 {
				if pe, ok := err.(*ParseError); !ok || pe.Kind != c.kind {
					t.Fatalf("got %+v, %v; want kind %d", sd, err, c.kind)
				}
				return
			}
			if err != nil || sd.Topic != c.want.Topic || string(sd.UserID) != string(c.want.UserID) || sd.Token != c.want.Token {
				t.Fatalf("got %+v, %v; want %+v", sd, err, c.want)
			}
		})
	}
}

func TestEncodeV1(t *testing.T) {
	cases := []struct{ got, want string }{
		{string(AppendV1Welcome(nil, "b-1", "portcullis/1.0")), `[0,"b-1",1,"portcullis/1.0"]`},
		{string(AppendV1Event(nil, `{"topic":"news"}`, []byte(`{"a":1}`))), `[8,"{\"topic\":\"news\"}",{"a":1}]`},
		{string(AppendV1CallError(nil, "c1", ErrorUnsupported, "no")), `[4,"c1","http://portcullis.dev/error#unsupported","no"]`},
		{string(AppendV1EventPrefix(nil, "news")), `[8,"news",`},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %s, want %s", c.got, c.want)
		}
	}
	// The EVENT topic decodes to exactly the subscribed string.
	raw := "{\"topic\":\"news\",\"token\":\"a/b+c=\u2028\"}"
	var ev []any
	if err := json.Unmarshal(AppendV1Event(nil, raw, []byte("1")), &ev); err != nil || ev[1] != raw {
		t.Fatalf("EVENT topic %q, %v", ev, err)
	}
}

func TestParseV2(t *testing.T) {
	ok := []struct {
		name, in string
		check    func(m V2Message) bool
	}{
		{"hello", `[1,"realm1",{"roles":{"subscriber":{}},"authmethods":["ticket"],"authid":"42"}]`, func(m V2Message) bool {
			return m.Type == V2Hello && m.Realm == "realm1" && m.ClientRole && m.AuthID == "42" && len(m.AuthMethods) == 1
		}},
		{"hello no role", `[1,"realm1",{"roles":{"broker":{}}}]`, func(m V2Message) bool { return !m.ClientRole }},
		{"authenticate", `[5,"tok",{}]`, func(m V2Message) bool { return m.Type == V2Authenticate && m.Signature == "tok" }},
		{"goodbye", `[6,{},"wamp.close.system_shutdown"]`, func(m V2Message) bool { return m.Type == V2Goodbye && m.Reason == "wamp.close.system_shutdown" }},
		{"subscribe", `[32,713845233,{},"news"]`, func(m V2Message) bool {
			return m.Type == V2Subscribe && m.Request == 713845233 && m.Topic == "news" && m.Match == ""
		}},
		{"subscribe exact", `[32,1,{"match":"exact"},"news"]`, func(m V2Message) bool { return m.Match == "" }},
		{"subscribe prefix", `[32,1,{"match":"prefix"},"news"]`, func(m V2Message) bool { return m.Match == "prefix" }},
		{"request id 2^53", `[32,9007199254740992,{},"news"]`, func(m V2Message) bool { return m.Request == MaxID }},
		{"unsubscribe", `[34,2,5512315355]`, func(m V2Message) bool { return m.Type == V2Unsubscribe && m.Subscription == 5512315355 }},
		{"publish", `[16,3,{},"news"]`, func(m V2Message) bool { return m.Type == V2Publish && m.ExcludeMe && !m.Acknowledge && m.Args == nil }},
		{"publish full", `[16,3,{"acknowledge":true,"exclude_me":false,"exclude":[7],"eligible":[8,9]},"news",[1],{"k":2}]`, func(m V2Message) bool {
			return m.Acknowledge && !m.ExcludeMe && len(m.Exclude) == 1 && m.HasEligible && len(m.Eligible) == 2 &&
				string(m.Args) == "[1]" && string(m.Kwargs) == `{"k":2}`
		}},
		{"call", `[48,7,{},"com.add",[1,2]]`, func(m V2Message) bool { return m.Type == V2Call && m.Request == 7 }},
	}
	for _, c := range ok {
		t.Run(c.name, func(t *testing.T) {
			m, err := ParseV2([]byte(c.in))
			if err != nil || !c.check(m) {
				t.Fatalf("ParseV2(%s) = %+v, %v", c.in, m, err)
			}
		})
	}
	bad := []struct {
		name, in string
		kind     ErrKind
	}{
		{"not JSON", `[1,`, ErrJSON},
		{"object", `{}`, ErrShape},
		{"unknown", `[99]`, ErrUnknownType},
		{"server welcome", `[2,1,{}]`, ErrUnknownType},
		{"event", `[36,1,2,{}]`, ErrUnknownType},
		{"hello details not object", `[1,"r",[]]`, ErrShape},
		{"hello realm number", `[1,1,{}]`, ErrShape},
		{"hello roles list", `[1,"r",{"roles":[]}]`, ErrShape},
		{"request id over 2^53", `[32,9007199254740993,{},"news"]`, ErrShape},
		{"request id negative", `[32,-1,{},"news"]`, ErrShape},
		{"request id float", `[32,1.5,{},"news"]`, ErrShape},
		{"subscription zero", `[34,1,0]`, ErrShape},
		{"subscribe topic number", `[32,1,{},5]`, ErrShape},
		{"subscribe match number", `[32,1,{"match":1},"a"]`, ErrShape},
		{"publish args object", `[16,1,{},"a",{}]`, ErrShape},
		{"publish kwargs list", `[16,1,{},"a",[],[]]`, ErrShape},
		{"publish exclude zero", `[16,1,{"exclude":[0]},"a"]`, ErrShape},
		{"publish ack string", `[16,1,{"acknowledge":"yes"},"a"]`, ErrShape},
		{"goodbye reason number", `[6,{},1]`, ErrShape},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			m, err := ParseV2([]byte(c.in))
			if pe, ok := err.(*ParseError); !ok || pe.Kind != c.kind {
				t.Fatalf("ParseV2(%s) = %+v, %v; want kind %d", c.in, m, err, c.kind)
			}
		})
	}
}

func TestV2Data(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{`[16,1,{},"a"]`, "null", true},
		{`[16,1,{},"a",[{"x":1}]]`, `{"x":1}`, true},
		{`[16,1,{},"a",[],{"k":1}]`, `{"k":1}`, true},
		{`[16,1,{},"a",[1],{}]`, `1`, true},
		{`[16,1,{},"a",[1,2]]`, "", false},
		{`[16,1,{},"a",[1],{"k":1}]`, "", false},
	}
	for _, c := range cases {
		m, err := ParseV2([]byte(c.in))
		if err != nil {
			t.Fatal(err)
		}
		d, ok := m.Data()
		if ok != c.ok || (ok && string(d) != c.want) {
			t.Errorf("%s: Data() = %s, %v; want %s, %v", c.in, d, ok, c.want, c.ok)
		}
	}
}

func TestEncodeV2(t *testing.T) {
	cases := []struct{ got, want string }{
		{string(AppendV2Challenge(nil, "ticket")), `[4,"ticket",{}]`},
		{string(AppendV2Abort(nil, ErrAuthenticationFailed, "no")), `[3,{"message":"no"},"wamp.error.authentication_failed"]`},
		{string(AppendV2Goodbye(nil, CloseGoodbyeAndOut)), `[6,{},"wamp.close.goodbye_and_out"]`},
		{string(AppendV2Error(nil, V2Subscribe, 7, ErrNotAuthorized)), `[8,32,7,{},"wamp.error.not_authorized"]`},
		{string(AppendV2Subscribed(nil, 7, 9007199254740992)), `[33,7,9007199254740992]`},
		{string(AppendV2Unsubscribed(nil, 8)), `[35,8]`},
		{string(AppendV2Published(nil, 9, 3)), `[17,9,3]`},
		{string(AppendV2Event(nil, 5, 6, []byte(`{"a":1}`))), `[36,5,6,{},[{"a":1}]]`},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %s, want %s", c.got, c.want)
		}
	}
	var w []any
	if err := json.Unmarshal(AppendV2Welcome(nil, 12, "42", "user", "portcullis/x"), &w); err != nil {
		t.Fatal(err)
	}
	d := w[2].(map[string]any)
	if w[0] != 2.0 || w[1] != 12.0 || d["authid"] != "42" || d["authmethod"] != "ticket" {
		t.Fatalf("WELCOME %v", w)
	}
	if _, ok := d["roles"].(map[string]any)["broker"]; !ok {
		t.Fatalf("WELCOME without roles.broker: %v", w)
	}
}

func TestIDs(t *testing.T) {
	x := NewIDs()
	seen := map[ID]bool{}
	for _, conn := range []uint64{0, 1, 2, 3, 1000, 1 << 40, 1<<53 - 1} {
		s := x.Session(conn)
		if !s.Valid() {
			t.Fatalf("Session(%d) = %d, out of [1, 2^53]", conn, s)
		}
		if seen[s] {
			t.Fatalf("Session(%d) = %d collides", conn, s)
		}
		seen[s] = true
		if back, ok := x.Conn(s); !ok || back != conn {
			t.Fatalf("Conn(Session(%d)) = %d, %v", conn, back, ok)
		}
	}
	if _, ok := x.Conn(0); ok {
		t.Fatal("Conn(0) accepted")
	}
	if a, b := x.Subscription("news"), x.Subscription("news"); a != b || a == x.Subscription("news2") {
		t.Fatal("subscription ids are not a function of the topic")
	}
	if !x.Subscription("news").Valid() {
		t.Fatal("subscription id out of range")
	}
	for i := 0; i < 1000; i++ {
		if !NewPublicationID().Valid() {
			t.Fatal("publication id out of range")
		}
	}
	if inverse(mul1)*mul1&mask53 != 1 || inverse(mul2)*mul2&mask53 != 1 {
		t.Fatal("inverse")
	}
}

func TestValidURI(t *testing.T) {
	for s, want := range map[string]bool{
		"realm1": true, "com.example.news": true, "a.b-c.d_e": true,
		"": false, "a..b": false, ".a": false, "a.": false, "a b": false, "a#b": false,
	} {
		if ValidURI(s) != want {
			t.Errorf("ValidURI(%q) = %v", s, !want)
		}
	}
}

func FuzzParseV1(f *testing.F) {
	for _, s := range []string{`[1,"a","b"]`, `[2,"c","p",1]`, `[5,"news"]`, `[6,"news"]`, `[7,"n",{"a":1},["x"],["y"]]`,
		`[7,"n",1,true]`, `[5,"{\"topic\":\"news\",\"userId\":1,\"token\":\"t\"}"]`, `[`, `{}`, `[99]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseV1(b)
		if err != nil {
			if _, ok := err.(*ParseError); !ok {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		if m.Type == V1Publish && !json.Valid(m.Event) {
			t.Fatalf("PUBLISH event not valid JSON: %q", m.Event)
		}
		if m.Type != V1Prefix && m.Type != V1Call && m.Type != V1Subscribe && m.Type != V1Unsubscribe && m.Type != V1Publish {
			t.Fatalf("accepted type %d", m.Type)
		}
		if IsSeed(m.Topic) {
			if sd, err := ParseSeed(m.Topic); err == nil && sd.UserID != nil && !json.Valid(sd.UserID) {
				t.Fatalf("seed userId not JSON: %q", sd.UserID)
			}
		}
		// What the server echoes decodes to what was sent.
		var ev []any
		if err := json.Unmarshal(AppendV1Event(nil, m.Topic, []byte("0")), &ev); err != nil {
			t.Fatalf("EVENT not JSON: %v", err)
		}
	})
}

func FuzzParseV2(f *testing.F) {
	for _, s := range []string{`[1,"r",{"roles":{"subscriber":{}},"authmethods":["ticket"],"authid":"a"}]`, `[5,"t",{}]`,
		`[6,{},"wamp.close.close_realm"]`, `[32,1,{},"news"]`, `[34,1,2]`, `[16,1,{"acknowledge":true,"exclude":[1]},"n",[1],{"a":1}]`,
		`[48,1,{},"p"]`, `[3,{},"x"]`, `[`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseV2(b)
		if err != nil {
			if _, ok := err.(*ParseError); !ok {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		if m.Request > MaxID {
			t.Fatalf("request id %d over 2^53", m.Request)
		}
		if m.Type == V2Unsubscribe && !m.Subscription.Valid() {
			t.Fatalf("subscription id %d", m.Subscription)
		}
		for _, id := range append(m.Exclude, m.Eligible...) {
			if !id.Valid() {
				t.Fatalf("session id %d", id)
			}
		}
		if d, ok := m.Data(); ok && !json.Valid(d) {
			t.Fatalf("data not JSON: %q", d)
		}
	})
}
