package audit

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/chain"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/audit/verify"
)

// checkFor polls f until it returns nil or timeout passes.
func checkFor(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testTrail is a data dir with the audit trail in data/audit.
type testTrail struct {
	data, dir string
}

func newTrail(t testing.TB) testTrail {
	data := t.TempDir()
	return testTrail{data: data, dir: filepath.Join(data, "audit")}
}

func (tt testTrail) opts() Options {
	return Options{Dir: tt.dir, KeyFile: filepath.Join(tt.data, "audit.key"), Node: "n1"}
}

func (tt testTrail) verify(t testing.TB) *verify.Report {
	t.Helper()
	key, err := chain.ReadKey(filepath.Join(tt.data, "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := chain.ReadPublicKey(filepath.Join(tt.data, "audit-checkpoint.pub"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := verify.Dir(tt.dir, verify.Options{Key: key, PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustIntact(t testing.TB, r *verify.Report) {
	t.Helper()
	if !r.OK() {
		for _, p := range r.Problems {
			t.Log(p)
		}
		t.Fatalf("trail not intact: %d problems", len(r.Problems))
	}
}

// lines returns every line of the trail, in order, decoded.
func (tt testTrail) lines(t testing.TB) []map[string]any { return tt.readLines(t, false) }

// linesWhileRunning is lines while the writer runs: a file that retention
// deletes between listing and reading is skipped.
func (tt testTrail) linesWhileRunning(t testing.TB) []map[string]any { return tt.readLines(t, true) }

func (tt testTrail) readLines(t testing.TB, running bool) []map[string]any {
	t.Helper()
	files, err := chain.ListTrail(tt.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, f := range files {
		fh, err := os.Open(f.Path)
		if running && errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = fh
		if f.Gz {
			if r, err = gzip.NewReader(fh); err != nil {
				t.Fatal(err)
			}
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 4<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("%s: line %q is not JSON: %v", f.Path, sc.Text(), err)
			}
			out = append(out, m)
		}
		fh.Close()
	}
	return out
}

func events(lines []map[string]any, name string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["event"] == name {
			out = append(out, l)
		}
	}
	return out
}

func TestWriterLines(t *testing.T) {
	tt := newTrail(t)
	o := tt.opts()
	o.Fsync = FsyncAlways
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	w.Emit(Event{Event: KindAuthFailed, Severity: Warning, IP: netip.MustParseAddr("127.0.0.1"), Reason: reason.TokenReplayed, TokenFP: "abcd1234",
		UserID: "line\nbreak\u2028", Detail: strings.Repeat("x", 5000)})
	w.Emit(Event{Event: KindConnClose, Code: 1000, DurationMS: 0})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(tt.dir, "audit.log")); st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v", st.Mode().Perm())
	}
	if st, _ := os.Stat(tt.dir); st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v", st.Mode().Perm())
	}
	for _, k := range []string{"audit.key", "audit-checkpoint.key"} {
		if st, _ := os.Stat(filepath.Join(tt.data, k)); st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", k, st.Mode().Perm())
		}
	}
	lines := tt.lines(t)
	if len(lines) != 3 {
		t.Fatalf("%d lines", len(lines))
	}
	h := lines[0]
	if h["event"] != chain.EventHeader || h["reason"] != chain.HeaderNewTrail || h["seq"] != 1.0 || h["prev"] != string(chain.ZeroMAC) {
		t.Fatalf("header %v", h)
	}
	a := lines[1]
	if a["event"] != "auth_failed" || a["severity"] != "warning" || a["seq"] != 2.0 || a["node"] != "n1" || a["level"] != "warning" ||
		a["reason"] != "token_replayed" || a["token_fp"] != "abcd1234" || a["userId"] != "line\nbreak\u2028" ||
		a["prev"] != h["mac"] || a["boot"] != w.Boot() {
		t.Fatalf("line %v", a)
	}
	if d := a["detail"].(string); len(d) > MaxFieldLen+4 {
		t.Fatalf("detail not capped: %d bytes", len(d))
	}
	if b := lines[2]; b["seq"] != 3.0 || b["code"] != 1000.0 || b["duration_ms"] != 0.0 {
		t.Fatalf("line %v", b)
	}
	if w.LastDurableSeq() != 3 {
		t.Fatalf("durable seq %d", w.LastDurableSeq())
	}
	mustIntact(t, tt.verify(t))
}

