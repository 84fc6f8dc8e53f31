package metrics_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/metrics"
)

// TestFamiliesDocumented holds docs/METRICS.md to the families exported:
// every portcullis_ family, with every series counted, has a row there.
func TestFamiliesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/METRICS.md")
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics(t, metrics.Options{State: func() metrics.State {
		// The families read at scrape time that export nothing when empty.
		return metrics.State{
			LoopTurns: metrics.Histogram{Bounds: []time.Duration{time.Millisecond}, Cumulative: []uint64{1, 2}},
			Syscalls:  []metrics.Syscall{{Call: "write", Count: 1}},
		}
	}})
	// Count something in every family that exports only what it counted.
	s := m.Wrap(audit.Discard{})
	s.Emit(audit.Event{Event: audit.KindConnRejected, Stage: audit.StageAccept, Reason: reason.Blocked})
	s.Emit(audit.Event{Event: audit.KindAlertSent, Stage: audit.StageSystem, Reason: reason.AlertSent})
	m.Messages().Inc(metrics.ProtocolNative, metrics.OpPing)
	m.ObservePublish(0)
	fams, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range fams {
		name := f.GetName()
		if !strings.HasPrefix(name, "portcullis_") {
			continue
		}
		n++
		if !strings.Contains(string(doc), "| `"+name+"` |") {
			t.Errorf("family %s has no row in docs/METRICS.md", name)
		}
	}
	if n < 19 {
		t.Errorf("only %d portcullis_ families gathered", n)
	}
}

// TestOpsDocumented: every op label value is named in docs/METRICS.md.
func TestOpsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/METRICS.md")
	if err != nil {
		t.Fatal(err)
	}
	// String is "unknown" past the last Op, which ends the loop.
	for o := metrics.OpInvalid; o.String() != "unknown" || o == metrics.OpUnknown; o++ {
		if !strings.Contains(string(doc), "`"+o.String()+"`") {
			t.Errorf("op %s is not named in docs/METRICS.md", o)
		}
	}
}
