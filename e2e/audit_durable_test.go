package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestAuditDurableAdminActions: with audit.fsync at an hour, lines wait in
// the writer's memory; a manual ban, an unban and a token mint must not.
// kill -9 right after the commands return, and their lines are in the
// trail: each with what `audit query --ip` needs, one ban counted once,
// and the level SIEMs key on.
func TestAuditDurableAdminActions(t *testing.T) {
	s := startServer(t, "audit: {fsync: 1h}\n")
	stdout, stderr, rc := portcullis(t, nil, "ban", "add", "203.0.113.7", "--for", "1h", "--reason", "durable e2e", "--data", s.data)
	if rc != 0 || !strings.Contains(stdout, `reason "durable e2e"`) {
		t.Fatalf("ban add: exit %d %q %s", rc, stdout, stderr)
	}
	if stdout, stderr, rc = portcullis(t, nil, "ban", "list", "--data", s.data); rc != 0 || !strings.Contains(stdout, "durable e2e") {
		t.Fatalf("ban list: exit %d %q %s", rc, stdout, stderr)
	}
	if stdout, stderr, rc = portcullis(t, nil, "ban", "add", "198.51.100.0/24", "--data", s.data); rc != 0 {
		t.Fatalf("ban add of a range: exit %d %q %s", rc, stdout, stderr)
	}
	if stdout, stderr, rc = portcullis(t, nil, "ban", "rm", "198.51.100.0/24", "--data", s.data); rc != 0 {
		t.Fatalf("ban rm: exit %d %q %s", rc, stdout, stderr)
	}
	if stdout, stderr, rc = portcullis(t, nil, "token", "issue", "--user", "durable-user", "--topic", "news", "--data", s.data); rc != 0 {
		t.Fatalf("token issue: exit %d %q %s", rc, stdout, stderr)
	}
	s.kill9()

	var ban, rangeBan, unban, mint map[string]any
	for _, e := range audEvents(t, filepath.Join(s.data, "audit")) {
		switch {
		case e["event"] == "ban" && e["ip"] == "203.0.113.7":
			ban = e
		case e["event"] == "ban" && e["counted_prefix"] == "198.51.100.0/24":
			rangeBan = e
		case e["event"] == "unban" && e["counted_prefix"] == "198.51.100.0/24":
			unban = e
		case e["event"] == "admin" && e["userId"] == "durable-user":
			mint = e
		}
	}
	if ban == nil || rangeBan == nil || unban == nil || mint == nil {
		t.Fatalf("lost by kill -9: ban %v, range ban %v, unban %v, mint %v", ban, rangeBan, unban, mint)
	}
	if ban["counted_prefix"] != "203.0.113.7/32" || ban["reason"] != "manual" || ban["severity"] != "critical" ||
		ban["level"] != "error" || ban["count"] != nil || ban["strikes"] != nil ||
		!strings.Contains(fmt.Sprint(ban["detail"]), "durable e2e") || !strings.HasPrefix(fmt.Sprint(ban["actor"]), "cli:") {
		t.Errorf("ban line %v", ban)
	}
	if rangeBan["ip"] != nil || unban["ip"] != nil || unban["reason"] != "manual" || unban["level"] != "info" {
		t.Errorf("range lines: ban %v, unban %v", rangeBan, unban)
	}

	// `audit query --ip` finds both bans; a ban is counted once.
	out, errOut, rc := portcullis(t, nil, "audit", "query", "--data", s.data, "--ip", "198.51.100.0/24", "--event", "ban,unban", "--json")
	if rc != 0 || strings.Count(out, "\n") != 2 {
		t.Errorf("audit query --ip of the range: exit %d\n%s%s", rc, out, errOut)
	}
	out, errOut, rc = portcullis(t, nil, "audit", "query", "--data", s.data, "--ip", "203.0.113.7", "--event", "ban", "--json")
	if rc != 0 || strings.Count(out, "\n") != 1 {
		t.Errorf("audit query --ip of the address: exit %d\n%s%s", rc, out, errOut)
	}
	if out, code := audVerify(t, s.data); code != 0 {
		t.Errorf("audit verify after kill -9: exit %d\n%s", code, out)
	}
}
