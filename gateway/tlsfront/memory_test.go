package tlsfront

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The idle-memory harness (docs/TLS.md): N TLS connections from a client
// in another process go through the front, each does what a subscriber
// does (the gateway greets, the client sends one small message), then all
// stay idle while this process's RSS and Go memory are read. Run:
//
//	TLSFRONT_IDLE_CONNS=4000 go test -run TestIdleMemory -v ./gateway/tlsfront/
//
// TLSFRONT_IDLE_VERSION=1.2 limits the client to TLS 1.2. The "gateway"
// here holds the fds only; its own cost (the 192-byte conn) is not
// counted.
func TestIdleMemory(t *testing.T) {
	if os.Getenv("TLSFRONT_HEAP_PROFILE") != "" {
		runtime.MemProfileRate = 1
	}
	n, _ := strconv.Atoi(os.Getenv("TLSFRONT_IDLE_CONNS"))
	if n <= 0 {
		t.Skip("set TLSFRONT_IDLE_CONNS=N to measure the memory of N idle TLS connections")
	}
	c := newCert(t, t.TempDir(), "a", 1, time.Now().Add(time.Hour))
	var mu sync.Mutex
	var fds []int
	o := Options{
		CertFile: c.certFile, KeyFile: c.keyFile,
		MaxHandshakes: n,
		Admit:         func(netip.AddrPort) (bool, bool) { return true, true },
		Adopt: func(fd int, _ netip.AddrPort, _ bool) error {
			mu.Lock()
			fds = append(fds, fd)
			mu.Unlock()
			return nil
		},
		Refused: func(p netip.AddrPort, _ bool, err error) { t.Errorf("refused %v: %v", p, err) },
	}
	f, addr := start(t, o)
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()

	runtime.GC()
	debug.FreeOSMemory()
	rss0, ms0 := rss(t), memStats()

	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleClientHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "TLSFRONT_HELPER_ADDR="+addr, fmt.Sprintf("TLSFRONT_HELPER_CONNS=%d", n))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	out := bufio.NewReader(stdout)
	waitLine := func(want string) {
		for {
			line, err := out.ReadString('\n')
			if err != nil {
				t.Fatalf("client helper: %v", err)
			}
			if strings.HasPrefix(line, want) {
				return
			}
		}
	}
	waitLine("connected")
	checkFor(t, time.Minute, func() error {
		if s := f.Stats(); s.Bridged != n {
			return fmt.Errorf("%d of %d bridged", s.Bridged, n)
		}
		return nil
	})
	// The gateway greets every connection (a 101 and a welcome frame are
	// ~200 bytes) and reads one ~100-byte message from each.
	hello := make([]byte, 200)
	mu.Lock()
	for _, fd := range fds {
		if _, err := unix.Write(fd, hello); err != nil {
			t.Fatal(err)
		}
	}
	mu.Unlock()
	if _, err := io.WriteString(stdin, "greeted\n"); err != nil {
		t.Fatal(err)
	}
	waitLine("sent")
	buf := make([]byte, 4096)
	mu.Lock()
	for _, fd := range fds {
		for got := 0; got < 100; {
			m, err := unix.Read(fd, buf)
			if err == unix.EAGAIN {
				pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
				_, _ = unix.Poll(pfd, 10000)
				continue
			}
			if err != nil || m == 0 {
				t.Fatalf("read from a client: %d, %v", m, err)
			}
			got += m
		}
	}
	mu.Unlock()

	// Stacks grown by the handshakes shrink by half per collection.
	for i := 0; i < 4; i++ {
		runtime.GC()
	}
	debug.FreeOSMemory()
	rss1, ms1 := rss(t), memStats()
	if p := os.Getenv("TLSFRONT_HEAP_PROFILE"); p != "" {
		runtime.MemProfileRate = 1
		hf, _ := os.Create(p)
		_ = pprof.WriteHeapProfile(hf)
		hf.Close()
	}
	per := func(a, b uint64) float64 { return float64(int64(b)-int64(a)) / float64(n) / 1024 }
	t.Logf("%d idle TLS connections (client max version %s): per connection RSS %.1f KiB, Go heap in use %.1f KiB, goroutine stacks %.1f KiB, goroutines %d",
		n, os.Getenv("TLSFRONT_IDLE_VERSION"), per(rss0, rss1), per(ms0.HeapInuse, ms1.HeapInuse), per(ms0.StackInuse, ms1.StackInuse), runtime.NumGoroutine())
}

// TestIdleClientHelper is the client process of TestIdleMemory.
func TestIdleClientHelper(t *testing.T) {
	addr := os.Getenv("TLSFRONT_HELPER_ADDR")
	if addr == "" {
		t.Skip("run by TestIdleMemory")
	}
	n, _ := strconv.Atoi(os.Getenv("TLSFRONT_HELPER_CONNS"))
	cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
	if os.Getenv("TLSFRONT_IDLE_VERSION") == "1.2" {
		cfg.MaxVersion = tls.VersionTLS12
	}
	conns := make([]*tls.Conn, n)
	for i := range conns {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		conns[i] = c
	}
	fmt.Println("connected")
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 200)
	msg := []byte(strings.Repeat("s", 100))
	for _, c := range conns {
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("sent")
	_, _ = io.Copy(io.Discard, in) // until the server is done measuring
}

func memStats() runtime.MemStats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms
}

// rss reads this process's resident set size in bytes.
func rss(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
