package schema

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

func newValidator(t testing.TB, l Limits) *Validator {
	t.Helper()
	v, err := New(l)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

const tok = "AbCdEfGhIjKlMnOpQrStUvWxYz012345" // 32 chars, store-token shaped

func TestCheckAccepts(t *testing.T) {
	v := newValidator(t, Limits{})
	jwtLike := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJlX2J5dGVz"
	cases := []struct {
		name string
		raw  string
		want Message
	}{
		{"subscribe full", `{"op":"subscribe","id":1,"topic":"news","userId":"42","token":"` + tok + `"}`,
			Message{Op: "subscribe", ID: 1, HasID: true, Topic: "news", UserID: "42", Token: tok}},
		{"subscribe public, no id", `{"op":"subscribe","topic":"chat.lobby"}`,
			Message{Op: "subscribe", Topic: "chat.lobby"}},
		{"subscribe integer userId", `{"op":"subscribe","topic":"user.42.inbox","userId":42,"token":"` + tok + `"}`,
			Message{Op: "subscribe", Topic: "user.42.inbox", UserID: "42", Token: tok}},
		{"subscribe userId 1e2 normalised", `{"op":"subscribe","topic":"a","userId":1e2}`,
			Message{Op: "subscribe", Topic: "a", UserID: "100"}},
		{"subscribe JWT token", `{"op":"subscribe","topic":"a","userId":"u@x_io","token":"` + jwtLike + `"}`,
			Message{Op: "subscribe", Topic: "a", UserID: "u@x_io", Token: jwtLike}},
		{"subscribe whitespace and key order", " {\n\t\"topic\" : \"tenant:acme.orders\" ,\r\n \"op\":\"subscribe\" } \n",
			Message{Op: "subscribe", Topic: "tenant:acme.orders"}},
		{"subscribe escaped topic", `{"op":"subscribe","topic":"\u006eews"}`,
			Message{Op: "subscribe", Topic: "news"}},
		{"subscribe id 1.0 is an integer", `{"op":"subscribe","topic":"a","id":1.0}`,
			Message{Op: "subscribe", Topic: "a", ID: 1, HasID: true}},
		{"subscribe id max", `{"op":"subscribe","topic":"a","id":9007199254740991}`,
			Message{Op: "subscribe", Topic: "a", ID: MaxID, HasID: true}},
		{"subscribe topic 200", `{"op":"subscribe","topic":"` + strings.Repeat("t", 200) + `"}`,
			Message{Op: "subscribe", Topic: strings.Repeat("t", 200)}},
		{"unsubscribe", `{"op":"unsubscribe","id":2,"topic":"news"}`,
			Message{Op: "unsubscribe", ID: 2, HasID: true, Topic: "news"}},
		{"publish object", `{"op":"publish","id":3,"topic":"chat.lobby","data":{"text":"hi","n":[1,2,{"x":null}]}}`,
			Message{Op: "publish", ID: 3, HasID: true, Topic: "chat.lobby", Data: json.RawMessage(`{"text":"hi","n":[1,2,{"x":null}]}`)}},
		{"publish scalar", `{"op":"publish","topic":"a","data":-1.5e3}`,
			Message{Op: "publish", Topic: "a", Data: json.RawMessage(`-1.5e3`)}},
		{"publish null", `{"op":"publish","topic":"a","data":null}`,
			Message{Op: "publish", Topic: "a", Data: json.RawMessage(`null`)}},
		{"ping", `{"op":"ping","id":4}`, Message{Op: "ping", ID: 4, HasID: true}},
		{"ping id 0", `{"op":"ping","id":0}`, Message{Op: "ping", ID: 0, HasID: true}},
		{"ping bare", `{"op":"ping"}`, Message{Op: "ping"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, vio := v.Check([]byte(tc.raw))
			if vio != nil {
				t.Fatalf("Check: %+v", vio)
			}
			if !reflect.DeepEqual(m, tc.want) {
				t.Fatalf("got %+v\nwant %+v", m, tc.want)
			}
		})
	}
}

func TestCheckRefuses(t *testing.T) {
	v := newValidator(t, Limits{MaxBytes: 4096, MaxDepth: 4})
	cases := []struct {
		name    string
		raw     string
		reason  reason.Reason
		pointer string
		keyword string
		msg     string // substring of the client text
	}{
		// missing field
		{"subscribe without topic", `{"op":"subscribe","id":1}`, reason.SchemaViolation, "/topic", "/required", "missing field: topic"},
		{"publish without data", `{"op":"publish","topic":"a"}`, reason.SchemaViolation, "/data", "/required", "missing field: data"},
		{"no op", `{"id":1,"topic":"a"}`, reason.SchemaViolation, "/op", "/required", "missing field: op"},
		// extra field
		{"subscribe extra field", `{"op":"subscribe","topic":"a","admin":true}`, reason.SchemaViolation, "/admin", "/additionalProperties", "unexpected field in subscribe message"},
		{"ping with topic", `{"op":"ping","topic":"a"}`, reason.SchemaViolation, "/topic", "/additionalProperties", "unexpected field in ping message"},
		{"unsubscribe with token", `{"op":"unsubscribe","topic":"a","token":"` + tok + `"}`, reason.SchemaViolation, "/token", "/additionalProperties", "unexpected field"},
		{"case-folded key", `{"op":"subscribe","Topic":"a","topic":"b"}`, reason.SchemaViolation, "/Topic", "/additionalProperties", "unexpected field"},
		// wrong type
		{"topic number", `{"op":"subscribe","topic":5}`, reason.SchemaViolation, "/topic", "/properties/topic/type", "topic must be of type string"},
		{"id string", `{"op":"ping","id":"4"}`, reason.SchemaViolation, "/id", "/properties/id/type", "id must be of type integer"},
		{"id fraction", `{"op":"ping","id":1.5}`, reason.SchemaViolation, "/id", "/properties/id/type", "id must be of type integer"},
		{"userId bool", `{"op":"subscribe","topic":"a","userId":true}`, reason.SchemaViolation, "/userId", "/properties/userId/type", "userId must be of type integer or string"},
		{"op number", `{"op":7}`, reason.SchemaViolation, "/op", "/properties/op/type", "op must be of type string"},
		{"array message", `[{"op":"ping"}]`, reason.SchemaViolation, "", "/type", "message must be of type object"},
		{"string message", `"ping"`, reason.SchemaViolation, "", "/type", "message must be of type object"},
		// ranges
		{"id negative", `{"op":"ping","id":-1}`, reason.SchemaViolation, "/id", "/properties/id/minimum", "id must be at least 0"},
		{"id 2^53", `{"op":"ping","id":9007199254740992}`, reason.SchemaViolation, "/id", "/properties/id/maximum", "id must be at most 9007199254740991"},
		{"id huge exponent", `{"op":"ping","id":1e999999}`, reason.SchemaViolation, "/id", "", "id is not a number in range"},
		{"id beyond big.Rat", `{"op":"ping","id":1e9999999}`, reason.SchemaViolation, "/id", "", "id is not a number in range"},
		{"userId beyond big.Rat", `{"op":"subscribe","topic":"a","userId":1e9999999}`, reason.SchemaViolation, "/userId", "", "userId is not a number in range"},
		{"userId negative", `{"op":"subscribe","topic":"a","userId":-3}`, reason.SchemaViolation, "/userId", "/properties/userId/minimum", "userId must be at least 0"},
		// too long / bad pattern
		{"topic too long", `{"op":"subscribe","topic":"` + strings.Repeat("t", 201) + `"}`, reason.SchemaViolation, "/topic", "/properties/topic/maxLength", "topic must be at most 200 characters"},
		{"topic empty", `{"op":"subscribe","topic":""}`, reason.SchemaViolation, "/topic", "/properties/topic/minLength", "topic must be at least 1 characters"},
		{"topic double dot", `{"op":"subscribe","topic":"a..b"}`, reason.SchemaViolation, "/topic", "/properties/topic/pattern", "dot-separated segments"},
		{"topic wildcard", `{"op":"subscribe","topic":"chat.*"}`, reason.SchemaViolation, "/topic", "/properties/topic/pattern", "dot-separated segments"},
		{"topic newline", `{"op":"subscribe","topic":"a\nb"}`, reason.SchemaViolation, "/topic", "/properties/topic/pattern", "dot-separated segments"},
		{"userId bad pattern", `{"op":"subscribe","topic":"a","userId":"a b"}`, reason.SchemaViolation, "/userId", "/properties/userId/pattern", "userId must be 1-128 characters"},
		{"userId slash", `{"op":"subscribe","topic":"a","userId":"../42"}`, reason.SchemaViolation, "/userId", "/properties/userId/pattern", "userId must be"},
		{"userId too long", `{"op":"subscribe","topic":"a","userId":"` + strings.Repeat("u", 129) + `"}`, reason.SchemaViolation, "/userId", "/properties/userId/maxLength", "userId must be at most 128 characters"},
		{"userId empty", `{"op":"subscribe","topic":"a","userId":""}`, reason.SchemaViolation, "/userId", "/properties/userId/minLength", "userId must be at least 1 characters"},
		{"token too short", `{"op":"subscribe","topic":"a","token":"short"}`, reason.SchemaViolation, "/token", "/properties/token/minLength", "token must be at least 16 characters"},
		{"token bad charset", `{"op":"subscribe","topic":"a","token":"` + strings.Repeat("x", 20) + ` ;"}`, reason.SchemaViolation, "/token", "/properties/token/pattern", "token must be 16-2048 characters"},
		// too deep, too large, not JSON, unknown op
		{"too deep", `{"op":"publish","topic":"a","data":[[[[1]]]]}`, reason.TooDeep, "", "", "nesting deeper than 4"},
		{"too deep even if not JSON", `[[[[[`, reason.TooDeep, "", "", "nesting deeper than 4"},
		{"brackets in strings do not count", `{"op":"publish","topic":"a","data":"[[[[[[{{{{"`, reason.BadJSON, "", "", "not valid JSON"},
		{"too large", `{"op":"publish","topic":"a","data":"` + strings.Repeat("x", 4096) + `"}`, reason.MessageTooLarge, "", "", "larger than 4096 bytes"},
		{"not JSON", `{"op":"ping",}`, reason.BadJSON, "", "", "not valid JSON"},
		{"empty", ``, reason.BadJSON, "", "", "not valid JSON"},
		{"trailing garbage", `{"op":"ping"} x`, reason.BadJSON, "", "", "not valid JSON"},
		{"two values", `{"op":"ping"}{"op":"ping"}`, reason.BadJSON, "", "", "not valid JSON"},
		{"unknown op", `{"op":"shutdown","id":9}`, reason.UnknownOp, "/op", "/properties/op/enum", "unknown op"},
		{"op case", `{"op":"Subscribe","topic":"a"}`, reason.UnknownOp, "/op", "/properties/op/enum", "unknown op"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, vio := v.Check([]byte(tc.raw))
			if vio == nil {
				t.Fatal("Check accepted")
			}
			if vio.Reason != tc.reason || vio.Pointer != tc.pointer || vio.Keyword != tc.keyword {
				t.Fatalf("got reason=%s pointer=%q keyword=%q, want %s %q %q",
					vio.Reason, vio.Pointer, vio.Keyword, tc.reason, tc.pointer, tc.keyword)
			}
			if !strings.Contains(vio.Message, tc.msg) {
				t.Fatalf("message %q does not contain %q", vio.Message, tc.msg)
			}
		})
	}
}

