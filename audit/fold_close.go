package audit

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Mass closes: when thousands of connections end at once (the clients'
// network drops, a load balancer restarts), their conn_close lines of one
// cause — same reason and close code — beyond the first closeAfter per
// window (foldWindow) are folded into one summary conn_close line per
// window: count, first and last time, the longest lifetime, and in detail
// how many distinct addresses closed and the counted prefixes that closed
// most. The fields all folded closes share (protocol, address, counted
// prefix, user) are kept. Nothing is left uncounted: every close is in
// exactly one line, verbatim or in one summary's count.

// DefaultCloseFoldAfter is how many closes of one cause per window are
// written verbatim at least (more when Options.FoldAfter is higher).
const DefaultCloseFoldAfter = 20

// maxCloseKeys bounds the causes folded at once: beyond it a close of a new
// cause is written verbatim.
const maxCloseKeys = 64

// maxCloseAddrs bounds the distinct addresses the close windows remember
// together, to count them; a window that meets the bound reports "at
// least" its count.
const maxCloseAddrs = 1 << 17

// maxClosePrefixes bounds the counted prefixes a window counts closes
// under; closes under further prefixes are counted as "other".
const maxClosePrefixes = 1024

// closeTopPrefixes is how many counted prefixes a summary names.
const closeTopPrefixes = 3

type closeKey struct {
	reason reason.Reason
	code   int
	sev    Severity
}

// closeWin is one cause's current window.
type closeWin struct {
	start       time.Time // window start: the first close's time
	passed      int       // written verbatim in this window
	folded      int64     // folded into the pending summary
	first, last time.Time
	longest     int64 // the longest lifetime folded, in ms
	sample      Event // the first folded close
	sameProto   bool
	sameIP      bool
	samePeer    bool
	samePrefix  bool
	sameUser    bool

	addrs       map[netip.Addr]struct{} // distinct client addresses folded
	addrsCapped bool                    // addrs met maxCloseAddrs: its size is a lower bound
	prefixes    map[netip.Prefix]int64  // folded closes by counted prefix
	otherPrefix int64                   // folded closes under a prefix beyond maxClosePrefixes
}

// addClose folds conn_close e unless it is among the first closeAfter of
// its cause in the current window; it reports whether it did.
func (f *folder) addClose(e *Event) bool {
	k := closeKey{reason: e.Reason, code: e.Code, sev: e.Severity}
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.closes[k]
	if w == nil {
		if len(f.closes) >= maxCloseKeys {
			return false
		}
		w = &closeWin{start: e.Time}
		f.closes[k] = w
	} else if e.Time.Sub(w.start) >= foldWindow {
		if w.folded > 0 {
			f.ready = append(f.ready, w.summary())
		}
		f.addrs -= len(w.addrs)
		*w = closeWin{start: e.Time}
	}
	if w.passed < f.closeAfter {
		w.passed++
		return false
	}
	if w.folded == 0 {
		w.sample, w.first, w.last, w.longest = *e, e.Time, e.Time, e.DurationMS
		w.sameProto, w.sameIP, w.samePeer, w.samePrefix, w.sameUser = true, true, true, true, true
		w.addrs = make(map[netip.Addr]struct{})
		w.prefixes = make(map[netip.Prefix]int64)
	} else {
		if e.Time.Before(w.first) {
			w.first = e.Time
		}
		if e.Time.After(w.last) {
			w.last = e.Time
		}
		w.longest = max(w.longest, e.DurationMS)
		s := &w.sample
		w.sameProto = w.sameProto && e.Proto == s.Proto
		w.sameIP = w.sameIP && e.IP == s.IP
		w.samePeer = w.samePeer && e.PeerIP == s.PeerIP
		w.samePrefix = w.samePrefix && e.CountedPrefix == s.CountedPrefix
		w.sameUser = w.sameUser && e.UserID == s.UserID
	}
	w.folded++
	if e.IP.IsValid() {
		if _, seen := w.addrs[e.IP]; !seen {
			if f.addrs < maxCloseAddrs {
				w.addrs[e.IP] = struct{}{}
				f.addrs++
			} else {
				w.addrsCapped = true
			}
		}
	}
	if n, ok := w.prefixes[e.CountedPrefix]; ok || len(w.prefixes) < maxClosePrefixes {
		w.prefixes[e.CountedPrefix] = n + 1
	} else {
		w.otherPrefix++
	}
	return true
}

// summary is the window's summary line: a conn_close with Count, First
// and Last, the longest lifetime in DurationMS, the shared fields, and in
// Detail the distinct addresses and the top counted prefixes.
func (w *closeWin) summary() Event {
	s := &w.sample
	e := Event{Time: w.last, Event: KindConnClose, Severity: s.Severity, Stage: s.Stage, Reason: s.Reason, Code: s.Code,
		Count: w.folded, First: w.first, Last: w.last, DurationMS: w.longest}
	if w.sameProto {
		e.Proto = s.Proto
	}
	if w.sameIP {
		e.IP = s.IP
	}
	if w.samePeer {
		e.PeerIP = s.PeerIP
	}
	if w.samePrefix {
		e.CountedPrefix = s.CountedPrefix
	}
	if w.sameUser {
		e.UserID = s.UserID
	}
	e.Detail = Cap(w.detail())
	return e
}

// detail reads, for example: "mass close: 14980 closes of this reason and
// code beyond the first 20 within 1s, from 14980 distinct addresses; top
// counted prefixes 198.51.100.0/24 ×9000, 203.0.113.0/24 ×5980" (the
// addresses and prefixes are the folded closes').
func (w *closeWin) detail() string {
	b := make([]byte, 0, 200)
	b = append(b, "mass close: "...)
	b = strconv.AppendInt(b, w.folded, 10)
	b = append(b, " closes of this reason and code beyond the first "...)
	b = strconv.AppendInt(b, int64(w.passed), 10)
	b = append(b, " within "...)
	b = append(b, foldWindow.String()...)
	b = append(b, ", from "...)
	if w.addrsCapped {
		b = append(b, "at least "...)
	}
	b = strconv.AppendInt(b, int64(len(w.addrs)), 10)
	b = append(b, " distinct addresses"...)
	type pc struct {
		p netip.Prefix
		n int64
	}
	top := make([]pc, 0, closeTopPrefixes+1)
	for p, n := range w.prefixes {
		if !p.IsValid() {
			continue
		}
		top = append(top, pc{p, n})
		slices.SortFunc(top, func(a, b pc) int {
			if c := cmp.Compare(b.n, a.n); c != 0 {
				return c
			}
			return a.p.Addr().Compare(b.p.Addr())
		})
		if len(top) > closeTopPrefixes {
			top = top[:closeTopPrefixes]
		}
	}
	for i, t := range top {
		if i == 0 {
			b = append(b, "; top counted prefixes "...)
		} else {
			b = append(b, ", "...)
		}
		b = t.p.AppendTo(b)
		b = append(b, " ×"...)
		b = strconv.AppendInt(b, t.n, 10)
	}
	if w.otherPrefix > 0 {
		b = append(b, "; "...)
		b = strconv.AppendInt(b, w.otherPrefix, 10)
		b = append(b, " under further prefixes not counted apart"...)
	}
	return string(b)
}
