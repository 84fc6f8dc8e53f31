package schema

import (
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// A userId is one topic segment: the client schema (both paths) accepts a
// string userId exactly when topics.ValidUserID does, so "alice.smith" can
// never claim user alice's namespace user.alice.**.
func TestUserIDIsOneTopicSegment(t *testing.T) {
	v := newValidator(t, Limits{})
	ids := []string{"alice", "alice.smith", ".", "a.", ".a", "42", "a_b@c:d-e", "a b", "a/b", "a*", "é",
		strings.Repeat("u", topics.MaxUserIDLen), strings.Repeat("u", topics.MaxUserIDLen+1)}
	for c := 0x21; c < 0x7f; c++ {
		if c != '"' && c != '\\' {
			ids = append(ids, "a"+string(rune(c))+"b")
		}
	}
	for _, id := range ids {
		raw := []byte(`{"op":"subscribe","id":1,"topic":"user.x","userId":"` + id + `"}`)
		m, vio := v.Check(raw)
		ref, refVio := v.schemaOnly(raw)
		want := topics.ValidUserID(id)
		if (vio == nil) != want || (refVio == nil) != want {
			t.Errorf("userId %q: fast path %v, schema %v; ValidUserID %v", id, vio, refVio, want)
			continue
		}
		if want && (m.UserID != id || ref.UserID != id) {
			t.Errorf("userId %q decoded as %q / %q", id, m.UserID, ref.UserID)
		}
		if !want && (vio.Reason != reason.SchemaViolation || vio.Pointer != "/userId") {
			t.Errorf("userId %q: %+v, want schema_violation at /userId", id, vio)
		}
	}
	_, vio := v.Check([]byte(`{"op":"subscribe","id":1,"topic":"user.alice.smith.inbox","userId":"alice.smith"}`))
	if vio == nil || !strings.Contains(vio.Message, "one topic segment") {
		t.Fatalf("alice.smith: %+v, want a message naming the rule", vio)
	}
}
