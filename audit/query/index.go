package query

import (
	"strings"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/index"
)

// Per-file summaries (package audit/index) let a scan skip a rotated file
// whose summary shows the filter cannot match, and let CountBy event or
// reason add a file's counts without reading it. A file without a summary
// that describes it (missing, foreign, stale, unreadable) is read.

// loadIndex returns the summary of f when one applies.
func loadIndex(f File, o *Options) *index.Summary {
	if o.NoIndex || f.Active || f.Rotated.IsZero() || f.FirstSeq == 0 || f.Limit > 0 {
		return nil
	}
	blooms := o.Filter.IP.IsValid() || o.Filter.User != "" || o.Filter.Topic != ""
	s, err := index.ForFile(f.Path, f.FirstSeq, blooms)
	if err != nil {
		return nil
	}
	return s
}

// indexExcludes reports whether no event of the file s summarizes can
// match m. Bloom filters answer "certainly absent" only.
func (m *matcher) indexExcludes(s *index.Summary) bool {
	f := &m.f
	if s.Lines == 0 {
		return true
	}
	if !f.Since.IsZero() && s.Last.Before(f.Since) {
		return true
	}
	if !f.Until.IsZero() && !s.First.Before(f.Until) {
		return true
	}
	if m.events != nil {
		n := int64(0)
		for e := range m.events {
			n += s.Events[e]
		}
		if n == 0 {
			return true
		}
	}
	if f.Reason != "" && s.Reasons[f.Reason] == 0 {
		return true
	}
	if f.MinSeverity > audit.Info {
		n := int64(0)
		for name, c := range s.Severities {
			if severityOf([]byte(name)) >= f.MinSeverity {
				n += c
			}
		}
		if n == 0 {
			return true
		}
	}
	if f.IP.IsValid() && f.IP.IsSingleIP() && !s.IP.Has(f.IP.Addr().Unmap().WithZone("").String()) {
		return true
	}
	if f.User != "" && !s.User.Has(f.User) {
		return true
	}
	if f.Topic != "" && !strings.Contains(f.Topic, "*") && !s.Topic.Has(f.Topic) {
		return true
	}
	return false
}

// indexCounts returns the file's counts by key when the summary answers
// CountBy exactly: key event or reason, and a filter with no condition but
// a time window holding every event of the file.
func (m *matcher) indexCounts(s *index.Summary, key Key) (map[string]int64, bool) {
	f := &m.f
	if f.IP.IsValid() || f.User != "" || len(f.Events) > 0 || f.MinSeverity > audit.Info || f.Topic != "" || f.Reason != "" || f.Node != "" {
		return nil, false
	}
	if !f.Since.IsZero() && s.First.Before(f.Since) {
		return nil, false
	}
	if !f.Until.IsZero() && !s.Last.Before(f.Until) {
		return nil, false
	}
	switch key {
	case KeyEvent:
		return s.Events, true
	case KeyReason:
		return s.Reasons, true
	}
	return nil, false
}
