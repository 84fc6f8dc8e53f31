package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// schemaOnly is Check without the fast path: the reference verdict.
func (v *Validator) schemaOnly(raw []byte) (Message, *Violation) {
	if vio := v.precheck(raw); vio != nil {
		return Message{}, vio
	}
	return v.checkSchema(raw)
}

// corpus returns valid messages written the plain way (the fast path must
// take them), other valid messages, and invalid ones.
func corpus() (plain, other, invalid []string) {
	ids := []string{``, `"id":0,`, `"id":7,`, `"id":9007199254740991,`}
	users := []string{``, `"userId":"42",`, `"userId":42,`, `"userId":"a_b@c:d-e_f",`, `"userId":"` + strings.Repeat("u", 128) + `",`}
	tokens := []string{``, `"token":"` + tok + `",`, `"token":"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiI0MiJ9.c2ln~+/=",`, `"token":"` + strings.Repeat("t", 16) + `",`}
	topics := []string{`"topic":"news"`, `"topic":"user.42.inbox"`, `"topic":"tenant:acme.orders-1@x_y"`, `"topic":"` + strings.Repeat("t", 200) + `"`}
	for _, id := range ids {
		for _, u := range users {
			for _, tk := range tokens {
				for _, tp := range topics {
					plain = append(plain, `{"op":"subscribe",`+id+u+tk+tp+`}`)
				}
			}
		}
		plain = append(plain,
			`{"op":"unsubscribe",`+id+`"topic":"news"}`,
			`{"op":"publish",`+id+`"topic":"chat.lobby","data":{"text":"hi \"there\" \\ \u00e9","n":[1,-2.5e-3,true,false,null]}}`,
			`{"op":"publish",`+id+`"topic":"a","data":"[{"}`,
			`{"op":"publish",`+id+`"topic":"a","data":[]}`,
			`{"op":"publish",`+id+`"topic":"a","data":0}`,
			`{`+strings.TrimSuffix(id, ",")+strings.Repeat(",", min(len(id), 1))+`"op":"ping"}`,
		)
	}
	plain = append(plain,
		` { "op" : "subscribe" , "topic" : "a" } `,
		"{\n\t\"topic\":\"a\",\r\n\"op\":\"subscribe\"}\n",
		`{"data":{},"topic":"a","op":"publish"}`,
	)
	other = []string{
		`{"op":"subscribe","topic":"\u0061"}`,
		`{"o\u0070":"ping"}`,
		`{"op":"ping","id":1e3}`,
		`{"op":"ping","id":-0}`,
		`{"op":"ping","id":1.000}`,
		`{"op":"subscribe","topic":"a","userId":4.2e1}`,
		`{"op":"subscribe","topic":"a","topic":"b"}`,
		`{"op":"ping","op":"ping"}`,
		`{"op":"publish","topic":"a","data":1,"data":{"x":2}}`,
		`{"op":"subscribe","topic":"a","userId":"\u0034\u0032"}`,
		"{\"op\":\"publish\",\"topic\":\"a\",\"data\":\"\xff\xfe\"}",
	}
	invalid = []string{
		``, ` `, `{`, `}`, `{}`, `[]`, `null`, `1`, `"op"`, `{"op":"ping",}`, `{"op":"ping"}}`, `{"op":"ping"} {}`,
		`{"op":"ping" "id":1}`, `{"op" "ping"}`, `{op:"ping"}`, `{'op':'ping'}`, `{"op":"ping","id":01}`,
		`{"op":"ping","id":1.}`, `{"op":"ping","id":.5}`, `{"op":"ping","id":+1}`, `{"op":"ping","id":1e}`,
		`{"op":"ping","id":9007199254740992}`, `{"op":"ping","id":99999999999999999999}`, `{"op":"ping","id":-1}`,
		`{"op":"ping","id":null}`, `{"op":"ping","id":true}`, `{"op":"ping","id":"1"}`, `{"op":"ping","id":1.5}`,
		`{"op":"ping","id":1e999999}`, `{"op":"ping","id":1e9999999}`, `{"op":"subscribe","topic":"a","userId":-1e9999999}`, `{"op":"ping","id":0e999999}`, `{"op":"ping","id":1e-999999}`,
		`{"op":"subscribe"}`, `{"op":"subscribe","topic":""}`, `{"op":"subscribe","topic":"."}`,
		`{"op":"subscribe","topic":"a."}`, `{"op":"subscribe","topic":".a"}`, `{"op":"subscribe","topic":"a..b"}`,
		`{"op":"subscribe","topic":"a b"}`, `{"op":"subscribe","topic":"a/b"}`, `{"op":"subscribe","topic":"a*"}`,
		`{"op":"subscribe","topic":"` + strings.Repeat("t", 201) + `"}`, `{"op":"subscribe","topic":"é"}`,
		`{"op":"subscribe","topic":"a\u0000"}`, "{\"op\":\"subscribe\",\"topic\":\"a\x01\"}", `{"op":"subscribe","topic":"a\"}`,
		`{"op":"subscribe","topic":"a","userId":""}`, `{"op":"subscribe","topic":"a","userId":"a b"}`, `{"op":"subscribe","topic":"a","userId":"alice.smith"}`, `{"op":"subscribe","topic":"a","userId":"."}`,
		`{"op":"subscribe","topic":"a","userId":"` + strings.Repeat("u", 129) + `"}`, `{"op":"subscribe","topic":"a","userId":-1}`,
		`{"op":"subscribe","topic":"a","userId":1.5}`, `{"op":"subscribe","topic":"a","userId":null}`,
		`{"op":"subscribe","topic":"a","userId":9007199254740992}`, `{"op":"subscribe","topic":"a","userId":1e400}`,
		`{"op":"subscribe","topic":"a","token":"short"}`, `{"op":"subscribe","topic":"a","token":"` + strings.Repeat("t", 2049) + `"}`,
		`{"op":"subscribe","topic":"a","token":"` + strings.Repeat("t", 16) + `!"}`, `{"op":"subscribe","topic":"a","token":7}`,
		`{"op":"subscribe","topic":"a","data":1}`, `{"op":"subscribe","topic":"a","x":1}`, `{"op":"subscribe","topic":"a","":1}`,
		`{"op":"unsubscribe"}`, `{"op":"unsubscribe","topic":"a","userId":"1"}`, `{"op":"publish","topic":"a"}`,
		`{"op":"publish","data":1}`, `{"op":"publish","topic":"a","data":}`, `{"op":"publish","topic":"a","data":[1,}`,
		`{"op":"publish","topic":"a","data":tru}`, `{"op":"publish","topic":"a","data":"\x"}`, `{"op":"publish","topic":"a","data":[}`,
		`{"op":"publish","topic":"a","data":{"a":1]}`, `{"op":"publish","topic":"a","data":nan}`,
		`{"op":"ping","topic":"a"}`, `{"op":"pong"}`, `{"op":"PING"}`, `{"op":""}`, `{"op":null}`, `{"op":["ping"]}`,
		`{"id":1}`, `{"op":"ping","ID":1}`, "\xef\xbb\xbf{\"op\":\"ping\"}", `{"op":"ping"}` + "\x00",
	}
	return plain, other, invalid
}

