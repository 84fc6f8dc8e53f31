package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/portcullis-gw/portcullis/audit/chain"
	"github.com/portcullis-gw/portcullis/audit/index"
	"github.com/portcullis-gw/portcullis/audit/reason"
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
	if e.IP.IsValid() {
		h.IP, h.Has = index.HashAddr(e.IP), h.Has|index.HasIP
	}
	if e.PeerIP.IsValid() {
		h.PeerIP, h.Has = index.HashAddr(e.PeerIP), h.Has|index.HasPeerIP
	}
	if e.CountedPrefix.IsValid() {
		// A prefix's text is short ASCII: Hash of what is written.
		var buf [64]byte
		h.CountedPrefix, h.Has = index.HashBytes(e.CountedPrefix.AppendTo(buf[:0])), h.Has|index.HasCountedPrefix
	}
	if e.UserID != "" {
		h.User, h.Has = hashStr(e.UserID), h.Has|index.HasUser
	}
	if e.Topic != "" {
		h.Topic, h.Has = hashStr(e.Topic), h.Has|index.HasTopic
	}
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
	var why string
	if e.Reason != reason.None {
		why = e.Reason.String()
	}
	w.idx.Add(len(line), w.seq, e.Event.String(), why, int(e.Severity), n, lo, hi, h)
}

// summaryLine is what rebuildSummary decodes of a line: the fields a summary
// is built from. Its tags are Field… constants (TestSummaryLineKeys).
type summaryLine struct {
	Time          time.Time `json:"time"`
	First         time.Time `json:"first"`
	Last          time.Time `json:"last"`
	Seq           uint64    `json:"seq"`
	Event         string    `json:"event"`
	Reason        string    `json:"reason"`
	Severity      string    `json:"severity"`
	Count         int64     `json:"count"`
	IP            string    `json:"ip"`
	PeerIP        string    `json:"peer_ip"`
	CountedPrefix string    `json:"counted_prefix"`
	User          string    `json:"userId"`
	Topic         string    `json:"topic"`
}

// rebuildSummary reads a rotated plain file to build its summary, for a
// file whose lines the writer did not all see (it resumed an existing file
// or compresses one left by a crash). Nil when a line does not decode: the
// file is then scanned by every query instead. It runs on the janitor's
// goroutine, rarely, so it decodes with encoding/json; audit/query, the
// fast reader, depends on this package and not the other way round.
func rebuildSummary(path string) *index.Summary {
	name := filepath.Base(path)
	_, firstSeq, gz, ok := chain.ParseRotatedName(name)
	if !ok || gz {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	rd := bufio.NewReaderSize(f, 64<<10)
	b := index.NewBuilder()
	var h index.Hashes
	var lastMAC string
	for {
		line, err := rd.ReadBytes('\n')
		if len(line) == 0 && err == io.EOF {
			break
		}
		if err != nil && err != io.EOF {
			return nil
		}
		size := len(line)
		line = bytes.TrimSuffix(line, []byte{'\n'})
		if size == len(line) {
			size++ // the last line without its newline counts as if it had one
		}
		_, mac, ok := chain.Split(line)
		if !ok {
			return nil // not a sealed line
		}
		var r summaryLine
		if json.Unmarshal(line, &r) != nil {
			return nil
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
			return nil // cannot be placed in a time window
		}
		sev := 4
		if s, ok := ParseSeverity(r.Severity); ok {
			sev = int(s)
		} else if r.Severity == "" {
			sev = 0
		}
		n := r.Count
		if n <= 0 {
			n = 1
		}
		h.Set(r.IP, r.PeerIP, r.CountedPrefix, r.User, r.Topic)
		b.Add(size, r.Seq, r.Event, r.Reason, sev, n, lo, hi, &h)
		if err == io.EOF {
			break
		}
	}
	if b.Lines() == 0 || b.FirstSeq() != firstSeq {
		return nil
	}
	return b.Finish(name, lastMAC)
}
