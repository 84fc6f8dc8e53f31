package audit

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/chain"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// TestEmitDurable: with fsync every hour, an event given to EmitDurable is
// in the file when the call returns (read while the writer still runs),
// and the writer's durable seq covers it.
func TestEmitDurable(t *testing.T) {
	tt := newTrail(t)
	o := tt.opts()
	o.Fsync = time.Hour
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Emit(Event{Event: KindConnOpen, IP: netip.MustParseAddr("192.0.2.1")}) // queued, not durable yet
	e := Event{Event: KindBan, Severity: Critical, Stage: StageAdmin, IP: netip.MustParseAddr("203.0.113.7"),
		CountedPrefix: netip.MustParsePrefix("203.0.113.7/32"), Reason: reason.Manual, Actor: "cli:alice", Detail: "durable"}
	if err := w.EmitDurable(context.Background(), e); err != nil {
		t.Fatalf("EmitDurable: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(tt.dir, chain.ActiveName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"detail":"durable"`) || !strings.Contains(string(raw), `"reason":"manual"`) {
		t.Fatalf("the durable line is not in the file:\n%s", raw)
	}
	if w.LastDurableSeq() < 2 {
		t.Fatalf("durable seq %d, want the header and the ban at least", w.LastDurableSeq())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.EmitDurable(context.Background(), e); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("EmitDurable after Close: %v, want ErrNotDurable", err)
	}
	mustIntact(t, tt.verify(t))
}

// TestEmitDurableDiskFull: a disk that refuses writes makes EmitDurable
// fail at once with ErrNotDurable and the disk's error, not time out and
// not succeed.
func TestEmitDurableDiskFull(t *testing.T) {
	tt := newTrail(t)
	ffs := &faultFS{}
	o := tt.opts()
	o.fs, o.Fsync = ffs, time.Hour
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ffs.set(func(f *faultFS) { f.writeErr = syscall.ENOSPC })
	err = w.EmitDurable(context.Background(), Event{Event: KindUnban, Stage: StageAdmin, Reason: reason.Manual})
	if !errors.Is(err, ErrNotDurable) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("EmitDurable on a full disk: %v, want ErrNotDurable and ENOSPC", err)
	}
	ffs.set(func(f *faultFS) { f.writeErr = nil })
	checkFor(t, 5*time.Second, func() error {
		return w.EmitDurable(context.Background(), Event{Event: KindUnban, Stage: StageAdmin, Reason: reason.Manual})
	})
}