func sameMessage(a, b Message) bool {
	if !bytes.Equal(a.Data, b.Data) || (a.Data == nil) != (b.Data == nil) {
		return false
	}
	a.Data, b.Data = nil, nil
	return reflect.DeepEqual(a, b)
}

// TestFastPathMatchesSchema runs the fast path and the schema path over
// the corpus: same verdict, same Message, and every plain message decided
// by the fast path (or the benchmark would measure the wrong thing).
func TestFastPathMatchesSchema(t *testing.T) {
	v := newValidator(t, Limits{})
	plain, other, invalid := corpus()
	for _, raw := range plain {
		fm, ok := fastDecode([]byte(raw))
		if !ok {
			t.Errorf("fast path deferred a plain message: %s", raw)
			continue
		}
		sm, vio := v.schemaOnly([]byte(raw))
		if vio != nil {
			t.Errorf("schema refused %s: %+v", raw, vio)
			continue
		}
		if !sameMessage(fm, sm) {
			t.Errorf("%s:\nfast   %+v\nschema %+v", raw, fm, sm)
		}
	}
	for _, raw := range other {
		if _, vio := v.schemaOnly([]byte(raw)); vio != nil {
			t.Errorf("schema refused %s: %+v", raw, vio)
		}
		compare(t, v, []byte(raw))
	}
	for _, raw := range invalid {
		if _, ok := fastDecode([]byte(raw)); ok {
			t.Errorf("fast path accepted invalid %q", raw)
		}
		if _, vio := v.schemaOnly([]byte(raw)); vio == nil {
			t.Errorf("schema accepted invalid %q", raw)
		}
		compare(t, v, []byte(raw))
	}
}

// compare checks one input: Check and the schema-only path agree, and a
// fast-path accept is a schema accept with the same Message.
func compare(t *testing.T, v *Validator, raw []byte) {
	t.Helper()
	cm, cv := v.Check(raw)
	sm, sv := v.schemaOnly(raw)
	if (cv == nil) != (sv == nil) {
		t.Fatalf("%q: Check %+v, schema %+v", raw, cv, sv)
	}
	if cv == nil && !sameMessage(cm, sm) {
		t.Fatalf("%q: Check %+v, schema %+v", raw, cm, sm)
	}
	if cv != nil && *cv != *sv {
		t.Fatalf("%q: Check %+v, schema %+v", raw, cv, sv)
	}
	if v.precheck(raw) == nil {
		if fm, ok := fastDecode(raw); ok {
			if sv != nil {
				t.Fatalf("%q: fast accepted %+v, schema refused %+v", raw, fm, sv)
			}
			if !sameMessage(fm, sm) {
				t.Fatalf("%q: fast %+v, schema %+v", raw, fm, sm)
			}
		}
	}
}