// TestViolationNeverEchoesPayload plants a marker in every place a payload
// can carry text and checks the client text never contains it.
func TestViolationNeverEchoesPayload(t *testing.T) {
	v := newValidator(t, Limits{MaxBytes: 8192})
	const mk = "MARKERx9"
	raws := []string{
		`{"op":"subscribe","topic":"` + mk + `..x"}`,
		`{"op":"subscribe","topic":"` + mk + strings.Repeat("t", 300) + `"}`,
		`{"op":"subscribe","topic":"a","userId":"` + mk + ` <script>"}`,
		`{"op":"subscribe","topic":"a","token":"` + mk + ` ' OR 1=1"}`,
		`{"op":"subscribe","topic":"a","` + mk + `":1}`,
		`{"op":"` + mk + `"}`,
		`{"op":"ping","id":"` + mk + `"}`,
		`{"op":"publish","topic":"a","data":"` + mk + `","extra":"` + mk + `"}`,
		`{"op":"subscribe","topic":["` + mk + `"]}`,
		`{"op":"subscribe","topic":"` + mk + `"`,
		`"` + mk + `"`,
		`{"op":"ping","id":1e999999,"` + mk + `":0}`,
		`{"op":"publish","topic":"a","data":"` + strings.Repeat(mk, 2000) + `"}`,
	}
	for _, raw := range raws {
		_, vio := v.Check([]byte(raw))
		if vio == nil {
			t.Fatalf("accepted %s", raw)
		}
		if strings.Contains(vio.Message, mk) || strings.Contains(vio.Keyword, mk) {
			t.Errorf("violation echoes the payload: %+v (input %s)", vio, raw)
		}
	}
}

