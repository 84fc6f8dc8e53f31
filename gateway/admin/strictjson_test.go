package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/schema"
)

type sjSink struct {
	mu sync.Mutex
	ev []audit.Event
}

func (s *sjSink) Emit(e audit.Event) { s.mu.Lock(); s.ev = append(s.ev, e); s.mu.Unlock() }

func (s *sjSink) events() []audit.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]audit.Event(nil), s.ev...)
}

type sjPublisher struct{ got []string }

func (p *sjPublisher) Publish(topic string, data []byte) (int, error) {
	p.got = append(p.got, topic+" "+string(data))
	return 1, nil
}

type sjMinter struct{ users []string }

func (m *sjMinter) Mint(user string, _ []string, _ time.Duration, now time.Time) (string, time.Time, error) {
	m.users = append(m.users, user)
	return "tok-" + user, now.Add(time.Minute), nil
}

type sjInner struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
}

type sjOuter struct {
	ID       string          `json:"id"`
	Inner    sjInner         `json:"inner"`
	List     []sjInner       `json:"list"`
	Free     json.RawMessage `json:"free"`
	Anything any             `json:"anything"`
	Skipped  string          `json:"-"`
	Untagged int
}

func TestDecodeBytes(t *testing.T) {
	cases := []struct {
		name, body string
		want       string // "" decodes; else a part of the error
	}{
		{"good", `{"id":"a","inner":{"name":"n"},"list":[{"name":"x","value":"y"}],"free":{"A":1,"a":2},"Untagged":3}`, ""},
		{"null members", `{"id":"a","inner":null,"list":null}`, ""},
		{"duplicate", `{"id":"a","id":"b"}`, `duplicate key "id"`},
		{"duplicate through an escape", `{"id":"a","\u0069d":"b"}`, `duplicate key "id"`},
		{"wrong case", `{"ID":"a"}`, `unknown key "ID": keys are case-sensitive, did you mean "id"?`},
		{"wrong case after the right one", `{"id":"a","Id":"b"}`, `unknown key "Id"`},
		{"unknown", `{"id":"a","extra":1}`, `unknown key "extra"`},
		{"json:\"-\" field", `{"Skipped":"x"}`, `unknown key "Skipped"`},
		{"nested wrong case", `{"inner":{"Name":"n"}}`, `unknown key "inner.Name"`},
		{"nested duplicate", `{"inner":{"name":"n","name":"m"}}`, `duplicate key "inner.name"`},
		{"slice element unknown", `{"list":[{"name":"x"},{"nme":"y"}]}`, `unknown key "list[1].nme"`},
		{"duplicate in free-form", `{"free":{"a":1,"a":2}}`, `duplicate key "free.a"`},
		{"duplicate deep in any", `{"anything":[{"x":{"k":1,"k":1}}]}`, `duplicate key "anything[0].x.k"`},
		{"invalid UTF-8 in a string", "{\"id\":\"a\xffb\"}", "not valid UTF-8 JSON: byte 0xff at offset 8"},
		{"invalid UTF-8 in a key", "{\"i\xc3\":\"a\"}", "not valid UTF-8"},
		{"trailing data", `{"id":"a"} {}`, "data after the object"},
		{"not an object", `["id"]`, "one JSON object"},
		{"empty", ``, "one JSON object"},
		{"syntax", `{"id":"a",}`, "invalid JSON body"},
		{"type", `{"id":1}`, "invalid JSON body"},
		{"too deep", `{"free":` + strings.Repeat("[", MaxBodyDepth) + strings.Repeat("]", MaxBodyDepth) + `}`, "deeper than 64 levels"},
	}
	for _, c := range cases {
		var v sjOuter
		err := DecodeBytes([]byte(c.body), &v)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	var v sjOuter
	if err := DecodeBytes([]byte(`{"id":"a","list":[{"name":"x"}],"Untagged":3}`), &v); err != nil ||
		v.ID != "a" || len(v.List) != 1 || v.List[0].Name != "x" || v.Untagged != 3 {
		t.Fatalf("decoded %+v, %v", v, err)
	}
}

func TestCheckBody(t *testing.T) {
	for body, want := range map[string]string{
		``:                                 "",
		" \n":                              "",
		`{"matchers":[{"name":"a"}]}`:      "",
		`{"a":1,"a":2}`:                    `duplicate key "a"`,
		`[{"x":{"y":1,"y":1}}]`:            `duplicate key "[0].x.y"`,
		"{\"a\":\"\xfe\"}":                 "not valid UTF-8",
		`{"a":1}x`:                         "invalid JSON body",
		`{"a":1} 2`:                        "data after the value",
		strings.Repeat("[", 65):            "deeper than 64",
		`{"a":1}` + strings.Repeat(" ", 3): "",
	} {
		err := CheckBody([]byte(body))
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%.40q: error %v, want %q", body, err, want)
		}
	}
}

func sjAPI(t *testing.T) (*API, *sjSink, *sjPublisher, *sjMinter) {
	t.Helper()
	sink, pub, mint := &sjSink{}, &sjPublisher{}, &sjMinter{}
	a := New(Options{Key: "k", Publisher: pub, Tokens: mint, Audit: sink,
		Routes: map[string]http.Handler{"POST /v1/echo": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			_, _ = w.Write(b)
		})}})
	return a, sink, pub, mint
}

