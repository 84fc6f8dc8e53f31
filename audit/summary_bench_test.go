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

// text is v as a reader decodes it from the line: "" for the zero value.
func text[T interface {
	IsValid() bool
	String() string
}](v T) string {
	if !v.IsValid() {
		return ""
	}
	return written(v.String())
}

func TestHashesOfMatchesWritten(t *testing.T) {
	long := string(make([]byte, 300))
	for i, v := range []string{"192.0.2.1", "10.0.0.1:443", "::ffff:192.0.2.1", "d\xffave", "é", long, "a\u2028b"} {
		a := addrs[i%len(addrs)]
		p := prefixes[i%len(prefixes)]
		e := Event{IP: a, PeerIP: a, CountedPrefix: p, UserID: v, Topic: v}
		var h, want index.Hashes
		hashesOf(&h, &e)
		want.Set(text(a), text(a), text(p), written(v), written(v))
		if h != want {
			t.Errorf("%q, %v, %v: %+v, want %+v", v, a, p, h, want)
		}
	}
}
