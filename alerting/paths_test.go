package alerting

import (
	"strings"
	"testing"
	"time"
)

// The commands a mail prints carry the gateway's data dir (and its audit
// dir, when elsewhere), quoted for a shell, so that they work when pasted
// in any directory.
func TestMailCommandsCarryPaths(t *testing.T) {
	first := time.Date(2026, 3, 4, 5, 6, 0, 0, time.UTC)
	n := &notification{Event: "ban", First: first, Last: first, Bans: []banAction{{Prefix: "198.51.100.0/24"}}}
	cases := []struct {
		paths       Paths
		query, undo string
	}{
		{Paths{}, "portcullis audit query --since 2026-03-04T05:05:00Z --event ban\n",
			"portcullis ban rm 198.51.100.0/24\n"},
		{Paths{DataDir: "/var/lib/portcullis"}, "portcullis audit query --since 2026-03-04T05:05:00Z --event ban --data /var/lib/portcullis\n",
			"portcullis ban rm 198.51.100.0/24 --data /var/lib/portcullis\n"},
		{Paths{DataDir: "/srv/gw data", AuditDir: "/mnt/it's audit"},
			"portcullis audit query --since 2026-03-04T05:05:00Z --event ban --dir '/mnt/it'\\''s audit'\n",
			"portcullis ban rm 198.51.100.0/24 --data '/srv/gw data'\n"},
	}
	for _, c := range cases {
		text := render(n, "gw1", c.paths, first).Text
		for _, want := range []string{c.query, c.undo} {
			if !strings.Contains(text, want) {
				t.Errorf("%+v: mail lacks %q:\n%s", c.paths, want, text)
			}
		}
	}
}

func TestNewPaths(t *testing.T) {
	if p := NewPaths("/var/lib/portcullis", "/var/lib/portcullis/audit"); p != (Paths{DataDir: "/var/lib/portcullis"}) {
		t.Errorf("default audit dir kept: %+v", p)
	}
	if p := NewPaths("/var/lib/portcullis", "/mnt/audit"); p != (Paths{DataDir: "/var/lib/portcullis", AuditDir: "/mnt/audit"}) {
		t.Errorf("%+v", p)
	}
	if p := NewPaths("data", ""); !strings.HasPrefix(p.DataDir, "/") || !strings.HasSuffix(p.DataDir, "/data") {
		t.Errorf("relative data dir not made absolute: %+v", p)
	}
}
