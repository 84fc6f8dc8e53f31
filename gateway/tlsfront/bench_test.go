package tlsfront

import (
	"io"
	"os"
	"testing"
	"time"
)

// BenchmarkToClient measures the gateway → client direction: bytes the
// gateway writes into its end, through the bridge and TLS, read by a
// client (TLS 1.3, AES-GCM), in 16 KiB writes.
func BenchmarkToClient(b *testing.B) {
	c := newCert(b, b.TempDir(), "a", 1, time.Now().Add(time.Hour))
	g := newFakeGateway()
	ends := make(chan *os.File, 1)
	g.onAdopt = func(f *os.File) { ends <- f }
	_, addr := start(b, g.options(c))
	cl := dial(b, addr, clientConfig(c))
	end := <-ends
	defer end.Close()
	chunk := make([]byte, 16<<10)
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.Discard, cl, int64(b.N)*int64(len(chunk)))
		done <- err
	}()
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := end.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkEcho measures one small message (100 bytes, a subscribe) from
// the client to the gateway's end and back: the latency the front adds
// to a request and its answer.
func BenchmarkEcho(b *testing.B) {
	c := newCert(b, b.TempDir(), "a", 1, time.Now().Add(time.Hour))
	g := newFakeGateway()
	_, addr := start(b, g.options(c))
	cl := dial(b, addr, clientConfig(c))
	msg := make([]byte, 100)
	buf := make([]byte, 100)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := cl.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(cl, buf); err != nil {
			b.Fatal(err)
		}
	}
}
