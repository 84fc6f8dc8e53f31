package frame

import (
	"fmt"
	"testing"
)

// FuzzFeed checks that the parser never panics and that feeding input in one
// piece or byte by byte gives the same messages and the same verdict.
func FuzzFeed(f *testing.F) {
	f.Add(text("hello"))
	f.Add(closeFrame(1000, "bye"))
	f.Add([]byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'})
	f.Fuzz(func(t *testing.T, in []byte) {
		lim := Limits{MaxFrame: 4096, MaxMessage: 8192}
		a, errA := run(t, in, 0, lim)
		b, errB := run(t, in, 1, lim)
		if fmt.Sprint(a) != fmt.Sprint(b) || fmt.Sprint(errA) != fmt.Sprint(errB) {
			t.Fatalf("one-shot %q %v, chunked %q %v", a, errA, b, errB)
		}
	})
}
