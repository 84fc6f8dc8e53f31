package query

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"
)

// Options configure a scan of the trail.
type Options struct {
	Filter Filter
	// Limit stops Lines and Records after this many matching events and
	// keeps the top Limit rows of CountBy; 0 means no limit.
	Limit int
	// Workers is how many files are read at once; 0 means GOMAXPROCS.
	Workers int
	// Warn receives problems that do not stop the scan (a truncated last
	// line, a malformed line, a file that cannot be read to its end), one
	// message at a time from the calling goroutine. Nil discards them.
	Warn func(msg string)
	// NoIndex reads every file, ignoring the per-file summaries (.idx) that
	// otherwise let a scan skip files or take their counts.
	NoIndex bool
}

// Stats count what a scan read.
type Stats struct {
	Files   int // files read
	Skipped int // files skipped because their time range cannot match
	// Indexed counts files not read because their summary (.idx) showed
	// that nothing matches or gave their counts.
	Indexed int
	Lines   int64 // lines seen
	Bytes   int64 // bytes read, uncompressed
	Matched int64 // lines that matched (for CountBy: events counted)
	Errors  int   // files that could not be read to their end
}

func (s *Stats) add(o Stats) {
	s.Files += o.Files
	s.Skipped += o.Skipped
	s.Indexed += o.Indexed
	s.Lines += o.Lines
	s.Bytes += o.Bytes
	s.Matched += o.Matched
	s.Errors += o.Errors
}

// Lines calls fn with every matching line, in trail order, from the calling
// goroutine. line is valid only until fn returns. Files are read in
// parallel, at most Workers at a time; memory stays bounded because a file
// ahead of the one being delivered waits once it has a few batches ready.
// An error from fn stops the scan and is returned.
func Lines(ctx context.Context, files []File, o Options, fn func(line []byte) error) (Stats, error) {
	m := compile(o.Filter)
	var st Stats
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := startScan(ctx, files, o, m, 0, &st, func() lineSink { return &batchSink{} })
	var matched int64
	var ferr error
	for _, res := range results {
		for b := range res.batches {
			if ferr != nil {
				continue // drain so the worker can finish
			}
			for len(b) > 0 {
				k := bytes.IndexByte(b, '\n')
				if err := fn(b[:k]); err != nil {
					ferr = err
					cancel()
					break
				}
				b = b[k+1:]
				matched++
				if o.Limit > 0 && matched >= int64(o.Limit) {
					ferr = errLimit
					cancel()
					break
				}
			}
		}
		<-res.done
		flushWarnings(o.Warn, res)
		st.add(res.stats)
	}
	st.Matched = matched
	if ferr == errLimit {
		ferr = nil
	}
	if ferr == nil {
		ferr = parent.Err()
	}
	return st, ferr
}

var errLimit = errors.New("limit reached")

// Records is Lines with each line decoded: fields in want are set (want 0
// means FieldsTable). A line that matched the filter but does not decode is
// reported through Warn and skipped.
func Records(ctx context.Context, files []File, o Options, want Fields, fn func(r *Record) error) (Stats, error) {
	if want == 0 {
		want = FieldsTable
	}
	var r Record
	return Lines(ctx, files, o, func(line []byte) error {
		if err := r.Parse(line, want); err != nil {
			return nil // Lines only delivers lines that decoded
		}
		return fn(&r)
	})
}

// Key is what CountBy groups on.
type Key uint8

// Keys of CountBy.
const (
	KeyIP Key = iota + 1
	KeyUser
	KeyReason
	KeyEvent
	KeyNode
)

var keyNames = [...]string{KeyIP: "ip", KeyUser: "user", KeyReason: "reason", KeyEvent: "event", KeyNode: "node"}

// String returns the --count-by spelling of k.
func (k Key) String() string {
	if int(k) < len(keyNames) && keyNames[k] != "" {
		return keyNames[k]
	}
	return "unknown"
}

// ParseKey parses ip, user, reason, event or node.
func ParseKey(s string) (Key, error) {
	for i, n := range keyNames {
		if n != "" && n == s {
			return Key(i), nil
		}
	}
	return 0, fmt.Errorf("invalid --count-by %q: want ip, user, reason, event or node", s)
}

// Count is one row of CountBy: a value of the key (empty when the events
// had none) and how many events had it, summary events counting as the
// occurrences they fold.
type Count struct {
	Value string
	N     int64
}

