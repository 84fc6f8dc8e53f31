package blocklist

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// File limits.
const (
	MaxFileBytes = 64 << 20 // a list file larger than this is refused
	MaxLineBytes = 4096     // a longer line is an error
	maxFileErrs  = 10       // bad lines reported per load before "and N more"
)

// FileStat describes a list file as last read.
type FileStat struct {
	Path    string
	Entries int       // prefixes read from it
	Size    int64     // bytes, at the stat before reading
	ModTime time.Time // at the stat before reading
}

// addFiles adds the prefixes of every file, reporting all bad files and
// lines (up to maxFileErrs lines). A file holds one CIDR or address per
// line; blank lines and comments from '#' or ';' to the end of the line
// are ignored (FireHOL netsets and Spamhaus DROP "1.10.16.0/20 ; SBL256894"
// lines load as they are); CRLF line ends are fine. Bad lines are reported
// as "path:line: ..." quoting the text.
func (b *builder) addFiles(paths []string) ([]FileStat, error) {
	stats := make([]FileStat, 0, len(paths))
	var errs []error
	bad := 0
	for _, path := range paths {
		st, err := b.addFile(path, &bad)
		stats = append(stats, st)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if bad > maxFileErrs {
		errs = append(errs, fmt.Errorf("and %d more bad lines", bad-maxFileErrs))
	}
	return stats, errors.Join(errs...)
}

// addFile adds the prefixes of one file. bad counts bad lines over all
// files; only the first maxFileErrs are reported.
func (b *builder) addFile(path string, bad *int) (FileStat, error) {
	st := FileStat{Path: path}
	f, err := os.Open(path)
	if err != nil {
		return st, fmt.Errorf("read list file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return st, fmt.Errorf("read list file: %w", err)
	}
	st.Size, st.ModTime = fi.Size(), fi.ModTime()
	if st.Size > MaxFileBytes {
		return st, fmt.Errorf("%s: %d bytes, over the %d byte limit for a list file", path, st.Size, MaxFileBytes)
	}
	var errs []error
	lr := &io.LimitedReader{R: f, N: MaxFileBytes + 1}
	sc := bufio.NewScanner(lr)
	sc.Buffer(make([]byte, 0, MaxLineBytes), MaxLineBytes)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Bytes()
		if i := bytes.IndexAny(text, "#;"); i >= 0 {
			text = text[:i]
		}
		text = bytes.TrimSpace(text) // also drops the CR of CRLF
		if len(text) == 0 {
			continue
		}
		p, err := parsePrefix(string(text))
		if err != nil {
			if *bad++; *bad <= maxFileErrs {
				errs = append(errs, fmt.Errorf("%s:%d: %w", path, line, err))
			}
			continue
		}
		b.add(p)
		st.Entries++
	}
	switch err := sc.Err(); {
	case errors.Is(err, bufio.ErrTooLong):
		errs = append(errs, fmt.Errorf("%s:%d: line longer than %d bytes", path, line+1, MaxLineBytes))
	case err != nil:
		errs = append(errs, fmt.Errorf("%s:%d: read list file: %w", path, line+1, err))
	case lr.N == 0:
		errs = append(errs, fmt.Errorf("%s: grew over the %d byte limit for a list file while read", path, MaxFileBytes))
	}
	return st, errors.Join(errs...)
}