func sjDo(a *API, path, body string) (int, map[string]string, string) {
	req := httptest.NewRequest("POST", path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer k")
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, req)
	var out map[string]string
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	return rec.Code, out, rec.Body.String()
}

// {"userId":"a","userid":"b"} minted a token for b: now it mints nothing
// and the answer names the key.
func TestTokensStrictKeys(t *testing.T) {
	for body, key := range map[string]string{
		`{"userId":"a","userid":"b"}`:          `unknown key \"userid\": keys are case-sensitive, did you mean \"userId\"?`,
		`{"userId":"a","userId":"b"}`:          `duplicate key \"userId\"`,
		`{"UserId":"b"}`:                       `unknown key \"UserId\"`,
		`{"userId":"a","ttl":"1m","TTL":"1h"}`: `unknown key \"TTL\"`,
	} {
		a, sink, _, mint := sjAPI(t)
		code, out, raw := sjDo(a, "/v1/tokens", body)
		if code != 400 || out["error"] != "bad_request" || !strings.Contains(raw, key) {
			t.Errorf("%s: %d %s", body, code, raw)
		}
		if len(mint.users) != 0 {
			t.Errorf("%s: minted for %v", body, mint.users)
		}
		ev := sink.events()
		if len(ev) != 1 || ev[0].Event != audit.KindAdmin || ev[0].Reason != reason.BadRequest || ev[0].Code != 400 ||
			!strings.Contains(ev[0].Detail, "POST /v1/tokens") || !strings.Contains(ev[0].Detail, out["message"]) {
			t.Errorf("%s: audit %+v", body, ev)
		}
	}
	a, _, _, mint := sjAPI(t)
	if code, _, raw := sjDo(a, "/v1/tokens", `{"userId":"a","topics":["news"],"ttl":"1m"}`); code != 201 || len(mint.users) != 1 || mint.users[0] != "a" {
		t.Fatalf("good mint: %d %s %v", code, raw, mint.users)
	}
}

// Invalid UTF-8 in published data was relayed in text frames, which makes
// browsers drop the connection: it is refused, audited, never published.
func TestPublishRefusesWhatBreaksClients(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	cases := []struct{ name, body, want string }{
		{"0xff in a string", "{\"topic\":\"news\",\"data\":{\"t\":\"a\xffb\"}}", "not valid UTF-8 JSON: byte 0xff at offset 30"},
		{"truncated sequence", "{\"topic\":\"news\",\"data\":\"\xe2\x82\"}", "not valid UTF-8 JSON"},
		{"surrogate encoded in UTF-8", "{\"topic\":\"news\",\"data\":\"\xed\xa0\x80\"}", "not valid UTF-8 JSON"},
		{"too deep", `{"topic":"news","data":` + deep(MaxDataDepth+1) + `}`, "data nests deeper than 31 levels"},
		{"duplicate key in data", `{"topic":"news","data":{"a":1,"a":2}}`, `duplicate key \"data.a\"`},
		{"wrong case", `{"Topic":"news","data":1}`, `unknown key \"Topic\"`},
	}
	for _, c := range cases {
		a, sink, pub, _ := sjAPI(t)
		code, out, raw := sjDo(a, "/v1/publish", c.body)
		if code != 400 || out["error"] != "bad_request" || !strings.Contains(raw, c.want) {
			t.Errorf("%s: %d %s", c.name, code, raw)
		}
		if len(pub.got) != 0 {
			t.Errorf("%s: published %q", c.name, pub.got)
		}
		if ev := sink.events(); len(ev) != 1 || ev[0].Event != audit.KindAdmin || ev[0].Reason != reason.BadRequest ||
			!strings.Contains(ev[0].Detail, "POST /v1/publish: ") {
			t.Errorf("%s: audit %+v", c.name, ev)
		}
	}
	// The deepest data a client may publish goes through, as does text
	// that is valid UTF-8 (and escapes).
	if MaxDataDepth != schema.DefaultMaxDepth-1 {
		t.Fatalf("MaxDataDepth %d", MaxDataDepth)
	}
	for _, data := range []string{deep(MaxDataDepth), `{"t":"é€😀\u00ff"}`} {
		a, _, pub, _ := sjAPI(t)
		if code, _, raw := sjDo(a, "/v1/publish", `{"topic":"news","data":`+data+`}`); code != 200 || len(pub.got) != 1 {
			t.Errorf("%.40s: %d %s %v", data, code, raw, pub.got)
		}
	}
}

// Routes other packages add (silences) get the same body checks before
// their own decoding.
func TestRoutesBodyChecked(t *testing.T) {
	a, sink, _, _ := sjAPI(t)
	code, out, raw := sjDo(a, "/v1/echo", `{"for":"1h","for":"1s"}`)
	if code != 400 || out["error"] != "bad_request" || !strings.Contains(raw, `duplicate key \"for\"`) {
		t.Fatalf("duplicate: %d %s", code, raw)
	}
	if ev := sink.events(); len(ev) != 1 || ev[0].Reason != reason.BadRequest {
		t.Fatalf("audit %+v", ev)
	}
	if code, _, raw := sjDo(a, "/v1/echo", `{"for":"1h"}`); code != 200 || raw != `{"for":"1h"}` {
		t.Fatalf("good body: %d %q", code, raw)
	}
}
