// Package query reads the audit trail of docs/AUDIT.md back: it finds the trail's
// files in order, filters their JSON lines (audit query), merges the trails
// of several nodes by time (Merge), counts them (--count-by), shows the
// newest ones and follows the active file across rotation (audit tail).
//
// query owns reading only. It depends on the trail's on-disk format and on
// audit's vocabulary (Severity), and audit never imports query: it imports
// only audit and audit/index from the project, nothing from gateway, policy
// or alerting.
package query

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ActiveName is the name of the file the writer appends to.
const ActiveName = "audit.log"

// rotatedTimeLayout is the UTC time in a rotated file's name.
const rotatedTimeLayout = "20060102T150405Z"

// File is one file of the trail.
type File struct {
	Path string
	// Rotated is the time in a rotated file's name (second precision, UTC);
	// zero for the active file and for names that do not follow the
	// writer's pattern.
	Rotated time.Time
	// FirstSeq is the first sequence number from a rotated file's name; 0
	// when unknown.
	FirstSeq uint64
	Gzip     bool // the file is gzip-compressed (name ends in .gz)
	Active   bool // the file is named audit.log
	// NotAfter, when not zero, is a time no event of the file is later
	// than (the next rotated file's name time). Set by Discover; the reader
	// skips the file when a --since lies beyond it.
	NotAfter time.Time
	// Limit, when positive, reads only the file's first Limit bytes.
	Limit int64
}

// ParseName reads the writer's naming pattern: audit.log, or
// audit-<yyyymmddThhmmssZ>-<first seq>.log with an optional .gz. ok is false
// for other names (such files are still read, in the order given).
func ParseName(name string) (f File, ok bool) {
	f.Gzip = strings.HasSuffix(name, ".gz")
	base := strings.TrimSuffix(name, ".gz")
	if base == ActiveName {
		f.Active = true
		return f, true
	}
	rest, found := strings.CutPrefix(base, "audit-")
	if !found {
		return f, false
	}
	rest, found = strings.CutSuffix(rest, ".log")
	if !found {
		return f, false
	}
	ts, seq, found := strings.Cut(rest, "-")
	if !found {
		return f, false
	}
	t, err := time.Parse(rotatedTimeLayout, ts)
	if err != nil {
		return f, false
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return f, false
	}
	f.Rotated, f.FirstSeq = t.UTC(), n
	return f, true
}

// Discover expands paths into the trail's files in reading order. A
// directory yields its trail files: rotated ones by first sequence number,
// then audit.log. Plain files are taken as they are; files named after the
// writer's pattern that sit in the same directory are sorted the same way.
// When both X.log and X.log.gz exist (compression in progress), only X.log
// is read. Paths repeated are read once.
func Discover(paths []string) ([]File, error) {
	type group struct {
		dir   string
		files []File
	}
	var groups []*group
	byDir := map[string]*group{}
	seen := map[string]bool{}
	add := func(dir string, f File) {
		f.Path = filepath.Clean(f.Path)
		if seen[f.Path] {
			return
		}
		seen[f.Path] = true
		g := byDir[dir]
		if g == nil {
			g = &group{dir: dir}
			byDir[dir] = g
			groups = append(groups, g)
		}
		g.files = append(g.files, f)
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("audit trail %q: %w", p, err)
		}
		if !st.IsDir() {
			f, _ := ParseName(filepath.Base(p))
			f.Path = p
			add(filepath.Clean(filepath.Dir(p)), f)
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return nil, fmt.Errorf("audit trail %q: %w", p, err)
		}
		dir := filepath.Clean(p)
		for _, e := range ents {
			if e.IsDir() {
				continue
			}
			f, ok := ParseName(e.Name())
			if !ok {
				continue
			}
			f.Path = filepath.Join(p, e.Name())
			add(dir, f)
		}
	}
	var out []File
	for _, g := range groups {
		out = append(out, orderGroup(g.files)...)
	}
	return out, nil
}

// orderGroup sorts the files of one directory: rotated files by first
// sequence number, then files with other names in the order given, then the
// active file. It drops X.log.gz when X.log is present and sets NotAfter.
func orderGroup(fs []File) []File {
	plain := map[string]bool{}
	for _, f := range fs {
		if !f.Gzip {
			plain[f.Path] = true
		}
	}
	kept := fs[:0:0]
	for _, f := range fs {
		if f.Gzip && plain[strings.TrimSuffix(f.Path, ".gz")] {
			continue
		}
		kept = append(kept, f)
	}
	rank := func(f File) int {
		switch {
		case !f.Rotated.IsZero():
			return 0
		case f.Active:
			return 2
		}
		return 1
	}
	sort.SliceStable(kept, func(i, j int) bool {
		ri, rj := rank(kept[i]), rank(kept[j])
		if ri != rj {
			return ri < rj
		}
		if ri == 0 && kept[i].FirstSeq != kept[j].FirstSeq {
			return kept[i].FirstSeq < kept[j].FirstSeq
		}
		return false
	})
	// A rotated file's events are no later than the next rotated file's name
	// time, whether the writer names files by the time they were closed or
	// the time they were started; rotationSlack absorbs the name's
	// truncation to seconds and small clock steps.
	for i := 0; i+1 < len(kept); i++ {
		if kept[i].Rotated.IsZero() {
			continue
		}
		switch next := kept[i+1]; {
		case !next.Rotated.IsZero():
			kept[i].NotAfter = next.Rotated.Add(rotationSlack)
		case next.Active && !next.Gzip:
			// The last rotated file ends where the active file begins.
			if t := firstTime(next.Path); !t.IsZero() {
				kept[i].NotAfter = maxTime(kept[i].Rotated, t).Add(rotationSlack)
			}
		}
	}
	return kept
}

// firstTime is the time of a plain file's first line, zero when unknown.
func firstTime(path string) time.Time {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}
	}
	defer f.Close()
	b := make([]byte, 64<<10)
	n, _ := io.ReadFull(f, b)
	b = b[:n]
	k := bytes.IndexByte(b, '\n')
	if k < 0 {
		return time.Time{}
	}
	var r Record
	if r.Parse(b[:k], FieldTime|FieldFirst) != nil {
		return time.Time{}
	}
	return r.Time
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// rotationSlack is added to a rotated file's name time before a file is
// skipped for --since.
const rotationSlack = time.Minute
