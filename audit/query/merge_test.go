package query

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// nodeTrail writes the trail of node in a temp dir: lines at the given
// offsets from t0 (seconds), seq 1, 2, 3 …, split over a rotated file and
// the active file after the first split lines.
func nodeTrail(t testing.TB, node string, secs []float64, split int) Trail {
	t.Helper()
	dir := t.TempDir()
	var lines []string
	for i, s := range secs {
		at := t0.Add(time.Duration(s * float64(time.Second)))
		lines = append(lines, ev(i+1, at, "conn_open", "info", "node", node, "conn", i+1))
	}
	writeFile(t, filepath.Join(dir, "audit-20250301T115900Z-1.log"), lines[:split], false, "")
	writeFile(t, filepath.Join(dir, "audit.log"), lines[split:], false, "")
	files, err := Discover([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	return Trail{Name: dir, Files: files}
}

type merged struct {
	trail int
	node  string
	seq   uint64
	at    time.Time
}

func mergeAll(t *testing.T, trails []Trail, o Options) ([]merged, Stats) {
	t.Helper()
	var got []merged
	st, err := MergeRecords(context.Background(), trails, o, FieldSeq|FieldTime|FieldNode, func(i int, r *Record) error {
		got = append(got, merged{i, string(r.Node), r.Seq, r.Time})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, st
}

// Lines of two trails come out by time; equal times go to the trail given
// first; a trail whose clock stepped back keeps its own order.
func TestMergeOrder(t *testing.T) {
	a := nodeTrail(t, "a", []float64{0, 2, 4, 6, 8}, 2)
	// b's third line was written after a clock step back: it stays after
	// b's second line and before b's fourth.
	b := nodeTrail(t, "b", []float64{1, 4, 3.5, 7, 9, 10}, 3)
	got, st := mergeAll(t, []Trail{a, b}, Options{})
	var s []string
	for _, m := range got {
		s = append(s, fmt.Sprintf("%s%d", m.node, m.seq))
	}
	want := "a1 b1 a2 a3 b2 b3 a4 b4 a5 b5 b6"
	if strings.Join(s, " ") != want {
		t.Errorf("merged %s\nwant   %s", strings.Join(s, " "), want)
	}
	for _, m := range got {
		if (m.trail == 0) != (m.node == "a") {
			t.Errorf("line %s%d reported from trail %d", m.node, m.seq, m.trail)
		}
	}
	if st.Matched != 11 || st.Lines != 11 || st.Files != 4 {
		t.Errorf("stats %+v", st)
	}
	// The order given breaks the tie at 4 s the other way round (b3,
	// stepped back to 3.5 s, then goes before a3).
	got, _ = mergeAll(t, []Trail{b, a}, Options{})
	s = s[:0]
	for _, m := range got {
		s = append(s, fmt.Sprintf("%s%d", m.node, m.seq))
	}
	if want := "a1 b1 a2 b2 b3 a3 a4 b4 a5 b5 b6"; strings.Join(s, " ") != want {
		t.Errorf("b before a: merged %s\nwant   %s", strings.Join(s, " "), want)
	}
}

// Trails many batches long, read with one worker each or several, merge in
// time order with each trail's lines in seq order; Limit counts merged
// lines and stops every scan.
func TestMergeLong(t *testing.T) {
	const n = 4000 // ~1 MB a trail: several batches per file
	secs := func(off float64) []float64 {
		s := make([]float64, n)
		for i := range s {
			s[i] = off + float64(i)*0.01
		}
		return s
	}
	trails := []Trail{nodeTrail(t, "a", secs(0), n/2), nodeTrail(t, "b", secs(0.005), n/3), nodeTrail(t, "c", secs(0.005), n-1)}
	for _, workers := range []int{1, 2, 8} {
		got, st := mergeAll(t, trails, Options{Workers: workers})
		if len(got) != 3*n || st.Matched != 3*n {
			t.Fatalf("workers %d: %d lines, stats %+v", workers, len(got), st)
		}
		next := map[string]uint64{"a": 1, "b": 1, "c": 1}
		for i, m := range got {
			if i > 0 && m.at.Before(got[i-1].at) {
				t.Fatalf("workers %d: line %d (%s%d at %v) before the previous one (%v)", workers, i, m.node, m.seq, m.at, got[i-1].at)
			}
			if i > 0 && m.at.Equal(got[i-1].at) && m.trail < got[i-1].trail {
				t.Fatalf("workers %d: tie at line %d went to trail %d after trail %d", workers, i, m.trail, got[i-1].trail)
			}
			if m.seq != next[m.node] {
				t.Fatalf("workers %d: %s%d, want %s%d", workers, m.node, m.seq, m.node, next[m.node])
			}
			next[m.node]++
		}
	}
	got, st := mergeAll(t, trails, Options{Limit: 5, Workers: 1})
	var s []string
	for _, m := range got {
		s = append(s, fmt.Sprintf("%s%d", m.node, m.seq))
	}
	if strings.Join(s, " ") != "a1 b1 c1 a2 b2" || st.Matched != 5 {
		t.Errorf("limit 5: %v, stats %+v", s, st)
	}
	stop := errors.New("stop")
	if _, err := Merge(context.Background(), trails, Options{}, func(int, []byte) error { return stop }); err != stop {
		t.Errorf("fn's error: %v", err)
	}
}

// --node keeps one node's lines, --count-by node counts per node, and the
// lines come out exactly as written.
func TestMergeNodeFilterAndCount(t *testing.T) {
	a := nodeTrail(t, "web-1", []float64{0, 2, 4}, 1)
	b := nodeTrail(t, "web-2", []float64{1, 3}, 1)
	var lines [][]byte
	_, err := Merge(context.Background(), []Trail{a, b}, Options{Filter: Filter{Node: "web-2"}}, func(i int, line []byte) error {
		if i != 1 {
			t.Errorf("a web-2 line from trail %d", i)
		}
		lines = append(lines, bytes.Clone(line))
		return nil
	})
	if err != nil || len(lines) != 2 {
		t.Fatalf("--node web-2: %d lines, %v", len(lines), err)
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil || m["node"] != "web-2" {
			t.Errorf("line %s: %v", l, err)
		}
	}
	if got, _ := mergeAll(t, []Trail{a, b}, Options{Filter: Filter{Node: "web"}}); len(got) != 0 {
		t.Errorf("--node is exact: %v", got)
	}
	key, err := ParseKey("node")
	if err != nil {
		t.Fatal(err)
	}
	counts, _, err := CountBy(context.Background(), append(slices.Clone(a.Files), b.Files...), Options{}, key)
	if err != nil || !slices.Equal(counts, []Count{{"web-1", 3}, {"web-2", 2}}) {
		t.Errorf("count by node: %v %v", counts, err)
	}
}

// WithNode adds the NODE column after TIME; without it the table is as
// before.
func TestTableNodeColumn(t *testing.T) {
	var r Record
	if err := r.Parse([]byte(ev(1, t0, "ban", "critical", "node", "web-1", "ip", "192.0.2.7")), FieldsTable); err != nil {
		t.Fatal(err)
	}
	var with, without bytes.Buffer
	tab := NewTable(&with, false).WithNode()
	tab.Add(&r)
	tab.Flush()
	tab = NewTable(&without, false)
	tab.Add(&r)
	tab.Flush()
	want := "TIME                      NODE   SEVERITY  EVENT  IP         USER  TOPIC  REASON  DETAIL\n" +
		"2025-03-01T12:00:00.000Z  web-1  critical  ban    192.0.2.7  -     -      -       -\n"
	if with.String() != want {
		t.Errorf("with node:\n%q\nwant\n%q", with.String(), want)
	}
	if strings.Contains(without.String(), "NODE") || strings.Contains(without.String(), "web-1") {
		t.Errorf("without node: %q", without.String())
	}
}

// BenchmarkMerge compares merging two trails by time with reading the
// same files as one stream (Lines).
func BenchmarkMerge(b *testing.B) {
	const n = 50000
	secs := func(off float64) []float64 {
		s := make([]float64, n)
		for i := range s {
			s[i] = off + float64(i)*0.01
		}
		return s
	}
	trails := []Trail{nodeTrail(b, "a", secs(0), n/2), nodeTrail(b, "b", secs(0.005), n/2)}
	files := append(slices.Clone(trails[0].Files), trails[1].Files...)
	b.Run("merge", func(b *testing.B) {
		for b.Loop() {
			if _, err := Merge(context.Background(), trails, Options{}, func(int, []byte) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/(2*n), "ns/line")
	})
	b.Run("lines", func(b *testing.B) {
		for b.Loop() {
			if _, err := Lines(context.Background(), files, Options{}, func([]byte) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/(2*n), "ns/line")
	})
}
