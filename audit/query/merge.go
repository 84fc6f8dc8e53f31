package query

import (
	"bytes"
	"context"
	"runtime"
	"time"
)

// Trail is the trail of one node: its files in reading order, as Discover
// returns them for the node's audit directory. Each node of a cluster
// writes its own trail (its own chain, its own key); Merge reads several
// together.
type Trail struct {
	// Name says which trail a message is about: the directory it was
	// found in.
	Name  string
	Files []File
}

// Merge calls fn with every matching line of the trails, merged by time,
// from the calling goroutine; trail is the index in trails of the line's
// trail, and line is valid only until fn returns.
//
// It is a k-way merge of the per-trail streams: each trail is scanned as
// Lines scans one (its files read ahead by a few workers, a bounded number
// of batches in flight), and the next line written out is the earliest of
// the trails' next lines, ties going to the trail given first. Memory is
// that of k concurrent scans, whatever the trails' sizes. A trail's own
// lines keep their order (the order of its chain), even where its clock
// stepped back; a line without a readable time sorts with the line before
// it in its trail. Limit counts the merged lines.
func Merge(ctx context.Context, trails []Trail, o Options, fn func(trail int, line []byte) error) (Stats, error) {
	m := compile(o.Filter)
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	per := o
	per.Workers = max(1, workers/max(1, len(trails)))
	var st Stats
	curs := make([]*cursor, len(trails))
	for i, t := range trails {
		c := &cursor{warn: o.Warn}
		c.results = startScan(ctx, t.Files, per, m, 0, &c.stats, func() lineSink { return &batchSink{} })
		c.advance()
		curs[i] = c
	}
	var matched int64
	var ferr error
	for {
		best := -1
		for i, c := range curs {
			if c.line != nil && (best < 0 || c.at.Before(curs[best].at)) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		c := curs[best]
		if err := fn(best, c.line); err != nil {
			ferr = err
			break
		}
		matched++
		if o.Limit > 0 && matched >= int64(o.Limit) {
			break
		}
		c.advance()
	}
	cancel()
	for _, c := range curs {
		c.drain()
		st.add(c.stats)
	}
	st.Matched = matched
	if ferr == nil {
		ferr = parent.Err()
	}
	return st, ferr
}

// MergeRecords is Merge with each line decoded: fields in want are set
// (want 0 means FieldsTable).
func MergeRecords(ctx context.Context, trails []Trail, o Options, want Fields, fn func(trail int, r *Record) error) (Stats, error) {
	if want == 0 {
		want = FieldsTable
	}
	var r Record
	return Merge(ctx, trails, o, func(trail int, line []byte) error {
		if err := r.Parse(line, want); err != nil {
			return nil // the scan only delivers lines that decoded
		}
		return fn(trail, &r)
	})
}

// cursor is the head of one trail's stream in a merge. Only the merging
// goroutine touches it.
type cursor struct {
	results []*fileResult // the trail's files, in order; the first is being read
	batch   []byte        // the rest of the current batch of lines
	line    []byte        // the next line, nil at the end of the trail
	at      time.Time     // the next line's time (the previous line's when it has none)
	stats   Stats
	warn    func(string)
	rec     Record
}

// advance moves to the trail's next line: line is nil at its end.
func (c *cursor) advance() {
	for len(c.batch) == 0 {
		if len(c.results) == 0 {
			c.line = nil
			return
		}
		res := c.results[0]
		b, ok := <-res.batches
		if ok {
			c.batch = b
			continue
		}
		c.finish(res)
		c.results = c.results[1:]
	}
	k := bytes.IndexByte(c.batch, '\n')
	c.line, c.batch = c.batch[:k], c.batch[k+1:]
	if c.rec.Parse(c.line, FieldTime) == nil && !c.rec.Time.IsZero() {
		c.at = c.rec.Time
	}
}

// finish collects a file's warnings and stats once its worker is done.
func (c *cursor) finish(res *fileResult) {
	<-res.done
	flushWarnings(c.warn, res)
	c.stats.add(res.stats)
}

// drain reads what the trail's workers still send after the merge stopped,
// so that every worker ends.
func (c *cursor) drain() {
	for _, res := range c.results {
		for range res.batches {
		}
		c.finish(res)
	}
	c.results, c.batch, c.line = nil, nil, nil
}
