package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/chain"
	"github.com/portcullis-gw/portcullis/audit/index"
	"github.com/portcullis-gw/portcullis/audit/query"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// These tests live outside package audit because they read the trail back
// with audit/query, which imports audit; export_test.go lends them the
// writer tests' helpers.

// idxTrail writes a multi-file trail through the writer, with summary
// events, and waits until every rotated file has its idx and is gzip'd.
func idxTrail(t *testing.T, retainBytes int64) audit.TestTrail {
	tt := audit.NewTestTrail(t)
	o := tt.Opts()
	o.RotateBytes = 40 << 10
	o.FoldAfter = 2
	if retainBytes > 0 {
		o.RetainBytes = retainBytes
	}
	w, err := audit.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	users := []string{"alice", "bob", "carol", "d\xffave", ""}
	topics := []string{"prices.eur", "chat.room.1", "orders.acme", ""}
	for i := 0; i < 1500; i++ {
		at := base.Add(time.Duration(i) * 7 * time.Second)
		e := audit.Event{Time: at, Event: audit.KindConnOpen, Severity: audit.Info, Stage: audit.StageHandshake,
			IP: netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i%50)), PeerIP: netip.MustParseAddr(fmt.Sprintf("10.0.0.%d", i%7)),
			CountedPrefix: netip.MustParsePrefix("192.0.2.0/24"), UserID: users[i%len(users)], Topic: topics[i%len(topics)], Conn: uint64(i)}
		switch i % 10 {
		case 1:
			e.Event = audit.KindConnClose
		case 2:
			e.Event, e.Severity, e.Reason = audit.KindAuthFailed, audit.Warning, reason.TokenExpired
		case 3:
			e.Event, e.Severity, e.Reason = audit.KindSubscribeDenied, audit.Notice, reason.TopicDenied
			e.IP = netip.MustParseAddr("2001:db8::" + fmt.Sprint(i%13))
		case 4:
			e.Event, e.Severity, e.Reason = audit.KindConnRejected, audit.Warning, reason.ConnRate
			e.IP = netip.MustParseAddr("::ffff:198.51.100.9")
		case 5: // a summary event reaching back before the file's other lines
			e.Event, e.Severity, e.Reason = audit.KindAuthFailed, audit.Warning, reason.TokenReplayed
			e.Count, e.First, e.Last = int64(3+i%5), at.Add(-10*time.Minute), at
		case 6:
			e.Event, e.Severity, e.Reason = audit.KindAdmin, audit.Critical, reason.AuditUnavailable
		}
		if i == 777 {
			e.IP, e.UserID, e.Topic = netip.MustParseAddr("203.0.113.77"), "rare-user", "rare.topic"
		}
		w.Emit(e)
		if i%20 == 0 {
			// Foldable repeats: beyond FoldAfter they become summary events.
			for k := 0; k < 6; k++ {
				w.Emit(audit.Event{Time: at, Event: audit.KindMessageRejected, Severity: audit.Warning, Reason: reason.SchemaViolation,
					IP: netip.MustParseAddr("192.0.2.200"), CountedPrefix: netip.MustParsePrefix("192.0.2.0/24"), Stage: audit.StageMessage})
			}
			time.Sleep(time.Millisecond)
		}
	}
	// Wait for the janitor: every rotated file compressed, with its idx.
	audit.CheckFor(t, 20*time.Second, func() error {
		files, err := chain.ListTrail(tt.Dir)
		if err != nil {
			return err
		}
		for _, f := range files {
			if f.Active {
				continue
			}
			if !f.Gz {
				return fmt.Errorf("%s not compressed yet", f.Name)
			}
			if _, err := os.Stat(filepath.Join(tt.Dir, index.Name(f.Name))); err != nil {
				return err
			}
		}
		return nil
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return tt
}

type queryResult struct {
	lines  []string
	counts map[query.Key][]query.Count
	st     query.Stats
}

func runQuery(t *testing.T, dir string, f query.Filter, noIndex bool) queryResult {
	t.Helper()
	files, err := query.Discover([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	o := query.Options{Filter: f, NoIndex: noIndex, Warn: func(m string) { t.Errorf("warning: %s", m) }}
	var r queryResult
	r.st, err = query.Lines(context.Background(), files, o, func(line []byte) error {
		r.lines = append(r.lines, string(line))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r.counts = map[query.Key][]query.Count{}
	for _, k := range []query.Key{query.KeyIP, query.KeyUser, query.KeyReason, query.KeyEvent} {
		rows, st, err := query.CountBy(context.Background(), files, o, k)
		if err != nil {
			t.Fatal(err)
		}
		r.counts[k] = rows
		r.st.Indexed += st.Indexed
	}
	return r
}

func mustPrefix(t *testing.T, s string) query.Filter {
	p, err := query.ParseIP(s)
	if err != nil {
		t.Fatal(err)
	}
	return query.Filter{IP: p}
}

func TestIndexQueryEquivalence(t *testing.T) {
	t0 := time.Now()
	tt := idxTrail(t, 0)
	t.Logf("trail written in %v", time.Since(t0))
	audit.MustIntact(t, tt.Verify(t)) // verify ignores .idx files
	files, _ := chain.ListTrail(tt.Dir)
	if len(files) < 5 {
		t.Fatalf("want several rotated files, got %d", len(files))
	}
	// The idx describes its file.
	for _, f := range files {
		if f.Active {
			continue
		}
		s, err := index.ForFile(f.Path, f.FirstSeq, true)
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		if st, _ := os.Stat(filepath.Join(tt.Dir, index.Name(f.Name))); st.Mode().Perm() != 0o600 {
			t.Fatalf("idx mode %v", st.Mode())
		}
		if s.Lines == 0 || s.Events["audit_header"] == 0 {
			t.Fatalf("%s: implausible summary %+v", f.Name, s.Events)
		}
	}
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	ip := func(s string) query.Filter { return mustPrefix(t, s) }
	filters := map[string]query.Filter{
		"all":          {},
		"rare ip":      ip("203.0.113.77"),
		"absent ip":    ip("203.0.113.78"),
		"mapped ip":    ip("198.51.100.9"),
		"mapped form":  ip("::ffff:198.51.100.9"),
		"v6 ip":        ip("2001:db8::5"),
		"peer ip":      ip("10.0.0.3"),
		"cidr":         ip("192.0.2.0/28"),
		"user":         {User: "rare-user"},
		"user bob":     {User: "bob"},
		"user invalid": {User: "d\uFFFDave"},
		"topic":        {Topic: "rare.topic"},
		"topic glob":   {Topic: "chat.*"},
		"event":        {Events: []string{"admin"}},
		"events":       {Events: []string{"message_rejected", "nothing"}},
		"reason":       {Reason: "token_replayed"},
		"no reason":    {Reason: "nope"},
		"critical":     {MinSeverity: audit.Critical},
		"warning":      {MinSeverity: audit.Warning},
		"since":        {Since: base.Add(90 * time.Minute)},
		"until":        {Until: base.Add(40 * time.Minute)},
		"window":       {Since: base.Add(30 * time.Minute), Until: base.Add(95 * time.Minute)},
		"window edge":  {Since: base.Add(60*time.Minute + 3*time.Second), Until: base.Add(61 * time.Minute)},
		"combo":        {Reason: "conn_rate", MinSeverity: audit.Warning, Since: base.Add(time.Hour)},
	}
	indexed := 0
	for name, f := range filters {
		with, without := runQuery(t, tt.Dir, f, false), runQuery(t, tt.Dir, f, true)
		if !slices.Equal(with.lines, without.lines) {
			t.Errorf("%s: %d lines with idx, %d without", name, len(with.lines), len(without.lines))
		}
		for k, rows := range without.counts {
			if !slices.Equal(with.counts[k], rows) {
				t.Errorf("%s: count-by %v differs:\nwith idx %v\nwithout  %v", name, k, with.counts[k], rows)
			}
		}
		if without.st.Indexed != 0 {
			t.Errorf("%s: NoIndex used an idx", name)
		}
		indexed += with.st.Indexed
		switch name {
		case "rare ip", "absent ip", "user", "topic", "no reason":
			if with.st.Indexed < len(files)-2 {
				t.Errorf("%s: only %d files answered by idx of %d", name, with.st.Indexed, len(files))
			}
		}
	}
	if indexed == 0 {
		t.Fatal("no file was answered by its idx")
	}
	// Summary counts reach count-by: the folded events count as their count.
	all := runQuery(t, tt.Dir, query.Filter{}, false)
	var replayed int64
	for _, c := range all.counts[query.KeyReason] {
		if c.Value == "token_replayed" {
			replayed = c.N
		}
	}
	if replayed <= 150 {
		t.Fatalf("token_replayed counted %d, want summary counts", replayed)
	}

	// A stale or foreign idx is ignored.
	var rotated []chain.File
	for _, f := range files {
		if !f.Active {
			rotated = append(rotated, f)
		}
	}
	a, b := filepath.Join(tt.Dir, index.Name(rotated[0].Name)), filepath.Join(tt.Dir, index.Name(rotated[1].Name))
	ab, _ := os.ReadFile(a)
	if err := os.WriteFile(b, ab, 0o600); err != nil { // foreign: names another file
		t.Fatal(err)
	}
	var s index.Summary
	if err := json.Unmarshal(ab, &s); err != nil {
		t.Fatal(err)
	}
	s.Reasons = map[string]int64{"forged": 1} // stale: content no longer matches
	s.CRC32++
	nb, _ := json.Marshal(&s)
	if err := os.WriteFile(a, nb, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range rotated[:2] {
		if _, err := index.ForFile(f.Path, f.FirstSeq, true); err == nil {
			t.Fatalf("stale idx of %s accepted", f.Name)
		}
	}
	if _, err := index.ForFile(rotated[2].Path, rotated[2].FirstSeq, true); err != nil {
		t.Fatal(err)
	}
	with, without := runQuery(t, tt.Dir, query.Filter{}, false), runQuery(t, tt.Dir, query.Filter{}, true)
	if !slices.Equal(with.counts[query.KeyReason], without.counts[query.KeyReason]) {
		t.Fatalf("stale idx used: %v", with.counts[query.KeyReason])
	}
	if !bytes.Contains(ab, []byte(`"v":1`)) {
		t.Fatalf("no version in %s", ab)
	}
}

func TestIndexRetention(t *testing.T) {
	tt := audit.NewTestTrail(t)
	o := tt.Opts()
	o.RotateBytes = 8 << 10
	o.RetainBytes = 20 << 10
	w, err := audit.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 600; i++ {
		w.Emit(audit.Event{Event: audit.KindConnOpen, IP: netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i%200)), Conn: uint64(i)})
		if i%50 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	audit.CheckFor(t, 20*time.Second, func() error {
		ents, err := os.ReadDir(tt.Dir)
		if err != nil {
			return err
		}
		names := map[string]bool{}
		for _, e := range ents {
			names[e.Name()] = true
		}
		deleted := false
		for n := range names {
			if base, ok := strings.CutSuffix(n, ".idx"); ok && !names[base+".log"] && !names[base+".log.gz"] {
				return fmt.Errorf("%s left without its file", n)
			}
		}
		files, _ := chain.ListTrail(tt.Dir)
		deleted = len(files) > 0 && files[0].FirstSeq > 1
		if !deleted {
			return fmt.Errorf("retention has not deleted a file yet")
		}
		return nil
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// A file the writer resumed after a restart (lines it did not see) gets an
// idx rebuilt by reading it, and queries agree with and without it.
func TestIndexAfterResume(t *testing.T) {
	tt := audit.NewTestTrail(t)
	o := tt.Opts()
	o.RotateBytes = 16 << 10
	emit := func(w *audit.Writer, from, n int) {
		for i := from; i < from+n; i++ {
			w.Emit(audit.Event{Event: audit.KindAuthFailed, Severity: audit.Warning, Reason: []reason.Reason{reason.TokenUnknown, reason.TokenExpired, reason.TokenReplayed}[i%3], IP: netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i%9)),
				UserID: fmt.Sprintf("u%d", i), Conn: uint64(i), Count: int64(i % 4)})
		}
	}
	w, err := audit.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	emit(w, 0, 10)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = audit.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	emit(w, 10, 200)
	audit.CheckFor(t, 20*time.Second, func() error {
		files, _ := chain.ListTrail(tt.Dir)
		if len(files) < 3 {
			return fmt.Errorf("%d files", len(files))
		}
		for _, f := range files {
			if f.Active {
				continue
			}
			if !f.Gz {
				return fmt.Errorf("%s not compressed", f.Name)
			}
			if _, err := index.ForFile(f.Path, f.FirstSeq, true); err != nil {
				return err
			}
		}
		return nil
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	audit.MustIntact(t, tt.Verify(t))
	for _, f := range []query.Filter{{}, {User: "u5"}, {User: "u150"}, {Reason: "token_expired"}, mustPrefix(t, "192.0.2.4")} {
		with, without := runQuery(t, tt.Dir, f, false), runQuery(t, tt.Dir, f, true)
		if !slices.Equal(with.lines, without.lines) {
			t.Errorf("%+v: %d lines with idx, %d without", f, len(with.lines), len(without.lines))
		}
		for k, rows := range without.counts {
			if !slices.Equal(with.counts[k], rows) {
				t.Errorf("%+v: count-by %v differs", f, k)
			}
		}
		if with.st.Indexed == 0 && (f.User != "" || !f.IP.IsValid() && f.Reason == "") {
			t.Errorf("%+v: no idx used", f)
		}
	}
}