func TestEmitNeverBlocks(t *testing.T) {
	tt := newTrail(t)
	o := tt.opts()
	o.QueueSize = 4
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10000; i++ {
		w.Emit(Event{Event: KindConnOpen})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	// written includes the header and any audit_dropped lines.
	dl := events(tt.lines(t), "audit_dropped")
	var reported int64
	for _, d := range dl {
		reported += int64(d["count"].(float64))
	}
	if got := len(events(tt.lines(t), "conn_open")); uint64(got)+st.Dropped != 10000 || int64(st.Dropped) != reported {
		t.Fatalf("written %d + dropped %d != 10000, or reported %d", got, st.Dropped, reported)
	}
}

// TestLogInjection: attacker strings cannot break lines or the chain.
func TestLogInjection(t *testing.T) {
	tt := newTrail(t)
	w, err := Open(tt.opts())
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("A\n\u2028\u2029\"\\<>", 1<<20/10)
	evil := []string{"a\nb", "x\u2028y\u2029z", big, `","level":"error","mac":"00`, "\x00\x1b[31m", "\xff\xfe invalid utf8", strings.Repeat("é", 300)}
	for i, s := range evil {
		zoned, _ := netip.ParseAddr("fe80::1%" + s) // a zone is an address's only free text
		w.Emit(Event{Event: KindMessageRejected, Severity: Warning, IP: zoned, UserID: s, Topic: s, Reason: reason.SchemaViolation, Detail: s,
			CountedPrefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32)}) // apart: nothing folds
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(tt.dir, "audit.log"))
	if n := strings.Count(string(raw), "\n"); n != len(evil)+1 {
		t.Fatalf("%d lines, want %d", n, len(evil)+1)
	}
	if strings.ContainsRune(string(raw), '\u2028') || strings.ContainsRune(string(raw), '\u2029') {
		t.Fatal("raw U+2028/U+2029 in the file")
	}
	for _, l := range tt.lines(t)[1:] {
		for _, k := range []string{"ip", "userId", "topic", "detail", "counted_prefix"} {
			if s, _ := l[k].(string); len(s) > MaxFieldLen+len("…") {
				t.Fatalf("%s not capped: %d bytes", k, len(s))
			}
		}
		if l["level"] != "warning" { // the level of the events' severity, never the injected "error"
			t.Fatalf("level injected: %v", l["level"])
		}
	}
	mustIntact(t, tt.verify(t))
}

