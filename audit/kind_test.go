package audit

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// kinds returns every event kind, in declaration order.
func kinds() []Kind {
	ks := make([]Kind, 0, kindEnd-1)
	for k := Kind(1); k < kindEnd; k++ {
		ks = append(ks, k)
	}
	return ks
}

// TestKindsDocumented holds docs/AUDIT.md to the code: its Events table
// lists exactly the event kinds, each once.
func TestKindsDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/AUDIT.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "\n## Events\n")
	if start < 0 {
		t.Fatal("docs/AUDIT.md has no \"## Events\" section")
	}
	section := doc[start+1:]
	if end := strings.Index(section[len("## Events"):], "\n## "); end >= 0 {
		section = section[:len("## Events")+end]
	}
	// A row: | `a`, `b` | severity | when |
	row := regexp.MustCompile("(?m)^\\| (`[a-z0-9_]+`(?:, `[a-z0-9_]+`)*) \\|")
	documented := map[string]int{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		for _, name := range strings.Split(m[1], ", ") {
			documented[strings.Trim(name, "`")]++
		}
	}
	if len(documented) == 0 {
		t.Fatal("no rows found in docs/AUDIT.md's Events table")
	}
	for _, k := range kinds() {
		switch documented[k.String()] {
		case 0:
			t.Errorf("event %s has no row in docs/AUDIT.md's Events table", k)
		case 1:
		default:
			t.Errorf("event %s is listed %d times in docs/AUDIT.md's Events table", k, documented[k.String()])
		}
		delete(documented, k.String())
	}
	for name := range documented {
		t.Errorf("docs/AUDIT.md's Events table lists %q, which is no audit.Kind", name)
	}
}

func TestKindNames(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range kinds() {
		s := k.String()
		if !regexp.MustCompile(`^[a-z][a-z0-9_]*$`).MatchString(s) || seen[s] {
			t.Errorf("kind %d: bad or duplicate name %q", uint8(k), s)
		}
		seen[s] = true
		if p, ok := ParseKind(s); !ok || p != k {
			t.Errorf("ParseKind(%q) = %v, %v; want %d", s, p, ok, uint8(k))
		}
		j, err := json.Marshal(k)
		if err != nil || string(j) != `"`+s+`"` {
			t.Errorf("json of %s = %s, %v", s, j, err)
		}
		var back Kind
		if err := json.Unmarshal(j, &back); err != nil || back != k {
			t.Errorf("json round trip of %s: %v, %v", s, back, err)
		}
	}
	for _, bad := range []string{"", "event_loop_stalled", "Conn_Open", "conn_open "} {
		if k, ok := ParseKind(bad); ok {
			t.Errorf("ParseKind(%q) = %s, want not ok", bad, k)
		}
	}
	if Kind(0).String() != "" || kindEnd.String() != "" {
		t.Error("the zero Kind and values past the last kind must have no name")
	}
	if _, err := json.Marshal(Kind(0)); err == nil {
		t.Error("marshalling the zero Kind must fail")
	}
	var k Kind
	if err := json.Unmarshal([]byte(`"no_such_event"`), &k); err == nil {
		t.Error("unmarshalling an unknown name must fail")
	}
	var refusals []string
	for _, k := range kinds() {
		if k.Refusal() {
			refusals = append(refusals, k.String())
		}
	}
	if got := strings.Join(refusals, ","); got != "conn_rejected,auth_failed,subscribe_denied,message_rejected" {
		t.Errorf("refusal kinds %s", got)
	}
}
