package audit

import (
	"net/netip"
	"sync"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Flood summarization: identical warning-level rejections (same event,
// severity, reason and counted prefix — the address when no prefix is set)
// beyond the first FoldAfter per window are folded into one summary event
// carrying Count and the First/Last time, written when the window ends.
// Nothing is left uncounted: every folded event is in exactly one summary.

// foldWindow is how long identical rejections are counted before their
// summary is written.
const foldWindow = time.Second

// maxFoldKeys bounds the table: beyond it new keys are not folded (they go
// through the queue like any other event).
const maxFoldKeys = 4096

// foldable reports whether e may be folded: warning-or-lower rejections
// (floods) and conn_close (mass closes, see closeFold); never conn_open,
// ban or admin events, nor an event that is already a summary.
func foldable(e *Event) bool {
	if e.Severity > Warning || e.Count != 0 {
		return false
	}
	return e.Event.Refusal() || e.Event == KindConnClose
}

type foldKey struct {
	reason reason.Reason
	prefix netip.Prefix // the counted prefix
	ip     netip.Addr   // the address, when no prefix is set
	event  Kind
	sev    Severity
}

type foldWin struct {
	start       time.Time // window start: the first event's time
	passed      int       // written verbatim in this window
	folded      int64     // folded into the pending summary
	first, last time.Time
	sample      Event // the first folded event
	sameIP      bool
}

// folder folds floods and mass closes. It is safe for use by multiple
// goroutines.
type folder struct {
	after      int // rejections per key and window written verbatim
	closeAfter int // closes per cause and window written verbatim

	mu     sync.Mutex
	keys   map[foldKey]*foldWin
	closes map[closeKey]*closeWin
	addrs  int     // addresses held by the closes' windows, bounded by maxCloseAddrs
	ready  []Event // summaries of windows that ended on an Emit
}

// newFolder returns a folder that writes the first after rejections of a
// key per window verbatim, and the first max(after, DefaultCloseFoldAfter)
// closes of a cause.
func newFolder(after int) *folder {
	return &folder{after: after, closeAfter: max(after, DefaultCloseFoldAfter),
		keys: make(map[foldKey]*foldWin), closes: make(map[closeKey]*closeWin)}
}

// add reports whether e was folded (the caller must then not write it).
// e must be foldable.
func (f *folder) add(e *Event) bool {
	if e.Event == KindConnClose {
		return f.addClose(e)
	}
	k := foldKey{event: e.Event, reason: e.Reason, prefix: e.CountedPrefix, sev: e.Severity}
	if !k.prefix.IsValid() {
		k.ip = e.IP
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.keys[k]
	if w == nil {
		if len(f.keys) >= maxFoldKeys {
			return false
		}
		w = &foldWin{start: e.Time}
		f.keys[k] = w
	} else if e.Time.Sub(w.start) >= foldWindow {
		if w.folded > 0 {
			f.ready = append(f.ready, w.summary())
		}
		*w = foldWin{start: e.Time}
	}
	if w.passed < f.after {
		w.passed++
		return false
	}
	if w.folded == 0 {
		w.sample, w.first, w.last, w.sameIP = *e, e.Time, e.Time, true
	} else {
		if e.Time.Before(w.first) {
			w.first = e.Time
		}
		if e.Time.After(w.last) {
			w.last = e.Time
		}
		if w.sameIP && e.IP != w.sample.IP {
			w.sameIP = false
		}
	}
	w.folded++
	return true
}

// take returns the summaries of windows that ended by now (all of them if
// all is set) and forgets idle windows.
func (f *folder) take(now time.Time, all bool) []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.ready
	f.ready = nil
	for k, w := range f.keys {
		if !all && now.Sub(w.start) < foldWindow {
			continue
		}
		if w.folded > 0 {
			out = append(out, w.summary())
		}
		delete(f.keys, k)
	}
	for k, w := range f.closes {
		if !all && now.Sub(w.start) < foldWindow {
			continue
		}
		if w.folded > 0 {
			out = append(out, w.summary())
		}
		f.addrs -= len(w.addrs)
		delete(f.closes, k)
	}
	return out
}

func (w *foldWin) summary() Event {
	s := w.sample
	e := Event{Time: w.last, Event: s.Event, Severity: s.Severity, Stage: s.Stage, Reason: s.Reason,
		CountedPrefix: s.CountedPrefix, Proto: s.Proto, Code: s.Code, Count: w.folded, First: w.first, Last: w.last,
		Detail: "summary of identical events beyond the first few per second"}
	if w.sameIP {
		e.IP = s.IP
	}
	return e
}
