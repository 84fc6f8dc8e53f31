package alerting

import (
	"cmp"
	"slices"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
)

// Stage 2: dispatch. Hits are aggregated into groups (rule + group_by
// values) and flushed like Alertmanager: the first notification group_wait
// after the group's first event, then at most one per group_interval while
// new events arrive, and a reminder every repeat_interval while the group
// still fires without news. A group that no longer fires and has nothing
// new is forgotten. Owned by the rules worker.

// Bounds on what one group remembers for its mail.
const (
	maxCounterKeys = 1000 // distinct values counted per field; the rest count as "other"
	maxBans        = 200  // ban actions listed
	sampleHead     = 3    // first events kept as samples
	sampleTail     = 3    // latest events kept as samples
	topN           = 10   // values shown per field
)

type group struct {
	key      string
	rule     *rule
	labels   Labels
	first    time.Time // first event
	last     time.Time // latest event
	count    int64     // events since the group began
	fresh    int64     // events since the previous notification
	ips      counter
	prefixes counter
	users    counter
	bans     map[string]banAction
	moreBans int64
	head     []audit.Event
	tail     []audit.Event // ring of the latest sampleTail
	tailPos  int

	nextFlush time.Time
	notified  time.Time // zero: never
	updates   int
}

type banAction struct {
	Prefix  string
	Detail  string
	Reason  string
	Actor   string
	Strikes int64 // strike weight of an automatic ban; 0 for a manual one
	Time    time.Time
}

// counter counts values, bounded: values beyond maxCounterKeys are summed
// as other.
type counter struct {
	m     map[string]int64
	other int64
}

func (c *counter) add(v string, n int64) {
	if v == "" {
		return
	}
	if c.m == nil {
		c.m = map[string]int64{}
	}
	if _, ok := c.m[v]; !ok && len(c.m) >= maxCounterKeys {
		c.other += n
		return
	}
	c.m[v] += n
}

// KV is a value and how many events had it.
type KV struct {
	Value string `json:"value"`
	N     int64  `json:"n"`
}

// top returns the n most frequent values, most first, ties by value.
func (c *counter) top(n int) []KV {
	out := make([]KV, 0, len(c.m))
	for v, k := range c.m {
		out = append(out, KV{v, k})
	}
	slices.SortFunc(out, func(a, b KV) int {
		if a.N != b.N {
			return cmp.Compare(b.N, a.N)
		}
		return cmp.Compare(a.Value, b.Value)
	})
	return out[:min(n, len(out))]
}

type dispatcher struct {
	cfg     Config
	groups  map[string]*group
	dropped uint64 // hits refused: MaxGroups live groups
}

func newDispatcher(cfg Config) *dispatcher {
	return &dispatcher{cfg: cfg, groups: map[string]*group{}}
}

// labelsOf builds the group labels of a hit.
func labelsOf(h hit) Labels {
	ls := Labels{{"alertname", h.rule.Name}, {"severity", h.rule.Severity.String()}}
	for _, f := range h.rule.GroupBy {
		ls = append(ls, Label{f, clean(fieldOf(h.e, f), maxLabelLen)})
	}
	return ls
}