// CountBy counts matching events by key, sorted by count descending, then
// value. IP values are unified: ::ffff:a.b.c.d counts as a.b.c.d.
func CountBy(ctx context.Context, files []File, o Options, key Key) ([]Count, Stats, error) {
	m := compile(o.Filter)
	switch key {
	case KeyIP:
		m.want |= FieldIP
	case KeyUser:
		m.want |= FieldUser
	case KeyReason:
		m.want |= FieldReason
	case KeyEvent:
		m.want |= FieldEvent
	case KeyNode:
		m.want |= FieldNode
	default:
		return nil, Stats{}, fmt.Errorf("invalid count key %d", key)
	}
	m.want |= FieldCount
	var st Stats
	results := startScan(ctx, files, o, m, key, &st, func() lineSink { return &countSink{key: key, m: map[string]*int64{}} })
	total := map[string]int64{}
	for _, res := range results {
		for range res.batches {
		}
		<-res.done
		flushWarnings(o.Warn, res)
		st.add(res.stats)
		if cs, ok := res.sink.(*countSink); ok {
			for k, v := range cs.m {
				total[k] += *v
			}
			st.Matched += cs.events
		}
	}
	out := make([]Count, 0, len(total))
	for k, v := range total {
		out = append(out, Count{Value: k, N: v})
	}
	slices.SortFunc(out, func(a, b Count) int {
		if c := cmp.Compare(b.N, a.N); c != 0 {
			return c
		}
		return cmp.Compare(a.Value, b.Value)
	})
	if o.Limit > 0 && len(out) > o.Limit {
		out = out[:o.Limit]
	}
	return out, st, ctx.Err()
}

func flushWarnings(warn func(string), res *fileResult) {
	if warn == nil {
		return
	}
	for _, w := range res.warns {
		warn(w)
	}
}

// lineSink receives the matching lines of one file, from its worker.
type lineSink interface {
	// take is called with a matching line, decoded with at least the
	// matcher's fields; line is valid only until take returns.
	take(r *Record)
	// flush hands over what is pending; end is true after the last line.
	flush(res *fileResult, end bool)
}

// batchSink copies matching lines into batches for in-order delivery.
type batchSink struct {
	buf []byte
}

const batchBytes = 256 << 10

func (s *batchSink) take(r *Record) {
	s.buf = append(s.buf, r.Line...)
	s.buf = append(s.buf, '\n')
}

func (s *batchSink) flush(res *fileResult, end bool) {
	if len(s.buf) >= batchBytes || (end && len(s.buf) > 0) {
		res.batches <- s.buf
		s.buf = nil
	}
}

type countSink struct {
	key    Key
	m      map[string]*int64
	events int64
}

func (s *countSink) take(r *Record) {
	var v []byte
	switch s.key {
	case KeyIP:
		v = r.IP
		if len(v) > 0 && (bytes.HasPrefix(v, []byte("::ffff:")) || bytes.IndexByte(v, '%') >= 0) {
			if a, ok := addrOf(v); ok {
				v = []byte(a.String())
			}
		}
	case KeyUser:
		v = r.User
	case KeyReason:
		v = r.Reason
	case KeyEvent:
		v = r.Event
	case KeyNode:
		v = r.Node
	}
	n := r.N()
	s.events += n
	if p, ok := s.m[string(v)]; ok {
		*p += n
		return
	}
	p := new(int64)
	*p = n
	s.m[string(v)] = p
}

func (s *countSink) add(k string, n int64) {
	s.events += n
	if p, ok := s.m[k]; ok {
		*p += n
		return
	}
	p := new(int64)
	*p = n
	s.m[k] = p
}

func (s *countSink) flush(*fileResult, bool) {}

// fileResult is one file's part of a scan. The worker closes batches, then
// done; stats, warns and sink are complete once done is closed.
type fileResult struct {
	file    File
	batches chan []byte
	done    chan struct{}
	stats   Stats
	warns   []string
	sink    lineSink
}

// startScan starts the workers and returns one result per file, in order.
// key is CountBy's key, 0 for Lines.
func startScan(ctx context.Context, files []File, o Options, m *matcher, key Key, st *Stats, newSink func() lineSink) []*fileResult {
	var todo []*fileResult
	for _, f := range files {
		if !o.Filter.Since.IsZero() && !f.NotAfter.IsZero() && f.NotAfter.Before(o.Filter.Since) {
			st.Skipped++
			continue
		}
		todo = append(todo, &fileResult{file: f, batches: make(chan []byte, 4), done: make(chan struct{}), sink: newSink()})
	}
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	next := make(chan *fileResult)
	go func() {
		defer close(next)
		for _, r := range todo {
			next <- r
		}
	}()
	var wg sync.WaitGroup
	for range min(workers, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for res := range next {
				if s := loadIndex(res.file, &o); s != nil && ctx.Err() == nil {
					if m.indexExcludes(s) {
						res.stats.Indexed = 1
						close(res.batches)
						close(res.done)
						continue
					}
					if cs, ok := res.sink.(*countSink); ok {
						if counts, ok := m.indexCounts(s, key); ok {
							for k, v := range counts {
								cs.add(k, v)
							}
							res.stats.Indexed = 1
							close(res.batches)
							close(res.done)
							continue
						}
					}
				}
				scanFile(ctx, res, m)
				close(res.batches)
				close(res.done)
			}
		}()
	}
	return todo
}

