package bans

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// TestReasonsDocumented holds docs/AUDIT.md to the code: every reason has
// a row in its reasons table, with the strike weight DefaultWeights gives.
func TestReasonsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/AUDIT.md")
	if err != nil {
		t.Fatal(err)
	}
	// A row: | `a`, `b` | client sees | weight | meaning |
	row := regexp.MustCompile("(?m)^\\| (`[a-z0-9_]+`(?:, `[a-z0-9_]+`)*) \\|[^|]*\\| ([0-9]+) \\|")
	documented := map[string]int{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		w, _ := strconv.Atoi(m[2])
		for _, name := range strings.Split(m[1], ", ") {
			documented[strings.Trim(name, "`")] = w
		}
	}
	weights := DefaultWeights()
	for r := reason.Reason(1); r.String() != "unknown"; r++ {
		w, ok := documented[r.String()]
		if !ok {
			t.Errorf("reason %s has no row in docs/AUDIT.md", r)
			continue
		}
		if w != weights[r] {
			t.Errorf("docs/AUDIT.md gives %s weight %d; DefaultWeights says %d", r, w, weights[r])
		}
	}
}