func TestResumeAcrossRestarts(t *testing.T) {
	tt := newTrail(t)
	for i := 0; i < 3; i++ {
		w, err := Open(tt.opts())
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 10; j++ {
			w.Emit(Event{Event: KindConnOpen, Conn: uint64(j + 1)})
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	lines := tt.lines(t)
	for i, l := range lines {
		if l["seq"] != float64(i+1) {
			t.Fatalf("line %d has seq %v", i, l["seq"])
		}
	}
	if len(lines) != 33 || len(events(lines, chain.EventHeader)) != 3 || lines[11]["reason"] != chain.HeaderResumed {
		t.Fatalf("%d lines: %v", len(lines), lines[11])
	}
	r := tt.verify(t)
	mustIntact(t, r)
	// Every Close writes its last checkpoint (it waits for the
	// checkpointer); one submitted in between may be replaced by a newer
	// one before it is written (submit keeps the latest), so the three
	// closes are what is certain.
	if r.Checkpoints < 3 || r.LastCheckpoint.Seq != 33 {
		t.Fatalf("checkpoints %d, last %+v", r.Checkpoints, r.LastCheckpoint)
	}
}

// writeRotated writes a trail of several rotated files, waits until the
// older ones are gzip'd and returns the number of events written.
func writeRotated(t testing.TB, tt testTrail) int {
	t.Helper()
	o := tt.opts()
	o.RotateBytes = 8 << 10
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	for i := 0; i < n; i++ {
		w.Emit(Event{Event: KindConnOpen, Severity: Info, IP: netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i%250)), Conn: uint64(i + 1), Proto: "portcullis.v1"})
		if i%50 == 0 {
			checkFor(t, 5*time.Second, func() error {
				if q := w.Stats().Queued; q > 0 {
					return fmt.Errorf("%d queued", q)
				}
				return nil
			})
		}
	}
	checkFor(t, 5*time.Second, func() error {
		files, _ := chain.ListTrail(tt.dir)
		gz := 0
		for _, f := range files {
			if f.Gz {
				gz++
			}
		}
		if w.Stats().Rotations < 4 || gz < int(w.Stats().Rotations) {
			return fmt.Errorf("%d rotations, %d gzip'd", w.Stats().Rotations, gz)
		}
		return nil
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if d := w.Stats().Dropped; d != 0 {
		t.Fatalf("%d dropped", d)
	}
	return n
}

func TestRotatedTrailVerifies(t *testing.T) {
	tt := newTrail(t)
	n := writeRotated(t, tt)
	files, _ := chain.ListTrail(tt.dir)
	for _, f := range files {
		st, _ := os.Stat(f.Path)
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", f.Path, st.Mode().Perm())
		}
	}
	r := tt.verify(t)
	mustIntact(t, r)
	if r.Files != len(files) || r.Lines != len(tt.lines(t)) || len(events(tt.lines(t), "conn_open")) != n {
		t.Fatalf("report %+v, %d files", r, len(files))
	}
	if hs := events(tt.lines(t), chain.EventHeader); len(hs) != len(files) {
		t.Fatalf("%d headers for %d files", len(hs), len(files))
	}
}

// testClock is a clock the writer reads and the test moves.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestRotationByDay(t *testing.T) {
	tt := newTrail(t)
	clk := &testClock{t: time.Date(2026, 3, 1, 23, 59, 59, 0, time.UTC)}
	now := clk.now()
	o := tt.opts()
	o.clock = clk.now
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	w.Emit(Event{Event: KindConnOpen, Time: now})
	checkFor(t, 5*time.Second, func() error {
		if w.Stats().Written < 2 {
			return errors.New("not written")
		}
		return nil
	})
	clk.advance(2 * time.Second)
	now = clk.now()
	checkFor(t, 5*time.Second, func() error {
		if w.Stats().Rotations != 1 {
			return errors.New("not rotated")
		}
		return nil
	})
	w.Emit(Event{Event: KindConnOpen, Time: now})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := chain.ListTrail(tt.dir)
	if len(files) != 2 || files[0].Name != "audit-20260301T235959Z-1.log" {
		t.Fatalf("files %+v", files)
	}
	mustIntact(t, tt.verify(t))
}

