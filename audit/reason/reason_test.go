package reason

import (
	"regexp"
	"testing"
)

// TestNames: every reason has one distinct snake_case name that Parse
// reads back; "none", "unknown" and other text are no reason.
func TestNames(t *testing.T) {
	name := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	seen := map[string]Reason{}
	for r := Reason(1); r < count; r++ {
		s := r.String()
		if !name.MatchString(s) {
			t.Errorf("reason %d: name %q", r, s)
		}
		if o, dup := seen[s]; dup {
			t.Errorf("reasons %d and %d are both %q", o, r, s)
		}
		seen[s] = r
		if p, ok := Parse(s); !ok || p != r {
			t.Errorf("Parse(%q) = %d, %v; want %d", s, p, ok, r)
		}
	}
	for _, s := range []string{"", "none", "unknown", "Banned", "banned ", "token_replayed\n"} {
		if r, ok := Parse(s); ok {
			t.Errorf("Parse(%q) = %s, want no reason", s, r)
		}
	}
	if None.String() != "none" || count.String() != "unknown" || Reason(255).String() != "unknown" {
		t.Error("None is \"none\", values past the last reason \"unknown\"")
	}
}
