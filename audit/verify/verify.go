// Package verify checks an audit trail written by package audit: the
// HMAC-SHA256 chain of every line across rotated (and gzip'd) files, the
// sequence numbers, the header line that opens each file, and the signed
// checkpoints that catch a trail truncated or rewritten by someone holding
// the HMAC key.
//
// verify imports only audit/chain; it never writes.
package verify

import (
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/portcullis-gw/portcullis/audit/chain"
)

// Options say what to check.
type Options struct {
	Key []byte // HMAC key of the chain (required)
	// PublicKey verifies checkpoint signatures; required when checkpoints are checked.
	PublicKey ed25519.PublicKey
	// Checkpoints are checkpoint files to check the trail against, e.g. the
	// off-host copy; Dir adds the directory's own checkpoints.log.
	Checkpoints []string
	// RequireCheckpoints makes a missing checkpoints file, or one without a
	// single valid checkpoint, a problem.
	RequireCheckpoints bool
	// Complete says the files are a whole trail (a directory): an oldest
	// file whose predecessor was not deleted by recorded retention is a
	// problem.
	Complete bool
}

// Problem is one thing found wrong, at a file and line (1-based; 0 when it
// concerns the whole file).
type Problem struct {
	File    string
	Line    int
	What    string
	Warning bool // worth knowing, but not a break (a crash, not tampering)
}

// String returns "file:line: what".
func (p Problem) String() string {
	s := p.File
	if p.Line > 0 {
		s += fmt.Sprintf(":%d", p.Line)
	}
	if p.Warning {
		return s + ": warning: " + p.What
	}
	return s + ": " + p.What
}

// Report is the outcome of a verification.
type Report struct {
	Files, Lines      int
	FirstSeq, LastSeq uint64
	Checkpoints       int               // valid checkpoints read
	LastCheckpoint    *chain.Checkpoint // the one with the highest seq (latest time among equals)
	Problems          []Problem
}

// OK reports whether nothing but warnings was found.
func (r *Report) OK() bool {
	for _, p := range r.Problems {
		if !p.Warning {
			return false
		}
	}
	return true
}

// Dir verifies the trail in dir against dir/checkpoints.log (required) and
// o.Checkpoints.
func Dir(dir string, o Options) (*Report, error) {
	files, err := chain.ListTrail(dir)
	if err != nil {
		return nil, err
	}
	o.Checkpoints = append([]string{filepath.Join(dir, chain.CheckpointsName)}, o.Checkpoints...)
	o.RequireCheckpoints, o.Complete = true, true
	return Files(files, o)
}

// Paths verifies the files given by path as one trail, in trail order.
func Paths(paths []string, o Options) (*Report, error) {
	files := make([]chain.File, 0, len(paths))
	for _, p := range paths {
		files = append(files, chain.FileOf(p))
	}
	chain.SortFiles(files)
	return Files(files, o)
}

type checkpoint struct {
	chain.CheckpointLine
}

// Files verifies files, in the order given, as one trail.
func Files(files []chain.File, o Options) (*Report, error) {
	if len(o.Key) == 0 {
		return nil, errors.New("verify: no HMAC key")
	}
	v := &verifier{o: o, r: &Report{}, sealer: chain.NewSealer(o.Key), removed: map[string]bool{}}
	if err := v.loadCheckpoints(); err != nil {
		return nil, err
	}
	for i := range files {
		if err := v.file(files, i); err != nil {
			return nil, err
		}
	}
	v.finish(files)
	return v.r, nil
}

type verifier struct {
	o      Options
	r      *Report
	sealer *chain.Sealer
	cps    []checkpoint // valid checkpoints by seq
	cpi    int

	started  bool   // a valid line was seen
	prev     []byte // mac of the last valid line
	prevBuf  [chain.MACHexLen]byte
	macBuf   []byte
	lastSeq  uint64
	lastFile string
	lastLine int

	firstHeaderPrevFile string // the previous file named by the trail's first line
	firstIsNewTrail     bool
	firstFile           string
	removed             map[string]bool // files recorded as deleted by retention
}

func (v *verifier) problem(file string, line int, warn bool, format string, a ...any) {
	v.r.Problems = append(v.r.Problems, Problem{File: file, Line: line, What: fmt.Sprintf(format, a...), Warning: warn})
}