// TestEmitDurableContext: the caller's deadline bounds the wait.
func TestEmitDurableContext(t *testing.T) {
	tt := newTrail(t)
	ffs := &faultFS{}
	o := tt.opts()
	o.fs, o.Fsync = ffs, time.Hour
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ffs.set(func(f *faultFS) { f.delay = 300 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.EmitDurable(ctx, Event{Event: KindAdmin, Stage: StageAdmin}); !errors.Is(err, ErrNotDurable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("EmitDurable with a cancelled context: %v", err)
	}
}

// TestEmitDurableSinks: EmitDurable on a sink that cannot wait for the
// disk emits the event and says it is not durable; Discard keeps nothing
// and has nothing to wait for.
func TestEmitDurableSinks(t *testing.T) {
	var got []Event
	s := sinkFunc(func(e Event) { got = append(got, e) })
	if err := EmitDurable(context.Background(), s, Event{Event: KindAdmin}); !errors.Is(err, ErrNotDurable) || len(got) != 1 {
		t.Fatalf("plain sink: %v, %d events", err, len(got))
	}
	if err := EmitDurable(context.Background(), Discard{}, Event{Event: KindAdmin}); err != nil {
		t.Fatalf("Discard: %v", err)
	}
}

type sinkFunc func(Event)

func (f sinkFunc) Emit(e Event) { f(e) }

// TestLevelAndStrikes: a line's level is the logrus term of its severity,
// severity stays as it is, and a ban's strikes are in strikes, not count.
func TestLevelAndStrikes(t *testing.T) {
	tt := newTrail(t)
	w, err := Open(tt.opts())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []Severity{Info, Notice, Warning, Critical} {
		w.Emit(Event{Event: KindAdmin, Severity: s, Detail: s.String()})
	}
	w.Emit(Event{Event: KindBan, Severity: Critical, CountedPrefix: netip.MustParsePrefix("192.0.2.9/32"),
		IP: netip.MustParseAddr("192.0.2.9"), Reason: reason.TokenUnknown, Strikes: 5})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"info": "info", "notice": "info", "warning": "warning", "critical": "error"}
	lines := tt.lines(t)
	for _, l := range events(lines, "admin") {
		if sev := l["detail"].(string); l["severity"] != sev || l["level"] != want[sev] {
			t.Errorf("severity %v: level %v, want %s", l["severity"], l["level"], want[sev])
		}
	}
	if h := lines[0]; h["level"] != "info" || h["severity"] != "notice" {
		t.Errorf("header level %v severity %v", h["level"], h["severity"])
	}
	b := events(lines, "ban")
	if len(b) != 1 || b[0]["strikes"] != 5.0 || b[0]["count"] != nil || b[0]["reason"] != "token_unknown" || b[0]["level"] != "error" {
		t.Fatalf("ban line %v: want strikes 5, no count", b)
	}
	mustIntact(t, tt.verify(t))
}

// TestFieldNames: the keys the writer writes are the Field… constants, the
// summary rebuild decodes them by the same names, and the trail's own
// reasons are the names `audit verify` looks for.
func TestFieldNames(t *testing.T) {
	lf := newLineFormatter("n", "b")
	e := Event{Time: time.Unix(1, 0), Event: KindAuthFailed, Severity: Warning, IP: netip.MustParseAddr("192.0.2.1"),
		PeerIP: netip.MustParseAddr("192.0.2.2"), CountedPrefix: netip.MustParsePrefix("192.0.2.1/32"), Conn: 1,
		Proto: "p", Stage: StageMessage, UserID: "u", Topic: "t", Reason: reason.TokenTheft, Detail: "d", TokenFP: "f",
		Code: 1, DurationMS: 1, Count: 1, Strikes: 1, Actor: "a", First: time.Unix(1, 0), Last: time.Unix(2, 0),
		RedeemedIP: netip.MustParseAddr("192.0.2.3"), RedeemedAgoS: 1}
	line := string(lf.template(nil, &e)) + "}"
	all := []string{FieldActor, FieldBoot, FieldCode, FieldConn, FieldCount, FieldCountedPrefix, FieldDetail,
		FieldDurationMS, FieldEvent, FieldFirst, FieldIP, FieldLast, FieldLevel, FieldNode, FieldPeerIP, FieldPrev,
		FieldProto, FieldReason, FieldRedeemedAgoS, FieldRedeemedIP, FieldSeq, FieldSeverity, FieldStage,
		FieldStrikes, FieldTime, FieldTokenFP, FieldTopic, FieldUserID}
	for _, k := range all {
		if !strings.Contains(line, `"`+k+`":`) {
			t.Errorf("key %q not in a full line: %s", k, line)
		}
	}
	if n := strings.Count(line, `":`); n != len(all) {
		t.Errorf("a full line has %d keys, the Field… constants %d: %s", n, len(all), line)
	}
	known := map[string]bool{}
	for _, k := range all {
		known[k] = true
	}
	st := reflect.TypeOf(summaryLine{})
	for i := 0; i < st.NumField(); i++ {
		if tag := st.Field(i).Tag.Get("json"); !known[tag] {
			t.Errorf("summaryLine.%s decodes %q, which is no Field… constant", st.Field(i).Name, tag)
		}
	}
	for r, name := range map[reason.Reason]string{reason.TrailNew: chain.HeaderNewTrail, reason.TrailRotated: chain.HeaderRotated,
		reason.TrailResumed: chain.HeaderResumed, reason.TrailRepaired: chain.HeaderRepaired} {
		if r.String() != name {
			t.Errorf("reason %s is written, verify looks for %q", r, name)
		}
	}
}

// BenchmarkEmitDurable is the latency an admin action pays for its line
// to be on disk (one write and one fsync per call when sequential; calls
// that arrive together share the fsync).
func BenchmarkEmitDurable(b *testing.B) {
	tt := newTrail(b)
	o := tt.opts()
	o.Fsync = time.Hour
	w, err := Open(o)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	e := Event{Event: KindAdmin, Severity: Info, Stage: StageAdmin, UserID: "alice", TokenFP: "0a1b2c3d", Detail: "token issued", Actor: "api"}
	b.Run("sequential", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := w.EmitDurable(context.Background(), e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := w.EmitDurable(context.Background(), e); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