func TestRetention(t *testing.T) {
	tt := newTrail(t)
	o := tt.opts()
	o.RotateBytes = 4 << 10
	o.RetainBytes = 12 << 10
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 400; i++ {
		w.Emit(Event{Event: KindConnOpen, IP: netip.MustParseAddr("198.51.100.7"), Conn: uint64(i + 1), Detail: strings.Repeat("d", 100)})
		if i%40 == 0 {
			checkFor(t, 5*time.Second, func() error {
				if w.Stats().Queued > 0 {
					return errors.New("queued")
				}
				return nil
			})
		}
	}
	checkFor(t, 5*time.Second, func() error {
		if len(events(tt.linesWhileRunning(t), chain.EventRetention)) < 2 {
			return errors.New("nothing deleted yet")
		}
		return nil
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := tt.lines(t)
	if lines[0]["seq"] == 1.0 {
		t.Fatal("oldest file not deleted")
	}
	mustIntact(t, tt.verify(t))
}

func TestCheckpoints(t *testing.T) {
	tt := newTrail(t)
	off := t.TempDir()
	o := tt.opts()
	o.CheckpointEvery = 20 * time.Millisecond
	o.CheckpointDir = off
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error { // idle: checkpoints keep coming
		if w.Stats().Checkpoints < 5 {
			return errors.New("few checkpoints")
		}
		return nil
	})
	w.Emit(Event{Event: KindConnOpen})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	pub, _ := chain.ReadPublicKey(filepath.Join(tt.data, "audit-checkpoint.pub"))
	cps, err := chain.ReadCheckpoints(filepath.Join(off, chain.CheckpointsName))
	if err != nil || len(cps) < 5 {
		t.Fatalf("%d off-host checkpoints, %v", len(cps), err)
	}
	last := cps[len(cps)-1]
	if !last.Valid(pub) || last.Seq != 2 || last.Boot != w.Boot() || last.Count != 2 {
		t.Fatalf("last checkpoint %+v", last)
	}
	key, _ := chain.ReadKey(filepath.Join(tt.data, "audit.key"))
	r, err := verify.Dir(tt.dir, verify.Options{Key: key, PublicKey: pub, Checkpoints: []string{filepath.Join(off, chain.CheckpointsName)}})
	if err != nil {
		t.Fatal(err)
	}
	mustIntact(t, r)
}

// TestFlood: 50,000 identical rejections in a second cost a few lines and
// every one of them is counted; conn_open, ban and admin are never folded.
func TestFlood(t *testing.T) {
	tt := newTrail(t)
	w, err := Open(tt.opts())
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now()
	const n = 50000
	for i := 0; i < n; i++ {
		w.Emit(Event{Time: base.Add(time.Duration(i) * 19 * time.Microsecond), Event: KindConnRejected, Severity: Warning,
			IP: netip.MustParseAddr("203.0.113.9"), CountedPrefix: netip.MustParsePrefix("203.0.113.9/32"), Reason: reason.ConnRate, Code: 429, Conn: uint64(i)})
	}
	for i := 0; i < 100; i++ {
		w.Emit(Event{Event: KindConnOpen, IP: netip.MustParseAddr("203.0.113.9")})
		w.Emit(Event{Event: KindBan, Severity: Critical, IP: netip.MustParseAddr("203.0.113.9")})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := tt.lines(t)
	rej := events(lines, "conn_rejected")
	var total int64
	summaries := 0
	for _, l := range rej {
		if c, ok := l["count"].(float64); ok {
			total += int64(c)
			summaries++
			if l["first"] == nil || l["last"] == nil || l["counted_prefix"] != "203.0.113.9/32" {
				t.Fatalf("summary %v", l)
			}
		} else {
			total++
		}
	}
	if total != n || len(rej) > 10 || summaries == 0 {
		t.Fatalf("%d conn_rejected lines (%d summaries) count %d, want %d", len(rej), summaries, total, n)
	}
	if len(events(lines, "conn_open")) != 100 || len(events(lines, "ban")) != 100 {
		t.Fatal("conn_open or ban folded")
	}
	if st := w.Stats(); st.Summarized != n-uint64(len(rej)-summaries) || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
	mustIntact(t, tt.verify(t))
}

func TestFolder(t *testing.T) {
	f := newFolder(5)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := func(d time.Duration, why reason.Reason) *Event {
		return &Event{Time: t0.Add(d), Event: KindAuthFailed, Severity: Warning, IP: netip.MustParseAddr("192.0.2.1"), Reason: why}
	}
	folded := 0
	for i := 0; i < 20; i++ {
		if f.add(ev(time.Duration(i)*10*time.Millisecond, reason.TokenUnknown)) {
			folded++
		}
	}
	if folded != 15 || f.add(ev(0, reason.TokenExpired)) {
		t.Fatalf("folded %d", folded)
	}
	if s := f.take(t0.Add(500*time.Millisecond), false); len(s) != 0 {
		t.Fatalf("early summary %v", s)
	}
	s := f.take(t0.Add(time.Second), false)
	if len(s) != 1 || s[0].Count != 15 || !s[0].First.Equal(t0.Add(50*time.Millisecond)) || !s[0].Last.Equal(t0.Add(190*time.Millisecond)) {
		t.Fatalf("summary %+v", s)
	}
	if f.add(&Event{Event: KindAuthFailed, Severity: Critical}) || foldable(&Event{Event: KindConnOpen}) || foldable(&Event{Event: KindAdmin}) {
		t.Fatal("folded what must not be")
	}
}

// faultFS injects disk failures into the writer's files.
type faultFS struct {
	osFS
	mu                           sync.Mutex
	writeErr, openErr, renameErr error
	delay                        time.Duration
}

func (f *faultFS) set(fn func(*faultFS)) { f.mu.Lock(); fn(f); f.mu.Unlock() }

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	f.mu.Lock()
	err := f.openErr
	f.mu.Unlock()
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	of, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: of, fs: f}, nil
}