func (v *verifier) loadCheckpoints() error {
	if len(v.o.Checkpoints) == 0 {
		return nil
	}
	for _, p := range v.o.Checkpoints {
		lines, err := chain.ReadCheckpoints(p)
		if errors.Is(err, os.ErrNotExist) {
			if v.o.RequireCheckpoints {
				v.problem(p, 0, false, "checkpoints file missing: the trail cannot be checked for truncation or rewriting")
			}
			continue
		}
		if err != nil {
			return err
		}
		if v.o.PublicKey == nil && len(lines) > 0 {
			return fmt.Errorf("verify: no checkpoint public key to check %s", p)
		}
		for _, l := range lines {
			switch {
			case l.Err != nil:
				v.problem(p, l.Line, false, "%v", l.Err)
			case !l.Valid(v.o.PublicKey):
				v.problem(p, l.Line, false, "checkpoint signature invalid (seq %d): forged or modified", l.Seq)
			default:
				v.cps = append(v.cps, checkpoint{l})
			}
		}
	}
	sort.SliceStable(v.cps, func(i, j int) bool { return v.cps[i].Seq < v.cps[j].Seq })
	v.r.Checkpoints = len(v.cps)
	if n := len(v.cps); n > 0 {
		last := v.cps[n-1].Checkpoint
		for _, c := range v.cps {
			if c.Seq == last.Seq && c.Time.After(last.Time) {
				last = c.Checkpoint
			}
		}
		v.r.LastCheckpoint = &last
	} else if v.o.RequireCheckpoints {
		v.problem(v.o.Checkpoints[0], 0, false, "no valid checkpoint")
	}
	return nil
}

type chunk struct {
	b   []byte
	err error
}

// readChunks sends r's content in chunks of about 1 MiB that end with a
// newline, except the last one, then closes out.
func readChunks(r io.Reader, out chan<- chunk) {
	defer close(out)
	var carry []byte
	for {
		buf := make([]byte, len(carry), len(carry)+1<<20)
		copy(buf, carry)
		m, err := io.ReadFull(r, buf[len(carry):cap(buf)])
		buf = buf[:len(carry)+m]
		if err == nil {
			i := bytes.LastIndexByte(buf, '\n')
			if i < 0 {
				carry = buf // a line longer than the chunk: read on
				continue
			}
			carry = bytes.Clone(buf[i+1:])
			buf = buf[:i+1]
		}
		if len(buf) > 0 {
			out <- chunk{b: buf}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				out <- chunk{err: err}
			}
			return
		}
	}
}

type garbageLine struct {
	line  int
	bytes int64
}

func (v *verifier) file(files []chain.File, idx int) error {
	f := files[idx]
	fh, err := os.Open(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		v.problem(f.Path, 0, false, "file missing")
		return nil
	}
	if err != nil {
		return err
	}
	defer fh.Close()
	var src io.Reader = fh
	if f.Gz {
		zr, err := gzip.NewReader(fh)
		if err != nil {
			v.problem(f.Path, 0, false, "not a gzip file: %v", err)
			return nil
		}
		defer zr.Close()
		src = zr
	}
	v.r.Files++
	// Reading (and inflating) runs on its own goroutine, ahead of the
	// HMAC checks, in chunks that end at a line boundary.
	chunks := make(chan chunk, 4)
	go readChunks(src, chunks)
	defer func() {
		for range chunks { // unblock the reader on an early return
		}
	}()
	var garbage []garbageLine
	first := true
	n := 0
	for c := range chunks {
		if c.err != nil {
			v.problem(f.Path, n+1, false, "read error: %v", c.err)
			break
		}
		b := c.b
		for len(b) > 0 {
			i := bytes.IndexByte(b, '\n')
			n++
			if i < 0 {
				if idx == len(files)-1 {
					v.problem(f.Path, n, true, "truncated last line (%d bytes, no newline): the writer stopped mid-write; its next start repairs it", len(b))
				} else {
					v.problem(f.Path, n, false, "incomplete last line in a file that is not the newest")
				}
				break
			}
			line := b[:i]
			b = b[i+1:]
			body, mac, ok := chain.Split(line)
			if !ok {
				garbage = append(garbage, garbageLine{n, int64(len(line)) + 1})
			} else {
				garbage = v.line(files, idx, n, first, body, mac, garbage)
				first = false
			}
		}
	}
	for _, g := range garbage {
		v.problem(f.Path, g.line, false, "not a sealed audit line (%d bytes)", g.bytes-1)
	}
	if first && n == 0 && !f.Active {
		v.problem(f.Path, 0, false, "empty rotated file")
	}
	return nil
}

