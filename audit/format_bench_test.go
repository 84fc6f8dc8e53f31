package audit

import "testing"

// BenchmarkWriteEvent measures formatting, sealing and buffering one event
// on the writer goroutine (file writes included, fsync not).
func BenchmarkWriteEvent(b *testing.B) {
	tt := newTrail(b)
	w, err := Open(tt.opts())
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	// Stop the writer goroutine from racing us: use a private writer state.
	e := benchEvent(1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.writeEvent(e)
	}
}