func FuzzCheck(f *testing.F) {
	plain, other, invalid := corpus()
	for _, s := range append(append(plain, other...), invalid...) {
		f.Add([]byte(s))
	}
	v, err := New(Limits{MaxBytes: 1 << 16})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		compare(t, v, raw)
	})
}

// TestFastShapesMatchSchemas ties the fast path's tables to the embedded
// schema files: allowed and required fields per op, length caps, charsets.
func TestFastShapesMatchSchemas(t *testing.T) {
	bits := map[string]uint8{"op": fOp, "id": fID, "topic": fTopic, "userId": fUserID, "token": fToken, "data": fData}
	defs := map[string]string{} // property name → its definition, identical in every file
	for _, shape := range shapes {
		b, err := schemaFiles.ReadFile("schemas/" + shape.name + ".json")
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			Required             []string                   `json:"required"`
			AdditionalProperties *bool                      `json:"additionalProperties"`
			Properties           map[string]json.RawMessage `json:"properties"`
		}
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%s: %v", shape.name, err)
		}
		if s.AdditionalProperties == nil || *s.AdditionalProperties {
			t.Errorf("%s: additionalProperties must be false", shape.name)
		}
		var allowed, required uint8
		for p, def := range s.Properties {
			bit, ok := bits[p]
			if !ok {
				t.Errorf("%s: property %s unknown to the fast path", shape.name, p)
			}
			allowed |= bit
			if p == "op" {
				if want := fmt.Sprintf(`{"const": %q}`, shape.name); string(def) != want {
					t.Errorf("%s: op is %s, want %s", shape.name, def, want)
				}
				continue
			}
			if prev, ok := defs[p]; ok && prev != string(def) {
				t.Errorf("%s: %s differs from another file: %s vs %s", shape.name, p, def, prev)
			}
			defs[p] = string(def)
		}
		for _, p := range s.Required {
			required |= bits[p]
		}
		if allowed != shape.allowed || required != shape.required {
			t.Errorf("%s: schema allows %06b requires %06b; fast path %06b %06b",
				shape.name, allowed, required, shape.allowed, shape.required)
		}
	}
	type strDef struct {
		MinLength int    `json:"minLength"`
		MaxLength int    `json:"maxLength"`
		Pattern   string `json:"pattern"`
		Maximum   int64  `json:"maximum"`
	}
	read := func(p string) strDef {
		var d strDef
		if err := json.Unmarshal([]byte(defs[p]), &d); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return d
	}
	topic, user, token, id := read("topic"), read("userId"), read("token"), read("id")
	if topic.MaxLength != maxTopicLen || user.MaxLength != maxUserIDLen || token.MinLength != minTokenLen ||
		token.MaxLength != maxTokenLen || id.Maximum != MaxID || user.Maximum != MaxID {
		t.Errorf("caps differ: topic %+v userId %+v token %+v id %+v", topic, user, token, id)
	}
	// Each charset table must admit exactly the bytes the pattern admits.
	checkSet := func(name, pattern string, set *[256]bool, sample func(c byte) string) {
		re := regexp.MustCompile(pattern)
		for c := 0; c < 256; c++ {
			if got, want := set[c], re.MatchString(sample(byte(c))); got != want {
				t.Errorf("%s: byte %#x fast=%v schema=%v", name, c, got, want)
			}
		}
	}
	checkSet("topic", topic.Pattern, &topicByte, func(c byte) string {
		if c == '.' {
			return "a.a" // a dot is a separator, not a segment byte
		}
		return string([]byte{c})
	})
	checkSet("userId", user.Pattern, &userIDByte, func(c byte) string { return string([]byte{c}) })
	checkSet("token", token.Pattern, &tokenByte, func(c byte) string { return string([]byte{c}) })
}

// TestEnvelopeListsEveryOp: the envelope's op enum and the fast path's ops
// are the same set.
func TestEnvelopeListsEveryOp(t *testing.T) {
	b, err := schemaFiles.ReadFile("schemas/envelope.json")
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties struct {
			Op struct {
				Enum []string `json:"enum"`
			} `json:"op"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	var fast []string
	for _, sh := range shapes {
		fast = append(fast, sh.name)
	}
	sort.Strings(fast)
	sort.Strings(s.Properties.Op.Enum)
	if !reflect.DeepEqual(fast, s.Properties.Op.Enum) || len(fast) != len(ops) {
		t.Fatalf("envelope %v, fast path %v, ops %v", s.Properties.Op.Enum, fast, ops)
	}
}

// TestCheckSubscribeAllocs holds the bar's allocation budget.
func TestCheckSubscribeAllocs(t *testing.T) {
	v := newValidator(t, Limits{})
	raw := []byte(`{"op":"subscribe","id":1,"topic":"news.europe","userId":"42","token":"` + tok + `"}`)
	n := testing.AllocsPerRun(200, func() {
		if _, vio := v.Check(raw); vio != nil {
			t.Fatal(vio)
		}
	})
	if n > 10 {
		t.Fatalf("%v allocations per subscribe check, budget 10", n)
	}
}
