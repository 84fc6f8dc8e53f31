package alerting

import (
	"strings"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
)

// Stage 4: the hourly cap. At most max notifications are queued in any
// sliding hour. Beyond, notifications are held back (counted and listed);
// when a slot frees, one digest "N further alerts held back" takes it before
// anything else. The count is kept in memory: a restart starts a new hour.

// maxHeldList bounds the summaries a digest lists.
const maxHeldList = 50

type ratecap struct {
	max      int
	sent     []time.Time // queue times within the last hour, oldest first
	held     int64
	heldList []string
	first    time.Time // first held
	sev      audit.Severity
	report   func(*notification, Decision, string)
}

func (c *ratecap) exec(now time.Time, ns []*notification) []*notification {
	cut := now.Add(-time.Hour)
	i := 0
	for i < len(c.sent) && !c.sent[i].After(cut) {
		i++
	}
	c.sent = append(c.sent[:0], c.sent[i:]...)
	var out []*notification
	if c.held > 0 && len(c.sent) < c.max {
		d := &notification{GroupKey: "\x00digest", Rule: "digest", Summary: itoa(c.held) + " further alerts held back",
			Severity: c.sev, First: c.first, Last: now, Held: c.held, HeldList: c.heldList,
			Labels: Labels{{"alertname", "digest"}}}
		c.report(d, Digest, "max_per_hour reached; "+itoa(c.held)+" held back since "+c.first.UTC().Format(time.RFC3339))
		out = append(out, d)
		c.sent = append(c.sent, now)
		c.held, c.heldList, c.sev = 0, nil, 0
	}
	for _, n := range ns {
		if c.held == 0 && len(c.sent) < c.max {
			out = append(out, n)
			c.sent = append(c.sent, now)
			continue
		}
		if c.held == 0 {
			c.first = now
		}
		c.held++
		c.sev = max(c.sev, n.Severity)
		if len(c.heldList) < maxHeldList {
			c.heldList = append(c.heldList, now.UTC().Format(time.RFC3339)+" "+n.Severity.String()+" "+
				strings.ToUpper(n.Rule)+": "+n.Summary+" "+n.Labels.String())
		}
		c.report(n, Capped, "max_per_hour "+itoa(int64(c.max))+" reached; held back for the digest")
	}
	return out
}
