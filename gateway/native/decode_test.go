package native

import (
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/policy/reason"
)

func TestDecode(t *testing.T) {
	cases := []struct {
		name string
		in   string
		r    reason.Reason
		ptr  string
	}{
		{"subscribe", `{"op":"subscribe","id":1,"topic":"news","userId":"42","token":"abc"}`, reason.None, ""},
		{"integer userId", `{"op":"subscribe","id":1,"topic":"news","userId":42,"token":"abc"}`, reason.None, ""},
		{"ping without id", `{"op":"ping"}`, reason.None, ""},
		{"publish", `{"op":"publish","topic":"chat.x","data":{"a":[1,2]}}`, reason.None, ""},
		{"not json", `{"op":`, reason.BadJSON, ""},
		{"array", `[1]`, reason.SchemaViolation, ""},
		{"too deep", strings.Repeat("[", 40) + strings.Repeat("]", 40), reason.TooDeep, ""},
		{"missing op", `{"id":1}`, reason.SchemaViolation, "/op"},
		{"unknown op", `{"op":"dance"}`, reason.UnknownOp, "/op"},
		{"extra field", `{"op":"ping","x":1}`, reason.SchemaViolation, "/x"},
		{"missing topic", `{"op":"subscribe","id":1}`, reason.SchemaViolation, "/topic"},
		{"bad topic", `{"op":"subscribe","topic":"a b"}`, reason.SchemaViolation, "/topic"},
		{"bad id", `{"op":"ping","id":-1}`, reason.SchemaViolation, "/id"},
		{"float id", `{"op":"ping","id":1.5}`, reason.SchemaViolation, "/id"},
		{"bad userId", `{"op":"subscribe","topic":"a","userId":"a b"}`, reason.SchemaViolation, "/userId"},
		{"object userId", `{"op":"subscribe","topic":"a","userId":{}}`, reason.SchemaViolation, "/userId"},
		{"bad token", `{"op":"subscribe","topic":"a","token":"<script>"}`, reason.SchemaViolation, "/token"},
	}
	for _, c := range cases {
		m, v := Decode([]byte(c.in))
		if c.r == reason.None {
			if v != nil {
				t.Errorf("%s: %+v", c.name, v)
			}
			continue
		}
		if v == nil || v.Reason != c.r || v.Pointer != c.ptr {
			t.Errorf("%s: got %+v (msg %+v), want %v at %q", c.name, v, m, c.r, c.ptr)
		}
	}
	m, _ := Decode([]byte(`{"op":"subscribe","id":9,"topic":"news","userId":42}`))
	if m.UserID != "42" || m.ID != 9 || !m.HasID {
		t.Fatalf("%+v", m)
	}
}

// Violation messages never echo the payload.
func TestNoEcho(t *testing.T) {
	for _, in := range []string{`{"op":"MARKER"}`, `{"op":"ping","MARKER":1}`, `{"op":"subscribe","topic":"MARKER x"}`,
		`{"op":"subscribe","topic":"a","userId":"MARKER x"}`} {
		_, v := Decode([]byte(in))
		if v == nil || strings.Contains(v.Message, "MARKER") {
			t.Errorf("%s: %+v", in, v)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"op":"subscribe","id":1,"topic":"news","userId":"42","token":"abc"}`))
	f.Add([]byte(`{"op":"publish","topic":"a","data":[[[]]]}`))
	f.Add([]byte(`{"op":"ping","id":9007199254740992}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, v := Decode(in)
		if v == nil {
			if _, ok := ops[m.Op]; !ok {
				t.Fatalf("accepted unknown op %q", m.Op)
			}
			if m.Op != "ping" && m.Topic == "" {
				t.Fatalf("accepted %s without topic", m.Op)
			}
		}
		// Encoding what was decoded must give valid JSON.
		out := AppendError(nil, m.ID, m.HasID, reason.SchemaViolation, "x")
		if _, v := Decode(out); v != nil && v.Reason == reason.BadJSON {
			t.Fatalf("encoder produced invalid JSON %q", out)
		}
	})
}