func (f *faultFS) Rename(o, n string) error {
	f.mu.Lock()
	err := f.renameErr
	f.mu.Unlock()
	if err != nil {
		return &os.LinkError{Op: "rename", Old: o, New: n, Err: err}
	}
	return os.Rename(o, n)
}

type faultFile struct {
	*os.File
	fs *faultFS
}

// Write writes half of b and fails when a write error is set: a full disk
// accepts part of a write.
func (f *faultFile) Write(b []byte) (int, error) {
	f.fs.mu.Lock()
	err, d := f.fs.writeErr, f.fs.delay
	f.fs.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
	if err != nil {
		n, _ := f.File.Write(b[:len(b)/2])
		return n, err
	}
	return f.File.Write(b)
}

func (f *faultFile) Sync() error {
	f.fs.mu.Lock()
	err := f.fs.writeErr
	f.fs.mu.Unlock()
	if err != nil {
		return err
	}
	return f.File.Sync()
}

func TestDiskFull(t *testing.T) {
	for _, policy := range []FailurePolicy{FailOpen, FailClosed} {
		t.Run(policy.String(), func(t *testing.T) {
			tt := newTrail(t)
			ffs := &faultFS{}
			o := tt.opts()
			o.fs, o.OnFailure, o.Fsync = ffs, policy, 10*time.Millisecond
			w, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			ffs.set(func(f *faultFS) { f.writeErr = syscall.ENOSPC })
			const n = 20000
			for i := 0; i < n; i++ {
				w.Emit(Event{Event: KindConnOpen, Conn: uint64(i + 1), Detail: strings.Repeat("x", 100)})
				if i%1000 == 0 {
					time.Sleep(time.Millisecond) // let the writer keep up: drops come from the disk, not the queue
				}
			}
			checkFor(t, 5*time.Second, func() error {
				if !w.Failing() || w.Stats().Dropped == 0 {
					return fmt.Errorf("failing %v, stats %+v", w.Failing(), w.Stats())
				}
				return nil
			})
			if want := policy == FailOpen; w.Healthy() != want {
				t.Fatalf("Healthy %v while the disk is full", w.Healthy())
			}
			ffs.set(func(f *faultFS) { f.writeErr = nil })
			checkFor(t, 5*time.Second, func() error {
				if w.Failing() || !w.Healthy() {
					return errors.New("not recovered")
				}
				return nil
			})
			if err := w.Close(); err != nil && !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			lines := tt.lines(t)
			var reported int64
			for _, d := range events(lines, "audit_dropped") {
				reported += int64(d["count"].(float64))
				if d["severity"] != "critical" {
					t.Fatal(d)
				}
			}
			written := len(events(lines, "conn_open"))
			if int64(written)+reported != n || uint64(reported) != w.Stats().Dropped {
				t.Fatalf("written %d + reported dropped %d != %d (stats %+v)", written, reported, n, w.Stats())
			}
			mustIntact(t, tt.verify(t))
		})
	}
}

