package query

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// LastLines returns the last n well-formed lines of files (in trail order),
// oldest first. Plain files are read backwards from their end, so a large
// active file costs only its tail; gzip files are streamed. A truncated last
// line and malformed lines are reported through warn (may be nil) and
// skipped.
func LastLines(files []File, n int, warn func(string)) ([][]byte, error) {
	if warn == nil {
		warn = func(string) {}
	}
	var out [][]byte // newest first
	for i := len(files) - 1; i >= 0 && len(out) < n; i-- {
		f := files[i]
		var got [][]byte
		var err error
		if f.Gzip {
			got, err = lastLinesStream(f, n-len(out), warn)
		} else {
			got, err = lastLinesBackward(f, n-len(out), warn)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// wellFormed reports whether line decodes as a trail line.
func wellFormed(line []byte) bool {
	var r Record
	return r.Parse(line, 0) == nil
}

// lastLinesBackward returns up to n lines from the end of a plain file,
// newest first.
func lastLinesBackward(f File, n int, warn func(string)) ([][]byte, error) {
	fh, err := os.Open(f.Path)
	if err != nil {
		return nil, fmt.Errorf("audit trail: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	end := st.Size()
	if f.Limit > 0 && f.Limit < end {
		end = f.Limit
	}
	var out [][]byte
	var tail []byte // bytes after the current chunk, starting at a line start
	const chunk = 64 << 10
	first := true
	for end > 0 && len(out) < n {
		start := max(end-chunk, 0)
		buf := make([]byte, end-start, int(end-start)+len(tail))
		if _, err := fh.ReadAt(buf, start); err != nil && err != io.EOF {
			return nil, err
		}
		buf = append(buf, tail...)
		if first {
			first = false
			k := bytes.LastIndexByte(buf, '\n')
			if rest := bytes.TrimSpace(buf[k+1:]); len(rest) > 0 {
				warn(fmt.Sprintf("%s: skipped a truncated last line (%d bytes, no newline)", f.Path, len(rest)))
			}
			buf = buf[:k+1]
		}
		for len(out) < n {
			body := bytes.TrimRight(buf, "\n")
			k := bytes.LastIndexByte(body, '\n')
			if k < 0 && start > 0 {
				break // the line may begin in the previous chunk
			}
			line := bytes.TrimSpace(body[k+1:])
			buf = body[:k+1]
			if len(line) > 0 {
				if wellFormed(line) {
					out = append(out, line)
				} else {
					warn(fmt.Sprintf("%s: skipped a malformed line (%d bytes)", f.Path, len(line)))
				}
			}
			if k < 0 {
				break
			}
		}
		tail = buf
		end = start
	}
	return out, nil
}

// lastLinesStream returns up to n lines from the end of a gzip file, newest
// first, reading it whole.
func lastLinesStream(f File, n int, warn func(string)) ([][]byte, error) {
	ring := make([][]byte, 0, n)
	pos := 0
	res := &fileResult{file: f, batches: make(chan []byte), done: make(chan struct{})}
	res.sink = &ringSink{ring: &ring, pos: &pos, n: n}
	scanFile(context.Background(), res, compile(Filter{}))
	for _, w := range res.warns {
		warn(w)
	}
	var out [][]byte
	for i := 0; i < len(ring); i++ {
		out = append(out, ring[(pos-1-i+len(ring))%len(ring)])
	}
	return out, nil
}

type ringSink struct {
	ring *[][]byte
	pos  *int
	n    int
}

func (s *ringSink) take(r *Record) {
	line := bytes.Clone(r.Line)
	if len(*s.ring) < s.n {
		*s.ring = append(*s.ring, line)
		*s.pos = len(*s.ring) % s.n
		return
	}
	(*s.ring)[*s.pos] = line
	*s.pos = (*s.pos + 1) % s.n
}

func (s *ringSink) flush(*fileResult, bool) {}

// Follower reads lines appended to the active file and follows it across
// rotation: when the path names a new file, it reads the old one to its end,
// then any file rotated in between (by the sequence numbers in their names),
// then the new file from its start. Not safe for concurrent use.
type Follower struct {
	path    string
	f       *os.File
	fi      os.FileInfo
	off     int64
	pending []byte
	lastSeq uint64
	warn    func(string)
	buf     []byte
}

// NewFollower returns a Follower of path (an active audit.log). If the file
// exists it is opened now and the returned offset is where following
// starts: the end of its last complete line (a partial line is delivered
// once complete). warn (may be nil) receives non-fatal problems.
func NewFollower(path string, warn func(string)) (*Follower, int64, error) {
	if warn == nil {
		warn = func(string) {}
	}
	fo := &Follower{path: path, warn: warn, buf: make([]byte, 64<<10)}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fo, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	fo.f, fo.fi = f, fi
	// Start after the last complete line.
	size := fi.Size()
	start := max(size-64<<10, 0)
	for {
		b := make([]byte, size-start)
		if _, err := f.ReadAt(b, start); err != nil && err != io.EOF {
			f.Close()
			return nil, 0, err
		}
		if k := bytes.LastIndexByte(b, '\n'); k >= 0 {
			fo.off = start + int64(k) + 1
			break
		}
		if start == 0 {
			fo.off = 0
			break
		}
		start = max(start-64<<10, 0)
	}
	if fo.off > 0 {
		var r Record
		if line := lastLineBefore(f, fo.off); line != nil && r.Parse(line, FieldSeq) == nil {
			fo.lastSeq = r.Seq
		}
	}
	return fo, fo.off, nil
}

func lastLineBefore(f *os.File, off int64) []byte {
	start := max(off-64<<10, 0)
	b := make([]byte, off-start)
	if _, err := f.ReadAt(b, start); err != nil && err != io.EOF {
		return nil
	}
	b = bytes.TrimRight(b, "\n")
	return b[bytes.LastIndexByte(b, '\n')+1:]
}

// Close releases the open file.
func (fo *Follower) Close() error {
	if fo.f == nil {
		return nil
	}
	err := fo.f.Close()
	fo.f = nil
	return err
}

// Run polls every interval (0 means 200 ms) until ctx is done, then
// returns nil. emit gets each new complete line, valid only until it
// returns; polled (may be nil) runs after every poll, e.g. to flush output.
// An error from emit, polled or reading stops Run.
func (fo *Follower) Run(ctx context.Context, interval time.Duration, emit func(line []byte) error, polled func() error) error {
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := fo.Poll(emit); err != nil {
			return err
		}
		if polled != nil {
			if err := polled(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Poll delivers what was appended since the last call, following a
// rotation if one happened. It never waits.
func (fo *Follower) Poll(emit func(line []byte) error) error {
	if fo.f == nil {
		f, err := os.Open(fo.path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		fo.f, fo.fi, fo.off, fo.pending = f, fi, 0, nil
	}
	if err := fo.readNew(emit); err != nil {
		return err
	}
	st, err := os.Stat(fo.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // between rename and create: the old file may still grow
	}
	if err != nil {
		return err
	}
	if !os.SameFile(fo.fi, st) {
		// Rotated: finish the old file, catch up on files rotated since,
		// then start the new one.
		if err := fo.readNew(emit); err != nil {
			return err
		}
		if len(bytes.TrimSpace(fo.pending)) > 0 {
			fo.warn(fmt.Sprintf("%s: skipped a truncated last line (%d bytes) of the rotated file", fo.path, len(fo.pending)))
		}
		fo.Close()
		fo.pending = nil
		if err := fo.catchUp(emit); err != nil {
			return err
		}
		return fo.Poll(emit)
	}
	if st.Size() < fo.off {
		fo.warn(fmt.Sprintf("%s: file shrank from %d to %d bytes; reading it again from the start", fo.path, fo.off, st.Size()))
		fo.off, fo.pending = 0, nil
		return fo.readNew(emit)
	}
	return nil
}

// readNew reads the open file from fo.off to its current end.
func (fo *Follower) readNew(emit func([]byte) error) error {
	for {
		n, err := fo.f.ReadAt(fo.buf, fo.off)
		fo.off += int64(n)
		fo.pending = append(fo.pending, fo.buf[:n]...)
		if e := fo.emitComplete(emit); e != nil {
			return e
		}
		if err == io.EOF || n == 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (fo *Follower) emitComplete(emit func([]byte) error) error {
	p := fo.pending
	for {
		k := bytes.IndexByte(p, '\n')
		if k < 0 {
			break
		}
		line := bytes.TrimSpace(p[:k])
		p = p[k+1:]
		if len(line) == 0 {
			continue
		}
		if err := fo.deliver(line, emit); err != nil {
			return err
		}
	}
	fo.pending = append(fo.pending[:0], p...)
	return nil
}

func (fo *Follower) deliver(line []byte, emit func([]byte) error) error {
	var r Record
	if r.Parse(line, FieldSeq) != nil {
		fo.warn(fmt.Sprintf("%s: skipped a malformed line (%d bytes)", fo.path, len(line)))
		return nil
	}
	if r.Seq > fo.lastSeq {
		fo.lastSeq = r.Seq
	}
	return emit(line)
}

// catchUp reads files rotated while the follower was not looking: those in
// the active file's directory whose first sequence number is above the last
// one delivered.
func (fo *Follower) catchUp(emit func([]byte) error) error {
	if fo.lastSeq == 0 {
		return nil
	}
	files, err := Discover([]string{filepath.Dir(fo.path)})
	if err != nil {
		return nil // the directory is gone; Poll waits for it
	}
	var missed []File
	for _, f := range files {
		if !f.Rotated.IsZero() && f.FirstSeq > fo.lastSeq {
			missed = append(missed, f)
		}
	}
	if len(missed) == 0 {
		return nil
	}
	_, err = Lines(context.Background(), missed, Options{Workers: 1, Warn: fo.warn}, func(line []byte) error {
		return fo.deliver(line, emit)
	})
	return err
}
