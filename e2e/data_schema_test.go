package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A topic rule's data_schema checks what clients publish: bad data gets
// bad_request naming the failing location, never echoing the value, and
// an audit line with the keyword; good data is delivered.
func TestDataSchemaForClientPublish(t *testing.T) {
	dir := t.TempDir()
	schemaFile := filepath.Join(dir, "chat.json")
	if err := os.WriteFile(schemaFile, []byte(`{
  "type": "object",
  "additionalProperties": false,
  "required": ["text"],
  "properties": {"text": {"type": "string", "maxLength": 20}}
}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, "topics:\n  - match: \"chat.*\"\n    subscribe: token\n    publish: token\n    data_schema: \""+schemaFile+"\"\n")
	tok := s.token("u1", "chat.lobby")
	rc := upgradeFrom(t, s, "127.0.0.1")
	rc.sendJSON(subMsg(1, "chat.lobby", "u1", tok))
	if m := rc.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("subscribe: %v", m)
	}
	const secret = "VALUE-THAT-MUST-NOT-BE-ECHOED"
	rc.sendJSON(map[string]any{"op": "publish", "id": 2, "topic": "chat.lobby", "data": map[string]any{"text": secret + secret}})
	m := rc.readMsg()
	if m["op"] != "error" || m["code"] != "bad_request" || m["id"] != 2.0 {
		t.Fatalf("bad data: %v", m)
	}
	if msg, _ := m["message"].(string); strings.Contains(msg, secret) {
		t.Fatalf("error echoes the value: %q", msg)
	}
	e := s.waitAudit(map[string]any{"event": "message_rejected", "reason": "schema_violation", "topic": "chat.lobby"})
	if d, _ := e["detail"].(string); !strings.Contains(d, "/data") {
		t.Fatalf("audit detail %q does not locate the failure", d)
	}
	rc.sendJSON(map[string]any{"op": "publish", "id": 3, "topic": "chat.lobby", "data": map[string]any{"text": "hi"}})
	got := map[string]bool{}
	for i := 0; i < 2; i++ {
		m := rc.readMsg()
		if m["op"] == "error" {
			t.Fatalf("good data refused: %v", m)
		}
		got[m["op"].(string)] = true
	}
	if !got["published"] || !got["event"] {
		t.Fatalf("good data: got %v, want published and the event", got)
	}
	b, _ := os.ReadFile(filepath.Join(s.data, "audit", "audit.log"))
	if strings.Contains(string(b), secret) {
		t.Fatal("the refused value reached the audit trail")
	}
}
