package e2e

// Helpers for the audit-trail tests (audit_test.go). Every name starts with
// "aud" so that they cannot collide with the other e2e helpers.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// audChurnConfig lets the allow-listed 127.0.0.1 open connections as fast
// as the tests need to fill the trail.
const audChurnConfig = "limits: {conn_rate: {rate: 100000, burst: 100000}}\n"

// audServe runs `portcullis serve` on dataDir ("" for a fresh one) with
// extra config YAML, like startServer; the config file lives outside the
// data dir, so the data dir holds only what the gateway wrote.
func audServe(t *testing.T, extra, dataDir string) *server {
	t.Helper()
	if dataDir == "" {
		dataDir = filepath.Join(t.TempDir(), "d")
	}
	return startServerIn(t, extra, dataDir)
}

// audStop sends SIGTERM and waits for exit 0.
func audStop(t *testing.T, s *server) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("server exit after SIGTERM: %v\n%s", err, s.stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("server did not exit within 15 s of SIGTERM")
	}
}

// audKill9 kills the gateway with SIGKILL and waits for it to be gone.
func audKill9(t *testing.T, s *server) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("server did not die of SIGKILL")
	}
}

// audStats returns the "audit" object of GET /v1/stats.
func audStats(s *server) map[string]any {
	s.t.Helper()
	code, out := s.api("GET", "/v1/stats", "")
	if code != 200 {
		s.t.Fatalf("GET /v1/stats: %d %v", code, out)
	}
	a, _ := out["audit"].(map[string]any)
	if a == nil {
		s.t.Fatalf("GET /v1/stats has no audit object: %v", out)
	}
	return a
}

func audNum(m map[string]any, k string) uint64 {
	f, _ := m[k].(float64)
	return uint64(f)
}

// audUpgradeReq is a valid portcullis.v1 upgrade request.
func audUpgradeReq(addr string) []byte {
	return []byte("GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: portcullis.v1\r\n\r\n")
}

// audCloseFrame is a masked close frame with code 1000.
var audCloseFrame = []byte{0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2}

// audOneConn opens a WebSocket, reads the welcome and closes it cleanly:
// a conn_open and a conn_close line in the trail.
func audOneConn(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(audUpgradeReq(addr)); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.Contains(status, " 101 ") {
		return fmt.Errorf("handshake: %q", status)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if l == "\r\n" {
			break
		}
	}
	h := make([]byte, 2)
	if _, err := io.ReadFull(br, h); err != nil {
		return err
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return err
		}
		n = int(binary.BigEndian.Uint16(b[:]))
	}
	if _, err := io.ReadFull(br, make([]byte, n)); err != nil {
		return err
	}
	if _, err := c.Write(audCloseFrame); err != nil {
		return err
	}
	// Wait for the server's close (or EOF) so conn_close is certain.
	_, _ = io.Copy(io.Discard, br)
	return nil
}

// audChurn opens and closes n connections with conc workers; it returns
// how many succeeded. stop (may be nil) ends it early.
func audChurn(addr string, n, conc int, stop <-chan struct{}) (ok int64, firstErr error) {
	var wg sync.WaitGroup
	var next, good atomic.Int64
	var once sync.Once
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n <= 0 || next.Add(1) <= int64(n) {
				if stop != nil {
					select {
					case <-stop:
						return
					default:
					}
				}
				if err := audOneConn(addr); err != nil {
					once.Do(func() { firstErr = err })
					if stop == nil {
						return
					}
					continue
				}
				good.Add(1)
			}
		}()
	}
	wg.Wait()
	return good.Load(), firstErr
}

// audFile is one file of a trail with its content (inflated if gzip'd).
type audFile struct {
	path    string
	name    string
	seq     uint64 // first seq from the name; 0 for audit.log
	content []byte
}

// audTrail reads the trail in dir in order: rotated files by first seq,
// then audit.log.
func audTrail(t *testing.T, dir string) []audFile {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []audFile
	var active *audFile
	for _, e := range ents {
		n := e.Name()
		if n == "audit.log" {
			active = &audFile{path: filepath.Join(dir, n), name: n, content: audRead(t, filepath.Join(dir, n))}
			continue
		}
		if !strings.HasPrefix(n, "audit-") {
			continue
		}
		base := strings.TrimSuffix(strings.TrimSuffix(n, ".gz"), ".log")
		var seq uint64
		if i := strings.LastIndexByte(base, '-'); i >= 0 {
			fmt.Sscan(base[i+1:], &seq)
		}
		out = append(out, audFile{path: filepath.Join(dir, n), name: n, seq: seq, content: audRead(t, filepath.Join(dir, n))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	if active != nil {
		out = append(out, *active)
	}
	return out
}

// audRead reads a file, inflating it if it is gzip'd.
func audRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return b
}

// audLines splits content into lines; the last element is a trailing
// partial line (empty when the content ends with a newline).
func audLines(b []byte) (lines [][]byte, tail []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return lines, b
		}
		lines = append(lines, b[:i])
		b = b[i+1:]
	}
	return lines, nil
}

// audEvents parses every complete line of every file of the trail in dir.
func audEvents(t *testing.T, dir string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, f := range audTrail(t, dir) {
		lines, _ := audLines(f.content)
		for _, l := range lines {
			var m map[string]any
			if json.Unmarshal(l, &m) == nil {
				out = append(out, m)
			}
		}
	}
	return out
}

// audVerify runs `portcullis audit verify --data data` and returns its
// combined output and exit code.
func audVerify(t *testing.T, data string, args ...string) (string, int) {
	t.Helper()
	out, errOut, code := portcullis(t, nil, append([]string{"audit", "verify", "--data", data}, args...)...)
	return out + errOut, code
}

// audCopyDir copies the directory tree src to a fresh directory.
func audCopyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// audWriteGz writes b gzip'd to path.
func audWriteGz(t *testing.T, path string, b []byte) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// audSend writes one masked text message to rc, fragmented into frames of
// at most frag bytes (0: one frame).
func audSend(rc *rawConn, msg []byte, frag int) {
	if frag <= 0 || len(msg) <= frag {
		rc.frame(true, 1, msg, true)
		return
	}
	op := byte(1)
	for len(msg) > 0 {
		n := frag
		if n > len(msg) {
			n = len(msg)
		}
		rc.frame(n == len(msg), op, msg[:n], true)
		msg, op = msg[n:], 0
	}
}

// audReply reads server frames until a text frame and decodes it.
func audReply(t *testing.T, rc *rawConn) map[string]any {
	t.Helper()
	for {
		op, p := rc.read()
		switch op {
		case 1:
			var m map[string]any
			if err := json.Unmarshal(p, &m); err != nil {
				t.Fatalf("server sent %q: %v", p, err)
			}
			return m
		case 8:
			t.Fatalf("server closed: %q", p)
		}
	}
}