func TestUnwritableDir(t *testing.T) {
	tt := newTrail(t)
	ffs := &faultFS{openErr: syscall.EACCES}
	o := tt.opts()
	o.fs = ffs
	if _, err := Open(o); err == nil || !errors.Is(err, syscall.EACCES) {
		t.Fatalf("Open on an unwritable dir: %v", err)
	}
	// The directory becomes unwritable later: rotation cannot create the
	// new file, writing continues in the old one, nothing is lost.
	ffs.set(func(f *faultFS) { f.openErr = nil })
	o.RotateBytes = 2 << 10
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	ffs.set(func(f *faultFS) { f.openErr = syscall.EACCES })
	for i := 0; i < 100; i++ {
		w.Emit(Event{Event: KindConnOpen, Conn: uint64(i + 1)})
	}
	checkFor(t, 5*time.Second, func() error {
		if w.Stats().Written < 101 {
			return errors.New("not written")
		}
		return nil
	})
	if w.Stats().Rotations != 0 || w.Stats().Dropped != 0 || !w.Healthy() {
		t.Fatalf("stats %+v", w.Stats())
	}
	ffs.set(func(f *faultFS) { f.openErr = nil })
	checkFor(t, 5*time.Second, func() error {
		if w.Stats().Rotations == 0 {
			return errors.New("not rotated")
		}
		return nil
	})
	w.Emit(Event{Event: KindConnOpen})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(events(tt.lines(t), "conn_open")); got != 101 {
		t.Fatalf("%d conn_open lines", got)
	}
	mustIntact(t, tt.verify(t))
}

// TestSlowDisk: Emit never waits for a slow disk; the queue overflows into
// counted drops, reported by audit_dropped.
func TestSlowDisk(t *testing.T) {
	tt := newTrail(t)
	ffs := &faultFS{}
	o := tt.opts()
	o.fs, o.QueueSize = ffs, 64
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	ffs.set(func(f *faultFS) { f.delay = 50 * time.Millisecond })
	const n = 20000
	var worst time.Duration
	begin := time.Now()
	for i := 0; i < n; i++ {
		t0 := time.Now()
		w.Emit(Event{Event: KindConnOpen, Conn: uint64(i + 1), Detail: strings.Repeat("y", 200)})
		if d := time.Since(t0); d > worst {
			worst = d
		}
	}
	// A single Emit can be descheduled (GC, -race); what matters is that
	// 20,000 Emits take far less than the disk needs for a few writes.
	if total := time.Since(begin); total > time.Second {
		t.Fatalf("20,000 Emits took %v (worst %v): Emit waits for the disk", total, worst)
	}
	ffs.set(func(f *faultFS) { f.delay = 0 })
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := tt.lines(t)
	var reported int64
	for _, d := range events(lines, "audit_dropped") {
		reported += int64(d["count"].(float64))
	}
	written := len(events(lines, "conn_open"))
	if reported == 0 || int64(written)+reported != n {
		t.Fatalf("written %d + dropped %d != %d", written, reported, n)
	}
	t.Logf("slow disk: %d written, %d dropped and reported, worst Emit %v", written, reported, worst)
	mustIntact(t, tt.verify(t))
}

// TestCrashRepair: a kill mid-write leaves a partial last line; verify
// reports only that; the next Open keeps it, notes it in a repaired header
// and continues the chain.
func TestCrashRepair(t *testing.T) {
	tt := newTrail(t)
	w, err := Open(tt.opts())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		w.Emit(Event{Event: KindConnOpen, Conn: uint64(i + 1)})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	active := filepath.Join(tt.dir, "audit.log")
	raw, _ := os.ReadFile(active)
	ls := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	partial := strings.Replace(ls[len(ls)-1], `"seq":21`, `"seq":22`, 1)
	partial = partial[:len(partial)/2]
	f, _ := os.OpenFile(active, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(partial)
	f.Close()

	r := tt.verify(t)
	if !r.OK() || len(r.Problems) != 1 || !strings.Contains(r.Problems[0].What, "truncated last line") {
		t.Fatalf("problems %v", r.Problems)
	}
	w, err = Open(tt.opts())
	if err != nil {
		t.Fatal(err)
	}
	w.Emit(Event{Event: KindConnOpen, Conn: 99})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r = tt.verify(t)
	mustIntact(t, r)
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0].What, "incomplete by a crash") || r.LastSeq != 23 {
		t.Fatalf("report %+v", r)
	}
}