// line checks one sealed line; it returns the garbage still pending.
func (v *verifier) line(files []chain.File, idx, n int, first bool, body, mac []byte, garbage []garbageLine) []garbageLine {
	f := files[idx]
	path := f.Path
	seqB, _ := chain.Field(body, chain.KeySeq)
	seq, seqOK := chain.Uint(seqB)
	stated, prevOK := chain.Field(body, chain.KeyPrev)
	event, _ := chain.Field(body, chain.KeyEvent)
	isHeader := string(event) == chain.EventHeader
	var reason []byte
	if isHeader {
		reason, _ = chain.Field(body, chain.KeyReason)
	}
	if !seqOK || !prevOK || len(stated) != chain.MACHexLen {
		garbage = append(garbage, garbageLine{n, int64(len(body) + chain.SuffixLen + 1)})
		return garbage
	}
	if len(garbage) > 0 {
		var total int64
		for _, g := range garbage {
			total += g.bytes
		}
		cnt, _ := chain.Field(body, chain.KeyCount)
		c, _ := chain.Uint(cnt)
		if isHeader && string(reason) == chain.HeaderRepaired && int64(c) == total {
			v.problem(path, garbage[0].line, true, "%d bytes left incomplete by a crash, recorded by the repair header at line %d (seq %d)", total, n, seq)
		} else {
			for _, g := range garbage {
				v.problem(path, g.line, false, "not a sealed audit line (%d bytes)", g.bytes-1)
			}
		}
		garbage = garbage[:0]
	}
	var what []string
	if first {
		detail, _ := chain.Field(body, chain.KeyDetail)
		named, hasNamed := chain.PreviousFile(detail)
		switch {
		case !isHeader:
			what = append(what, "file does not start with a header line: lines before it are missing")
		case idx > 0 && (!hasNamed || named != files[idx-1].Name):
			what = append(what, fmt.Sprintf("header names previous file %q but the preceding file is %q: a file of the trail is missing", named, files[idx-1].Name))
		}
		if !v.started {
			v.firstFile = path
			v.firstIsNewTrail = isHeader && string(reason) == chain.HeaderNewTrail
			v.firstHeaderPrevFile = named
			if v.firstIsNewTrail {
				v.prev, v.lastSeq = chain.ZeroMAC, 0
			} else {
				v.prev, v.lastSeq = stated, seq-1 // cannot be checked: the trail starts later
			}
			v.r.FirstSeq = seq
			v.started = true
		}
	}
	v.macBuf = v.sealer.MAC(v.macBuf[:0], v.prev, body)
	if !bytes.Equal(v.macBuf, mac) {
		v.macBuf = v.sealer.MAC(v.macBuf[:0], stated, body)
		if bytes.Equal(v.macBuf, mac) {
			what = append(what, "chain broken: this line does not follow the line before it (lines deleted or reordered, or a file missing)")
		} else {
			what = append(what, "mac mismatch: the line was modified or its mac forged")
		}
	} else if !bytes.Equal(stated, v.prev) {
		what = append(what, "prev field differs from the previous line's mac")
	}
	switch {
	case seq == v.lastSeq+1:
	case seq > v.lastSeq+1:
		what = append(what, fmt.Sprintf("seq jumps from %d to %d: %d line(s) missing", v.lastSeq, seq, seq-v.lastSeq-1))
	default:
		what = append(what, fmt.Sprintf("seq %d after %d: lines reordered or repeated", seq, v.lastSeq))
	}
	// Checkpoints up to this seq.
	for v.cpi < len(v.cps) && v.cps[v.cpi].Seq <= seq {
		c := v.cps[v.cpi]
		v.cpi++
		switch {
		case c.Seq < v.r.FirstSeq:
			// Before the trail's start (removed by retention): nothing to compare.
		case c.Seq < seq:
			what = append(what, fmt.Sprintf("checkpoint %s:%d (seq %d, %s) names a line that is not in the trail", c.Path, c.Line, c.Seq, c.Time.Format(time.RFC3339)))
		case c.MAC != string(mac):
			what = append(what, fmt.Sprintf("line differs from checkpoint %s:%d signed at %s: rewritten", c.Path, c.Line, c.Time.Format(time.RFC3339)))
		}
	}
	if string(event) == chain.EventRetention {
		if d, ok := chain.Field(body, chain.KeyDetail); ok {
			name, _, _ := strings.Cut(string(d), " ")
			v.removed[strings.TrimSuffix(name, ".gz")] = true
		}
	}
	for _, w := range what {
		v.problem(path, n, false, "%s", w)
	}
	v.prev = append(v.prevBuf[:0], mac...)
	v.lastSeq = seq
	v.lastFile, v.lastLine = path, n
	v.r.LastSeq = seq
	v.r.Lines++
	return garbage
}

func (v *verifier) finish(files []chain.File) {
	if v.started && v.o.Complete && !v.firstIsNewTrail {
		switch {
		case v.firstHeaderPrevFile == "":
			v.problem(v.firstFile, 1, false, "the trail starts at seq %d without naming its previous file", v.r.FirstSeq)
		case !v.removed[v.firstHeaderPrevFile]:
			v.problem(v.firstFile, 1, false, "previous file %q is missing and was not removed by retention", v.firstHeaderPrevFile)
		}
	}
	if !v.started && len(files) > 0 && v.o.Complete {
		v.problem(files[0].Path, 0, false, "no audit line found")
	}
	if v.r.LastCheckpoint != nil && v.started && v.r.LastCheckpoint.Seq > v.lastSeq {
		c := v.r.LastCheckpoint
		file, line := v.lastFile, v.lastLine
		v.problem(file, line, false, "the trail ends at seq %d but a checkpoint signed at %s covers seq %d: %d line(s) truncated or the trail rewritten",
			v.lastSeq, c.Time.Format(time.RFC3339), c.Seq, c.Seq-v.lastSeq)
	}
}
