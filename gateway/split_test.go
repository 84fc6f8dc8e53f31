package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Frames whose header and payload arrive in separate reads (gobwas/ws
// clients write them separately) are reassembled for every connection, with
// many connections interleaving on the same loops.
func TestSplitFramesManyConnections(t *testing.T) {
	s, store := startTestServer(t)
	defer s.Shutdown(t.Context())
	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			user := fmt.Sprint("s", i)
			tok, _, _ := store.Mint(user, nil, 0, time.Now())
			c, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
			br := bufio.NewReader(c)
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					errs <- err
					return
				}
				if l == "\r\n" {
					break
				}
			}
			rw := struct {
				io.Reader
				io.Writer
			}{br, c}
			if _, err := wsutil.ReadServerText(rw); err != nil {
				errs <- fmt.Errorf("welcome: %w", err)
				return
			}
			payload := []byte(fmt.Sprintf(`{"op":"subscribe","id":1,"topic":"t%d","userId":%q,"token":%q}`, i%7, user, tok))
			h := ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: ws.NewMask(), Length: int64(len(payload))}
			ws.Cipher(payload, h.Mask, 0)
			hdr := make([]byte, 0, 14)
			w := bufferWriter{&hdr}
			_ = ws.WriteHeader(w, h)
			for k := range hdr { // the header a byte at a time
				_, _ = c.Write(hdr[k : k+1])
				time.Sleep(time.Millisecond)
			}
			_, _ = c.Write(payload[:len(payload)/2])
			time.Sleep(time.Millisecond)
			_, _ = c.Write(payload[len(payload)/2:])
			b, err := wsutil.ReadServerText(rw)
			if err != nil || !strings.Contains(string(b), "subscribed") {
				errs <- fmt.Errorf("conn %d: %q %v", i, b, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

type bufferWriter struct{ b *[]byte }

func (w bufferWriter) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }
