package audit

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/chain"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/audit/verify"
)

func benchEvent(i int) Event {
	return Event{Event: KindConnRejected, Severity: Warning, IP: netip.MustParseAddr(fmt.Sprintf("198.51.%d.%d", i>>8&255, i&255)),
		PeerIP: netip.MustParseAddr("10.0.0.1"), CountedPrefix: netip.MustParsePrefix("198.51.100.0/24"), Conn: uint64(i), Stage: StageHandshake,
		Reason: reason.BadOrigin, Code: 403, Detail: "Origin https://evil.example not allowed"}
}

// BenchmarkWriter measures the writer's sustained rate to a real file with
// the chain and fsync every second: the producer never lets the queue fill,
// so every event must be written (zero drops). Distinct IPs: no folding.
func BenchmarkWriter(b *testing.B) {
	tt := newTrail(b)
	o := tt.opts()
	o.Fsync = time.Second
	o.FoldAfter = 1 << 30
	w, err := Open(o)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		for w.q.Len() > w.q.Cap()/2 {
			runtime.Gosched()
		}
		w.Emit(benchEvent(i))
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	el := time.Since(t0)
	b.StopTimer()
	if d := w.Stats().Dropped; d != 0 {
		b.Fatalf("%d dropped", d)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
}

// TestSustained100k emits 100,000 events/s (or $AUDIT_RATE) for 3 s, paced every
// millisecond, with fsync 1s, and requires zero drops.
func TestSustained100k(t *testing.T) {
	if testing.Short() {
		t.Skip("3 s load test")
	}
	// A load measurement, not a pass/fail test on a shared machine: it
	// runs only when asked, e.g. AUDIT_RATE=100000.
	s := os.Getenv("AUDIT_RATE")
	if s == "" {
		t.Skip("a load measurement: set AUDIT_RATE=100000 to run it")
	}
	rate, err := strconv.Atoi(s)
	if err != nil || rate <= 0 {
		t.Fatalf("AUDIT_RATE=%q is not a positive number", s)
	}
	tt := newTrail(t)
	o := tt.opts()
	o.FoldAfter = 1 << 30
	w, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	const secs = 3
	t0 := time.Now()
	sent := 0
	for sent < rate*secs {
		due := int(time.Since(t0).Seconds() * float64(rate))
		for ; sent < due && sent < rate*secs; sent++ {
			w.Emit(benchEvent(sent))
		}
		time.Sleep(200 * time.Microsecond)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	el := time.Since(t0)
	st := w.Stats()
	t.Logf("sustained: %d events in %v = %.0f events/s, written %d, dropped %d, durable seq %d",
		sent, el.Round(time.Millisecond), float64(sent)/el.Seconds(), st.Written, st.Dropped, st.LastDurableSeq)
	if st.Dropped != 0 {
		t.Fatalf("%d dropped at %d events/s", st.Dropped, rate)
	}
}

// BenchmarkVerify verifies a generated multi-file trail (rotated files
// gzip'd) and reports lines/s.
func BenchmarkVerify(b *testing.B) {
	tt := newTrail(b)
	o := tt.opts()
	o.RotateBytes = 32 << 20
	o.FoldAfter = 1 << 30
	w, err := Open(o)
	if err != nil {
		b.Fatal(err)
	}
	const n = 300000
	for i := 0; i < n; i++ {
		for w.q.Len() > w.q.Cap()/2 {
			runtime.Gosched()
		}
		w.Emit(benchEvent(i))
	}
	checkFor(b, 60*time.Second, func() error {
		files, _ := chain.ListTrail(tt.dir)
		for _, f := range files {
			if !f.Gz && !f.Active {
				return fmt.Errorf("%s not gzip'd yet", f.Name)
			}
		}
		return nil
	})
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	key, _ := chain.ReadKey(filepath.Join(tt.data, "audit.key"))
	pub, _ := chain.ReadPublicKey(filepath.Join(tt.data, "audit-checkpoint.pub"))
	b.ReportAllocs()
	b.ResetTimer()
	lines := 0
	var files int
	for i := 0; i < b.N; i++ {
		r, err := verify.Dir(tt.dir, verify.Options{Key: key, PublicKey: pub})
		if err != nil || !r.OK() {
			b.Fatalf("%v %+v", err, r)
		}
		lines += r.Lines
		files = r.Files
	}
	b.ReportMetric(float64(lines)/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(files), "files")
}
