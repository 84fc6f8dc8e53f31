package audit

import (
	"testing"

	"github.com/portcullis-gw/portcullis/audit/index"
)

func BenchmarkHashesOf(b *testing.B) {
	e := benchEvent(12345)
	var h index.Hashes
	for i := 0; i < b.N; i++ {
		hashesOf(&h, &e)
	}
}

// BenchmarkIndexLine is the writer goroutine's share of the summary.
func BenchmarkIndexLine(b *testing.B) {
	w := &Writer{idx: index.NewBuilder()}
	e := benchEvent(12345)
	var h index.Hashes
	hashesOf(&h, &e)
	line := make([]byte, 400)
	for i := 0; i < b.N; i++ {
		w.seq++
		w.indexLine(line, &e, &h)
	}
}

func TestHashesOfMatchesWritten(t *testing.T) {
	long := string(make([]byte, 300))
	for _, v := range []string{"192.0.2.1", "10.0.0.1:443", "::ffff:192.0.2.1", "d\xffave", "é", long, "a\u2028b"} {
		e := Event{IP: v, PeerIP: v, CountedPrefix: v, UserID: v, Topic: v}
		var h, want index.Hashes
		hashesOf(&h, &e)
		want.Set(written(v), written(v), written(v), written(v), written(v))
		if h != want {
			t.Errorf("%q: %+v, want %+v", v, h, want)
		}
	}
}