// TestPointerSanitized: an unexpected key is named in Pointer (audit and
// client need the field), but capped and stripped of non-printable bytes.
func TestPointerSanitized(t *testing.T) {
	v := newValidator(t, Limits{})
	long := strings.Repeat("k", 300)
	_, vio := v.Check([]byte(`{"op":"ping","` + long + `":1}`))
	if vio == nil || vio.Pointer != "/"+long[:maxPointerKey] {
		t.Fatalf("long key: %+v", vio)
	}
	_, vio = v.Check([]byte(`{"op":"ping","a\u001b[31mb/c~":1}`))
	if vio == nil || vio.Pointer != "/a?[31mb~1c~0" {
		t.Fatalf("control key: %+v", vio)
	}
	_, vio = v.Check([]byte(`{"op":"ping","é":1}`))
	if vio == nil || vio.Pointer != "/??" {
		t.Fatalf("non-ASCII key: %+v", vio)
	}
}

// TestViolationKeepsID: the gateway echoes id in its error reply.
func TestViolationKeepsID(t *testing.T) {
	v := newValidator(t, Limits{})
	m, vio := v.Check([]byte(`{"op":"subscribe","id":77,"topic":"a..b"}`))
	if vio == nil || !m.HasID || m.ID != 77 || m.Op != "subscribe" {
		t.Fatalf("got %+v %+v", m, vio)
	}
	m, vio = v.Check([]byte(`{"op":"nope","id":78}`))
	if vio == nil || vio.Reason != reason.UnknownOp || !m.HasID || m.ID != 78 {
		t.Fatalf("got %+v %+v", m, vio)
	}
	m, vio = v.Check([]byte(`{"op":"ping","id":-5}`))
	if vio == nil || m.HasID {
		t.Fatalf("an invalid id must not be echoed: %+v %+v", m, vio)
	}
}

