package alerting

import (
	"strings"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Stage 1: rules. Each event is matched against every rule; threshold rules
// count matches per CountBy key over a sliding window and only pass events
// on while the count is above the threshold. Owned by the rules worker.

// windowSlots is the resolution of a sliding window: Window/windowSlots.
const windowSlots = 60

// hit is an event that made a rule alert.
type hit struct {
	rule *rule
	e    *audit.Event
	n    int64 // events it stands for (the window's count when it crossed)
}

type rule struct {
	Rule
	idx     int
	except  map[audit.Kind]bool
	res     time.Duration      // slot width of the window
	windows map[string]*window // CountBy key → counts; only with a threshold
	dropped uint64             // events not counted: too many keys
}

func compileRules(rs []Rule) []*rule {
	out := make([]*rule, len(rs))
	for i, r := range rs {
		cr := &rule{Rule: r, idx: i, except: map[audit.Kind]bool{}}
		for _, e := range r.ExceptEvents {
			cr.except[e] = true
		}
		if len(cr.CountBy) == 0 {
			cr.CountBy = cr.GroupBy
		}
		if cr.Summary == "" {
			cr.Summary = defaultSummary(r)
		}
		if r.Threshold > 0 {
			cr.res = max(r.Window/windowSlots, time.Millisecond)
			cr.windows = map[string]*window{}
		}
		out[i] = cr
	}
	return out
}

func defaultSummary(r Rule) string {
	s := r.Name
	if r.Event != 0 {
		s = r.Event.String()
	}
	if r.Reason != reason.None {
		s += " " + r.Reason.String()
	}
	if r.Threshold > 0 {
		s += " above " + itoa(int64(r.Threshold)) + " per " + r.Window.String()
	}
	return s
}

// matches reports whether e passes r's filters.
func (r *rule) matches(e *audit.Event) bool {
	if r.Event != 0 && e.Event != r.Event || r.Reason != reason.None && e.Reason != r.Reason ||
		r.Stage != "" && e.Stage != r.Stage || e.Severity < r.MinSeverity || r.except[e.Event] {
		return false
	}
	for f, v := range r.Match {
		if fieldOf(e, f) != v {
			return false
		}
	}
	return true
}

// observe runs e through r and returns the hit, if any.
func (r *rule) observe(e *audit.Event) (hit, bool) {
	if !r.matches(e) {
		return hit{}, false
	}
	n := max(e.Count, 1)
	if r.Threshold == 0 {
		return hit{rule: r, e: e, n: n}, true
	}
	k := fieldsKey(e, r.CountBy)
	w := r.windows[k]
	if w == nil {
		if len(r.windows) >= MaxCountKeys {
			r.dropped++
			return hit{}, false
		}
		w = &window{}
		r.windows[k] = w
	}
	before := w.sum
	sum := w.add(e.Time, n, r.Window, r.res)
	if sum <= int64(r.Threshold) {
		return hit{}, false
	}
	if before-w.expired <= int64(r.Threshold) {
		return hit{rule: r, e: e, n: sum}, true // crossed: the group gets the whole window
	}
	return hit{rule: r, e: e, n: n}, true
}

// gc forgets windows with nothing left in them as of now.
func (r *rule) gc(now time.Time) {
	for k, w := range r.windows {
		if w.stale(now, r.Window, r.res) {
			delete(r.windows, k)
		}
	}
}

func fieldsKey(e *audit.Event, fields []string) string {
	if len(fields) == 0 {
		return ""
	}
	var b strings.Builder
	for _, f := range fields {
		b.WriteString(fieldOf(e, f))
		b.WriteByte(0)
	}
	return b.String()
}

// window counts events in a sliding window of slots.
type window struct {
	slots   []slot
	sum     int64
	expired int64 // dropped by the last add, before counting its event
}

type slot struct {
	start time.Time
	n     int64
}

// add counts n events at t and returns the count within (t-win, t].
// Events older than the newest slot are counted in it.
func (w *window) add(t time.Time, n int64, win, res time.Duration) int64 {
	w.expired = 0
	cut := t.Add(-win)
	i := 0
	for i < len(w.slots) && !w.slots[i].start.Add(res).After(cut) {
		w.expired += w.slots[i].n
		i++
	}
	if i > 0 {
		w.sum -= w.expired
		w.slots = append(w.slots[:0], w.slots[i:]...)
	}
	if l := len(w.slots); l > 0 && t.Sub(w.slots[l-1].start) < res {
		w.slots[l-1].n += n
	} else {
		w.slots = append(w.slots, slot{start: t.Truncate(res), n: n})
	}
	w.sum += n
	return w.sum
}

func (w *window) stale(now time.Time, win, res time.Duration) bool {
	l := len(w.slots)
	return l == 0 || !w.slots[l-1].start.Add(res).After(now.Add(-win))
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}