// add puts h into its group, creating the group with its first flush
// group_wait after the event.
func (d *dispatcher) add(h hit) {
	ls := labelsOf(h)
	k := ls.key()
	g := d.groups[k]
	t := h.e.Time
	if g != nil && g.fresh == 0 && !d.firing(g, t) {
		g = nil // the group is over, only not yet collected: start afresh
	}
	if g == nil {
		if len(d.groups) >= MaxGroups {
			d.dropped++
			return
		}
		g = &group{key: k, rule: h.rule, labels: ls, first: t, nextFlush: t.Add(d.cfg.GroupWait)}
		d.groups[k] = g
	}
	if t.After(g.last) {
		g.last = t
	}
	if t.Before(g.first) {
		g.first = t
	}
	g.count += h.n
	g.fresh += h.n
	e := h.e
	g.ips.add(addrText(e.IP), h.n)
	g.prefixes.add(prefixText(e.CountedPrefix), h.n)
	if !e.CountedPrefix.IsValid() {
		g.prefixes.add(prefix24(e.IP), h.n)
	}
	g.users.add(e.UserID, h.n)
	if e.Event == audit.KindBan && e.CountedPrefix.IsValid() {
		if g.bans == nil {
			g.bans = map[string]banAction{}
		}
		p := prefixText(e.CountedPrefix)
		if _, ok := g.bans[p]; ok || len(g.bans) < maxBans {
			g.bans[p] = banAction{Prefix: p, Detail: e.Detail, Reason: reasonText(e.Reason),
				Actor: e.Actor, Strikes: e.Strikes, Time: e.Time}
		} else {
			g.moreBans++
		}
	}
	if len(g.head) < sampleHead {
		g.head = append(g.head, *e)
	} else if len(g.tail) < sampleTail {
		g.tail = append(g.tail, *e)
	} else {
		g.tail[g.tailPos] = *e
		g.tailPos = (g.tailPos + 1) % sampleTail
	}
}

// firing reports whether g still fires at now: a threshold rule while its
// count was above the threshold within the last window, other rules for a
// group_interval after their latest event.
func (d *dispatcher) firing(g *group, now time.Time) bool {
	hold := d.cfg.GroupInterval
	if g.rule.Threshold > 0 {
		hold = g.rule.Window
	}
	return now.Before(g.last.Add(hold))
}

// firingRule reports whether any group of the named rule fires at now.
func (d *dispatcher) firingRule(name string, now time.Time) (string, bool) {
	for _, g := range d.groups {
		if g.rule.Name == name && d.firing(g, now) {
			return g.labels.String(), true
		}
	}
	return "", false
}

// flush returns the notifications due at now, in group key order, and
// forgets groups that are over.
func (d *dispatcher) flush(now time.Time) []*notification {
	var out []*notification
	for k, g := range d.groups {
		if now.Before(g.nextFlush) {
			continue
		}
		switch {
		case g.fresh > 0:
			out = append(out, g.snapshot(false))
		case d.firing(g, now) && !g.notified.IsZero() && now.Sub(g.notified) >= d.cfg.RepeatInterval:
			out = append(out, g.snapshot(true))
		case !d.firing(g, now):
			delete(d.groups, k)
			continue
		default:
			g.nextFlush = now.Add(d.cfg.GroupInterval)
			continue
		}
		g.notified = now
		g.fresh = 0
		g.updates++
		g.nextFlush = now.Add(d.cfg.GroupInterval)
	}
	slices.SortFunc(out, func(a, b *notification) int { return cmp.Compare(a.GroupKey, b.GroupKey) })
	return out
}

// snapshot copies what a mail about g needs.
func (g *group) snapshot(repeat bool) *notification {
	n := &notification{
		GroupKey: g.key, Rule: g.rule.Name, Labels: g.labels, Severity: g.rule.Severity,
		Summary: g.rule.Summary, Event: g.rule.Event.String(), Threshold: g.rule.Threshold, Window: g.rule.Window,
		First: g.first, Last: g.last, Count: g.count, Fresh: g.fresh, Update: g.updates, Repeat: repeat,
		TopIPs: g.ips.top(topN), TopPrefixes: g.prefixes.top(topN), TopUsers: g.users.top(topN),
		OtherIPs: g.ips.other, MoreBans: g.moreBans,
	}
	for _, b := range g.bans {
		n.Bans = append(n.Bans, b)
	}
	slices.SortFunc(n.Bans, func(a, b banAction) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Prefix, b.Prefix))
	})
	n.Samples = append(n.Samples, g.head...)
	for i := range g.tail {
		n.Samples = append(n.Samples, g.tail[(g.tailPos+i)%len(g.tail)])
	}
	return n
}
