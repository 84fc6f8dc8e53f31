package frame

import (
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// The benchmarks feed the same buffer again and again. Feed unmasks in
// place, so each run flips the payload between its masked and unmasked
// forms; both are valid input here (binary payloads, and ASCII text with a
// masking key whose bytes are all ASCII), so no copy is needed per run.

func benchFeed(b *testing.B, f []byte, segment int) {
	var p Parser
	var h nop
	b.ReportAllocs()
	b.SetBytes(int64(len(f)))
	for b.Loop() {
		for off := 0; off < len(f); off += segment {
			if err := p.Feed(f[off:min(off+segment, len(f))], nil, h); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkFeedText64(b *testing.B) {
	f := text(strings.Repeat("x", 64))
	benchFeed(b, f, len(f))
}

func BenchmarkFeedBinary16K(b *testing.B) {
	f := clientFrame(true, 0, ws.OpBinary, make([]byte, 16<<10), true)
	benchFeed(b, f, len(f))
}

// A 16 KiB frame arriving in 1448-byte TCP segments: the pooled path.
func BenchmarkFeedBinary16KSegmented(b *testing.B) {
	f := clientFrame(true, 0, ws.OpBinary, make([]byte, 16<<10), true)
	benchFeed(b, f, 1448)
}

// A 256-byte text message in four fragments: reassembly and UTF-8 carry.
func BenchmarkFeedFragmentedText256(b *testing.B) {
	s := strings.Repeat("y", 64)
	f := cat(first(ws.OpText, s), cont(false, s), cont(false, s), cont(true, s))
	benchFeed(b, f, len(f))
}