// scanFile reads one file into res.sink.
func scanFile(ctx context.Context, res *fileResult, m *matcher) {
	f := res.file
	warn := func(format string, a ...any) {
		res.warns = append(res.warns, fmt.Sprintf(format, a...))
	}
	fail := func(err error) {
		res.stats.Errors++
		warn("%s: %v (rest of the file not read)", f.Path, err)
	}
	fh, err := os.Open(f.Path)
	if err != nil {
		fail(err)
		return
	}
	defer fh.Close()
	res.stats.Files = 1
	var rd io.Reader = fh
	if f.Limit > 0 {
		rd = io.LimitReader(fh, f.Limit)
	}
	if f.Gzip {
		zr, err := gzip.NewReader(bufio.NewReaderSize(rd, 256<<10))
		if err != nil {
			fail(fmt.Errorf("gzip: %w", err))
			return
		}
		defer zr.Close()
		rd = zr
	}
	sc := lineScanner{m: m, sink: res.sink, res: res, path: f.Path, warn: warn}
	buf := make([]byte, 1<<20)
	carry := 0
	for {
		if ctx.Err() != nil {
			return
		}
		n, err := fill(rd, buf[carry:])
		res.stats.Bytes += int64(n)
		data := buf[:carry+n]
		eof := err == io.EOF
		if err != nil && !eof {
			sc.region(data[:bytes.LastIndexByte(data, '\n')+1])
			res.sink.flush(res, true)
			fail(err)
			return
		}
		last := bytes.LastIndexByte(data, '\n')
		if !eof && last < 0 {
			if len(buf) >= maxLine {
				fail(fmt.Errorf("line %d longer than %d bytes", sc.lineNo+1, maxLine))
				return
			}
			buf = append(buf, make([]byte, len(buf))...)[:2*len(buf)]
			carry = len(data)
			continue
		}
		sc.region(data[:last+1])
		if eof {
			if rest := bytes.TrimSpace(data[last+1:]); len(rest) > 0 {
				res.stats.Lines++
				warn("%s:%d: skipped a truncated last line (%d bytes, no newline): the writer stopped mid-line or is writing it now",
					f.Path, sc.lineNo+1, len(rest))
			}
			res.sink.flush(res, true)
			return
		}
		res.sink.flush(res, false)
		carry = copy(buf, data[last+1:])
	}
}

// fill reads until b is full or the reader fails; unlike io.ReadFull it
// keeps a truncated gzip stream's io.ErrUnexpectedEOF apart from a clean end.
func fill(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := r.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// maxLine bounds one line of the trail, in bytes.
const maxLine = 64 << 20

// lineScanner filters the complete lines of one file.
type lineScanner struct {
	m      *matcher
	sink   lineSink
	res    *fileResult
	path   string
	warn   func(format string, a ...any)
	lineNo int64 // lines before the current region
	rec    Record
}

// region handles data, a run of complete lines each ending in '\n'.
func (s *lineScanner) region(data []byte) {
	lines := int64(bytes.Count(data, []byte{'\n'}))
	defer func() {
		s.lineNo += lines
		s.res.stats.Lines += lines
	}()
	if a := s.m.anchor; a != nil {
		pos := 0
		for {
			k := bytes.Index(data[pos:], a)
			if k < 0 {
				return
			}
			k += pos
			start := bytes.LastIndexByte(data[:k], '\n') + 1
			end := k + bytes.IndexByte(data[k:], '\n')
			s.line(data, start, end)
			pos = end + 1
		}
	}
	start := 0
	for start < len(data) {
		end := start + bytes.IndexByte(data[start:], '\n')
		s.line(data, start, end)
		start = end + 1
	}
}

func (s *lineScanner) line(data []byte, start, end int) {
	line := data[start:end]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	if len(line) == 0 || !s.m.preMatch(line) {
		return
	}
	if err := s.rec.Parse(line, s.m.want); err != nil {
		no := s.lineNo + int64(bytes.Count(data[:start], []byte{'\n'})) + 1
		// After a crash the next writer may append to the cut line: keep the
		// complete object that follows the fragment.
		ok := false
		for i := 1; i < len(line); i++ {
			if line[i] != '{' {
				continue
			}
			if s.rec.Parse(line[i:], s.m.want) == nil {
				s.warn("%s:%d: skipped a truncated fragment (%d bytes) before the event on the same line", s.path, no, i)
				ok = true
				break
			}
		}
		if !ok {
			s.warn("%s:%d: skipped a malformed line (%d bytes)", s.path, no, len(line))
			return
		}
	}
	if s.m.match(&s.rec) {
		s.sink.take(&s.rec)
	}
}
