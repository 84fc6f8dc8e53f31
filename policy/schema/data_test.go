package schema

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const chatSchema = `{
  "type": "object",
  "required": ["text"],
  "additionalProperties": false,
  "properties": {
    "text": {"type": "string", "maxLength": 20},
    "mood": {"enum": ["happy", "sad"]},
    "email": {"type": "string", "format": "email"},
    "tags": {"type": "array", "maxItems": 2, "items": {"$ref": "tag.json"}},
    "n": {"type": "integer", "minimum": 0}
  }
}`

func TestDataSchema(t *testing.T) {
	v := newValidator(t, Limits{MaxDepth: 5, MaxBytes: 1024})
	dir := t.TempDir()
	writeFile(t, dir, "tag.json", `{"type": "string", "pattern": "^[a-z]+$"}`)
	ds, err := v.CompileDataSchema(writeFile(t, dir, "chat.json", chatSchema))
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	if !ds.Valid() {
		t.Fatal("compiled schema not Valid")
	}
	const mk = "MARKERq7"
	cases := []struct {
		name    string
		data    string
		reason  reason.Reason // None: accepted
		pointer string
		keyword string
		msg     string
	}{
		{"valid", `{"text":"hi","mood":"happy","tags":["a","b"],"email":"a@b.example","n":3}`, reason.None, "", "", ""},
		{"missing", `{"mood":"sad"}`, reason.SchemaViolation, "/data/text", "/required", "missing field: data.text"},
		{"extra", `{"text":"hi","` + mk + `":1}`, reason.SchemaViolation, "/data/" + mk, "/additionalProperties", "data has a field"},
		{"wrong type", `{"text":["` + mk + `"]}`, reason.SchemaViolation, "/data/text", "/properties/text/type", "data must be of type string"},
		{"too long", `{"text":"` + mk + strings.Repeat("x", 30) + `"}`, reason.SchemaViolation, "/data/text", "/properties/text/maxLength", "at most 20 characters"},
		{"enum", `{"text":"a","mood":"` + mk + `"}`, reason.SchemaViolation, "/data/mood", "/properties/mood/enum", "not one of the allowed values"},
		{"format asserted", `{"text":"a","email":"` + mk + `"}`, reason.SchemaViolation, "/data/email", "/properties/email/format", "not a valid email"},
		{"through $ref", `{"text":"a","tags":["` + mk + `"]}`, reason.SchemaViolation, "/data/tags/0", "/properties/tags/items/$ref/pattern", "pattern"},
		{"not an object", `"` + mk + `"`, reason.SchemaViolation, "/data", "/type", "data must be of type object"},
		{"not JSON", `{"text":` + mk + `}`, reason.BadJSON, "/data", "", "not valid JSON"},
		{"too deep", `{"text":"a","tags":[[[[[1]]]]]}`, reason.TooDeep, "/data", "", "deeper than 5"},
		{"too large", `{"text":"` + strings.Repeat(mk, 200) + `"}`, reason.MessageTooLarge, "/data", "", "larger than 1024"},
		{"huge number", `{"text":"a","n":1e999999}`, reason.SchemaViolation, "/data/n", "", "too large an exponent"},
		{"number that panics the library (nil big.Rat)", `{"text":"a","n":1e9999999}`, reason.SchemaViolation, "/data/n", "", "too large an exponent"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vio := ds.Check(json.RawMessage(tc.data))
			if tc.reason == reason.None {
				if vio != nil {
					t.Fatalf("refused: %+v", vio)
				}
				return
			}
			if vio == nil {
				t.Fatal("accepted")
			}
			if vio.Reason != tc.reason || vio.Pointer != tc.pointer || vio.Keyword != tc.keyword {
				t.Fatalf("got %s %q %q, want %s %q %q", vio.Reason, vio.Pointer, vio.Keyword, tc.reason, tc.pointer, tc.keyword)
			}
			if !strings.Contains(vio.Message, tc.msg) || strings.Contains(vio.Message, mk) {
				t.Fatalf("message %q: want %q and no payload", vio.Message, tc.msg)
			}
		})
	}
}

func TestDataSchemaZeroRefuses(t *testing.T) {
	var ds DataSchema
	if ds.Valid() {
		t.Fatal("zero DataSchema Valid")
	}
	if vio := ds.Check(json.RawMessage(`{}`)); vio == nil || vio.Reason != reason.Internal {
		t.Fatalf("zero DataSchema: %+v", vio)
	}
}

func TestCompileDataSchemaErrors(t *testing.T) {
	v := newValidator(t, Limits{})
	dir := t.TempDir()
	cases := map[string]string{
		"not JSON":         `{"type":`,
		"bad keyword type": `{"type": 5}`,
		"bad regexp":       `{"pattern": "(?=lookahead)"}`,
		"remote ref":       `{"$ref": "http://127.0.0.1:1/x.json"}`,
		"missing ref":      `{"$ref": "nope.json"}`,
	}
	for name, body := range cases {
		if _, err := v.CompileDataSchema(writeFile(t, dir, strings.ReplaceAll(name, " ", "_")+".json", body)); err == nil {
			t.Errorf("%s: compiled", name)
		}
	}
	if _, err := v.CompileDataSchema(filepath.Join(dir, "absent.json")); err == nil {
		t.Error("absent file compiled")
	}
}
