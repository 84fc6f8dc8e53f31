package audit

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/portcullis-gw/portcullis/audit/chain"
	"github.com/portcullis-gw/portcullis/audit/index"
	"github.com/portcullis-gw/portcullis/audit/query"
)

// written is a string field as a reader decodes it from the line: capped,
// and with each invalid UTF-8 byte replaced by U+FFFD (AppendJSONString).
func written(s string) string {
	s = Cap(s)
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// hashesOf computes the summary's Bloom hashes of e's values as written;
// it runs on the format workers, off the writer goroutine.
func hashesOf(h *index.Hashes, e *Event) {
	*h = index.Hashes{}
	if e.IP != "" {
		h.IP, h.Has = index.HashIP(plain(e.IP)), h.Has|index.HasIP
	}
	if e.PeerIP != "" {
		h.PeerIP, h.Has = index.HashIP(plain(e.PeerIP)), h.Has|index.HasPeerIP
	}
	if e.CountedPrefix != "" {
		h.CountedPrefix, h.Has = hashStr(e.CountedPrefix), h.Has|index.HasCountedPrefix
	}
	if e.UserID != "" {
		h.User, h.Has = hashStr(e.UserID), h.Has|index.HasUser
	}
	if e.Topic != "" {
		h.Topic, h.Has = hashStr(e.Topic), h.Has|index.HasTopic
	}
}

// plain is written(s), without looking twice at the usual short ASCII value.
func plain(s string) string {
	if len(s) <= MaxFieldLen && isPlain(s) {
		return s
	}
	return written(s)
}

// hashStr is index.Hash(written(s)) in one pass for a short ASCII value.
func hashStr(s string) uint64 {
	if len(s) <= MaxFieldLen {
		if h, ok := index.HashASCII(s); ok {
			return h
		}
	}
	return index.Hash(written(s))
}

// indexLine adds a sealed line (newline included) to the active file's
// summary.
func (w *Writer) indexLine(line []byte, e *Event, h *index.Hashes) {
	if w.idx.Incomplete {
		return
	}
	n := int64(1)
	if e.Count > 0 {
		n = e.Count
	}
	lo, hi := e.Time, e.Time
	if !e.First.IsZero() && e.First.Before(lo) {
		lo = e.First
	}
	if e.Last.After(hi) {
		hi = e.Last
	}
	w.idx.Add(len(line), w.seq, plain(e.Event), plain(e.Reason), int(e.Severity), n, lo, hi, h)
}

// isPlain reports whether s is ASCII (and so valid UTF-8).
func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// rebuildSummary reads a rotated plain file to build its summary, for a
// file whose lines the writer did not all see (it resumed an existing file
// or compresses one left by a crash). Nil when a line does not decode: the
// file is then scanned by every query instead.
func rebuildSummary(path string) *index.Summary {
	name := filepath.Base(path)
	_, firstSeq, gz, ok := chain.ParseRotatedName(name)
	if !ok || gz {
		return nil
	}
	bad := false
	b := index.NewBuilder()
	var h index.Hashes
	var lastMAC string
	const want = query.FieldTime | query.FieldFirst | query.FieldLast | query.FieldSeq | query.FieldEvent |
		query.FieldReason | query.FieldSeverity | query.FieldCount | query.FieldIP | query.FieldPeerIP |
		query.FieldCountedPrefix | query.FieldUser | query.FieldTopic
	o := query.Options{Workers: 1, Warn: func(string) { bad = true }}
	files := []query.File{{Path: path}}
	_, err := query.Records(context.Background(), files, o, want, func(r *query.Record) error {
		_, mac, ok := chain.Split(r.Line)
		if !ok {
			bad = true
			return errors.New("not a sealed line")
		}
		lastMAC = string(mac)
		lo, hi := r.Time, r.Time
		if !r.First.IsZero() && (lo.IsZero() || r.First.Before(lo)) {
			lo = r.First
		}
		if r.Last.After(hi) {
			hi = r.Last
		}
		if lo.IsZero() {
			bad = true // cannot be placed in a time window
			return errors.New("no time")
		}
		sev := 4
		if s, ok := ParseSeverity(string(r.Severity)); ok {
			sev = int(s)
		} else if len(r.Severity) == 0 {
			sev = 0
		}
		h.Set(string(r.IP), string(r.PeerIP), string(r.CountedPrefix), string(r.User), string(r.Topic))
		b.Add(len(r.Line)+1, r.Seq, string(r.Event), string(r.Reason), sev, r.N(), lo, hi, &h)
		return nil
	})
	if err != nil || bad || b.Lines() == 0 || b.FirstSeq() != firstSeq {
		return nil
	}
	return b.Finish(name, lastMAC)
}
