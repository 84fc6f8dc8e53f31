package audit

import (
	"bytes"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Options.Node is stamped into every line the writer writes, its own
// header and checkpoint lines included; an empty Node leaves the key out,
// so a trail written without a node name is what it always was. Both
// trails verify.
func TestNodeStampedOrOmitted(t *testing.T) {
	for _, node := range []string{"", "web-1"} {
		tt := newTrail(t)
		o := tt.opts()
		o.Node = node
		w, err := Open(o)
		if err != nil {
			t.Fatal(err)
		}
		w.Emit(Event{Event: KindConnOpen, Conn: 1})
		w.Emit(Event{Event: KindAuthFailed, Severity: Warning, Reason: reason.TokenReplayed, UserID: "alice"})
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		lines := tt.lines(t)
		if len(lines) < 3 {
			t.Fatalf("node %q: %d lines", node, len(lines))
		}
		for i, l := range lines {
			got, has := l[FieldNode]
			if node == "" && has || node != "" && got != node {
				t.Errorf("node %q: line %d has node %v (present %v): %v", node, i+1, got, has, l)
			}
		}
		mustIntact(t, tt.verify(t))
	}
}

// The template of an event without a node is the template with a node
// minus that one member: nothing else of the line moves.
func TestNodeMemberOnly(t *testing.T) {
	e := Event{Time: time.Unix(1700000000, 5), Event: KindBan, Severity: Critical, Topic: "t", Detail: "d"}
	without := newLineFormatter("", "b00t").template(nil, &e)
	with := newLineFormatter("web-1", "b00t").template(nil, &e)
	if bytes.Contains(without, []byte(`"node"`)) {
		t.Fatalf("empty node written: %s", without)
	}
	if got := bytes.Replace(with, []byte(`,"node":"web-1"`), nil, 1); !bytes.Equal(got, without) {
		t.Fatalf("with node minus the member:\n%s\nwithout:\n%s", got, without)
	}
}