// TestDeterministicChoice: several failures in one message are reported
// the same way every time, whatever the map order inside the library.
func TestDeterministicChoice(t *testing.T) {
	v := newValidator(t, Limits{})
	raw := []byte(`{"op":"subscribe","topic":"a..b","userId":"x y","id":1.5,"zz":1,"aa":2}`)
	_, first := v.Check(raw)
	if first == nil || first.Pointer != "/aa" || first.Keyword != "/additionalProperties" {
		t.Fatalf("got %+v", first)
	}
	for i := 0; i < 50; i++ {
		_, again := v.Check(raw)
		if *again != *first {
			t.Fatalf("run %d: %+v, first %+v", i, again, first)
		}
	}
}

func TestLimitsDefaults(t *testing.T) {
	v := newValidator(t, Limits{})
	if got := v.Limits(); got.MaxBytes != DefaultMaxBytes || got.MaxDepth != DefaultMaxDepth {
		t.Fatalf("defaults: %+v", got)
	}
	deep := func(n int) []byte {
		return []byte(`{"op":"publish","topic":"a","data":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `}`)
	}
	if _, vio := v.Check(deep(DefaultMaxDepth)); vio != nil {
		t.Fatalf("depth %d refused: %+v", DefaultMaxDepth, vio)
	}
	if _, vio := v.Check(deep(DefaultMaxDepth + 1)); vio == nil || vio.Reason != reason.TooDeep {
		t.Fatalf("depth %d: %+v", DefaultMaxDepth+1, vio)
	}
}

func TestDepthWithin(t *testing.T) {
	cases := []struct {
		in   string
		max  int
		want bool
	}{
		{`{}`, 1, true},
		{`{}`, 0, false},
		{`[[]]`, 1, false},
		{`{"a":"[[[[[[["}`, 1, true},
		{`{"a":"\"[[[["}`, 1, true},
		{`{"a":"\\"}[[`, 1, false},
		{`[[]][[]]`, 2, true},
		{`"unterminated [[[[`, 1, true},
		{``, 0, true},
	}
	for _, tc := range cases {
		if got := DepthWithin([]byte(tc.in), tc.max); got != tc.want {
			t.Errorf("DepthWithin(%q, %d) = %v, want %v", tc.in, tc.max, got, tc.want)
		}
	}
}
