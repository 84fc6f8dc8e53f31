package audit

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/portcullis-gw/portcullis/audit/chain"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// file is what the writer needs of an open audit file.
type file interface {
	io.Writer
	Sync() error
	Close() error
}

// fileSystem is what the writer does to the audit directory; tests inject
// faults (ENOSPC, EACCES, slow writes) through it.
type fileSystem interface {
	OpenFile(name string, flag int, perm os.FileMode) (file, error)
	Rename(oldpath, newpath string) error
	SyncDir(dir string) error
}

type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	return os.OpenFile(name, flag, perm)
}
func (osFS) Rename(o, n string) error { return os.Rename(o, n) }
func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// lineInfo is what resuming needs of a line.
type lineInfo struct {
	seq  uint64
	mac  []byte
	time time.Time
}

func parseLine(line []byte) (lineInfo, bool) {
	body, mac, ok := chain.Split(line)
	if !ok {
		return lineInfo{}, false
	}
	v, ok := chain.Field(body, chain.KeySeq)
	if !ok {
		return lineInfo{}, false
	}
	seq, ok := chain.Uint(v)
	if !ok {
		return lineInfo{}, false
	}
	li := lineInfo{seq: seq, mac: bytes.Clone(mac)}
	if t, ok := chain.Field(body, chain.KeyTime); ok {
		li.time, _ = time.Parse(time.RFC3339Nano, string(t))
	}
	return li, true
}

// tailState describes an existing file for resuming.
type tailState struct {
	first, last lineInfo // first and last well-formed lines
	lines       bool     // any well-formed line
	size        int64    // file size
	garbage     int64    // bytes after the last well-formed line's newline
}

// scanTail finds the last well-formed line of the file at path, reading
// backwards, and the first one, reading forwards.
func scanTail(path string) (tailState, error) {
	f, err := os.Open(path)
	if err != nil {
		return tailState{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return tailState{}, err
	}
	ts := tailState{size: st.Size()}
	const chunk = 64 << 10
	end := ts.size // lines end before end
	var carry []byte
	// Walk backwards: carry holds the bytes from pos to end.
	pos := end
	for pos > 0 || len(carry) > 0 {
		// Find the last newline-terminated line inside carry (ending at end).
		if i := lastLineStart(carry, pos == 0); i >= 0 {
			line := carry[i:]
			if n := len(line); n > 0 && line[n-1] == '\n' {
				if li, ok := parseLine(line[:n-1]); ok {
					ts.last, ts.lines = li, true
					ts.garbage = ts.size - (pos + int64(i) + int64(n))
					break
				}
			}
			carry = carry[:i]
			continue
		}
		if pos == 0 {
			break
		}
		n := int64(chunk)
		if n > pos {
			n = pos
		}
		pos -= n
		b := make([]byte, n, int(n)+len(carry))
		if _, err := f.ReadAt(b, pos); err != nil {
			return tailState{}, err
		}
		carry = append(b, carry...)
	}
	if !ts.lines {
		ts.garbage = ts.size
		return ts, nil
	}
	// The first well-formed line names the file's start.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return tailState{}, err
	}
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			if li, ok := parseLine(line[:len(line)-1]); ok {
				ts.first = li
				break
			}
		}
		if err != nil {
			break
		}
	}
	return ts, nil
}

// lastLineStart returns where the last line of b starts, b ending at a line
// boundary or at the end of the file: the line must be preceded by a
// newline in b (or b starts at the file's start, atStart). -1 when b holds
// no complete line yet.
func lastLineStart(b []byte, atStart bool) int {
	if len(b) == 0 {
		return -1
	}
	// Skip the final byte: a trailing newline belongs to the last line.
	if i := bytes.LastIndexByte(b[:len(b)-1], '\n'); i >= 0 {
		return i + 1
	}
	if atStart {
		return 0
	}
	return -1
}

// lastOfGz returns the last well-formed line of a gzip'd rotated file.
func lastOfGz(path string) (lineInfo, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return lineInfo{}, false, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return lineInfo{}, false, err
	}
	r := bufio.NewReaderSize(zr, 256<<10)
	var last lineInfo
	found := false
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = r.ReadSlice('\n')
			}
			continue
		}
		if len(line) > 0 && line[len(line)-1] == '\n' {
			if li, ok := parseLine(line[:len(line)-1]); ok {
				last, found = li, true
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return last, found, nil
			}
			return last, found, err
		}
	}
}

// lastOfFile returns the last well-formed line of a trail file.
func lastOfFile(f chain.File) (lineInfo, bool, error) {
	if f.Gz {
		return lastOfGz(f.Path)
	}
	ts, err := scanTail(f.Path)
	return ts.last, ts.lines, err
}

// compress gzips a rotated file to path+".gz" (through a temporary file,
// synced, then renamed) and removes the original. stop aborts it.
func compress(path string, stop <-chan struct{}) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := path + ".gz.tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		dst.Close()
		os.Remove(tmp)
		return err
	}
	zw := gzip.NewWriter(dst)
	buf := make([]byte, 256<<10)
	for {
		select {
		case <-stop:
			return fail(errors.New("stopped"))
		default:
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := zw.Write(buf[:n]); err != nil {
				return fail(err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fail(rerr)
		}
	}
	if err := zw.Close(); err != nil {
		return fail(err)
	}
	if err := dst.Sync(); err != nil {
		return fail(err)
	}
	if err := dst.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path+".gz"); err != nil {
		os.Remove(tmp)
		return err
	}
	_ = osFS{}.SyncDir(filepath.Dir(path))
	return os.Remove(path)
}

// retentionPlan returns the rotated files to delete, oldest first, with the
// reason: older than retain (by modification time) or beyond retainBytes in
// total (the active file counts towards the total but is never deleted).
// Files whose first seq is at least keepFrom are never deleted.
func retentionPlan(dir string, now time.Time, retain time.Duration, retainBytes int64, keepFrom uint64) ([]planned, error) {
	files, err := chain.ListTrail(dir)
	if err != nil {
		return nil, err
	}
	var total int64
	sizes := make([]int64, len(files))
	mtimes := make([]time.Time, len(files))
	for i, f := range files {
		st, err := os.Stat(f.Path)
		if err != nil {
			continue
		}
		sizes[i], mtimes[i] = st.Size(), st.ModTime()
		total += st.Size()
	}
	var out []planned
	for i, f := range files {
		if f.Active || f.FirstSeq >= keepFrom {
			break
		}
		switch {
		case now.Sub(mtimes[i]) > retain:
			out = append(out, planned{f, reason.RetentionAge, sizes[i]})
		case total > retainBytes:
			out = append(out, planned{f, reason.RetentionSize, sizes[i]})
		default:
			return out, nil
		}
		total -= sizes[i]
	}
	return out, nil
}

type planned struct {
	f      chain.File
	reason reason.Reason
	size   int64
}

func (p planned) detail() string {
	return fmt.Sprintf("%s (%d bytes)", filepath.Base(p.f.Path), p.size)
}
