package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// refusedAllowance mirrors policy/ratelimit.RefusedAllowance: refused
// sockets of one address kept open for their 429.
const refusedAllowance = 4

// burst opens n TCP connections from ip as fast as it can and sends
// nothing. It returns the ones that connected; a reset that beats
// connect() back is counted in resets. A dial that times out (the kernel
// dropping a banned address's SYNs) ends the burst.
func burst(t *testing.T, s *server, ip string, n int) (open []net.Conn, resets int) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 300 * time.Millisecond}
	for i := 0; i < n; i++ {
		c, err := d.Dial("tcp", s.wsAddr)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			resets++
			continue
		}
		open = append(open, c)
	}
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	return open, resets
}

// stillOpen reads from every conn at once for wait and returns those the
// gateway left open (the read timed out); the others were reset.
func stillOpen(conns []net.Conn, wait time.Duration) []net.Conn {
	var mu sync.Mutex
	var open []net.Conn
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(wait))
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				mu.Lock()
				open = append(open, c)
				mu.Unlock()
			}
		}(c)
	}
	wg.Wait()
	return open
}

// One address opening 300 silent sockets (per_ip_connections 50) holds
// at most its cap plus the small allowance of refused sockets waiting for
// their 429: every other socket is reset at accept, audited, and struck at
// once, so the ban comes within the burst, long before the handshake
// timeout. Another address still gets 101 meanwhile.
func TestAcceptRefusedSocketsCapped(t *testing.T) {
	const cap = 50
	s := startServer(t, "limits: {per_ip_connections: 50, conn_rate: {rate: 5, burst: 100}, handshake_timeout: 30s}\n"+
		"bans: {allow: [\"127.0.0.1\"], maxretry: 400}\n")
	start := time.Now()
	conns, early := burst(t, s, "127.0.0.7", 300)
	open := stillOpen(conns, 500*time.Millisecond)
	if len(open) > cap+refusedAllowance || len(open) < cap {
		t.Fatalf("%d of 300 silent sockets left open, want %d..%d (%d reset before connect returned)",
			len(open), cap, cap+refusedAllowance, early)
	}
	if n := int(s.stats()["connections"].(float64)); n > cap+refusedAllowance {
		t.Fatalf("server holds %d connections, want at most %d", n, cap+refusedAllowance)
	}
	// Refused at accept, for the cap and then for the attempt rate; each
	// one a strike at once (weight 1), long before handshake_timeout.
	lines := s.waitAll(
		map[string]any{"event": "conn_rejected", "ip": "127.0.0.7", "stage": "accept", "reason": "per_ip_connections"},
		map[string]any{"event": "conn_rejected", "ip": "127.0.0.7", "stage": "accept", "reason": "conn_rate"})
	for _, e := range lines {
		if e["severity"] != "warning" || e["counted_prefix"] != "127.0.0.7/32" || e["code"] != nil {
			t.Fatalf("reset at accept audited as %v", e)
		}
	}
	resetN := 300 - len(open)
	if n := s.strikes(); n < resetN {
		t.Fatalf("%d strikes right after the burst, want at least %d", n, resetN)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("strikes took %s", d)
	}
	checkFor(t, 10*time.Second, func() error {
		if n := s.auditTotal(map[string]any{"event": "conn_rejected", "ip": "127.0.0.7", "stage": "accept"}); n != resetN {
			return fmt.Errorf("%d conn_rejected at accept, want %d", n, resetN)
		}
		return nil
	})
	// Another address is unaffected.
	other := upgradeFrom(t, s, "127.0.0.8")

	// The sockets left open: the admitted ones upgrade, the held refused
	// ones are answered 429 with the reason, none is left hanging.
	var ok, tooMany int
	for _, c := range open {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, upgradeRequest(s)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("socket left open got no answer: %v", err)
		}
		switch resp.StatusCode {
		case 101:
			ok++
		case 429:
			tooMany++
		default:
			t.Fatalf("answer %d", resp.StatusCode)
		}
		resp.Body.Close()
	}
	if ok != cap || tooMany != len(open)-cap {
		t.Fatalf("%d upgraded and %d answered 429, want %d and %d", ok, tooMany, cap, len(open)-cap)
	}
	if tooMany > 0 {
		s.waitAudit(map[string]any{"event": "conn_rejected", "ip": "127.0.0.7", "stage": "handshake", "code": 429})
	}

	// A second burst takes the strikes past maxretry: the ban comes during
	// the burst, its live connections are closed, the rest is reset.
	burst(t, s, "127.0.0.7", 200)
	checkFor(t, 3*time.Second, func() error {
		if _, ok := s.bans()["127.0.0.7/32"]; !ok {
			return errors.New("127.0.0.7 not banned")
		}
		return nil
	})
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("ban came %s after the first burst", d)
	}
	ban := s.waitAudit(map[string]any{"event": "ban", "counted_prefix": "127.0.0.7/32"})
	if ban["severity"] != "critical" {
		t.Fatalf("ban audited as %v", ban)
	}
	checkFor(t, 5*time.Second, func() error {
		if n := int(s.stats()["connections"].(float64)); n != 1 {
			return fmt.Errorf("%d connections open, want only 127.0.0.8's", n)
		}
		return nil
	})
	other.c.Close()
}

// Out of file descriptors the gateway degrades instead of spinning: it
// resets waiting connections with its reserve descriptor, backs off its
// listener, logs and audits the condition once (critical, mailed by the
// gateway_trouble rule), and recovers by itself when descriptors free up.
func TestAcceptFDExhaustion(t *testing.T) {
	s := startServer(t, "limits: {handshake_timeout: 60s}\nbans: {allow: [\"127.0.0.0/8\"]}\n")
	pid := s.cmd.Process.Pid
	limit := uint64(procFDs(t, pid) + 40)
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: limit}, nil); err != nil {
		t.Skipf("cannot lower the server's descriptor limit: %v", err)
	}
	// Fill every descriptor with silent sockets; the ones beyond are reset.
	held, _ := burst(t, s, "127.0.0.20", 60)
	checkFor(t, 5*time.Second, func() error {
		if n := s.auditCount(map[string]any{"event": "fd_exhausted"}); n != 1 {
			return fmt.Errorf("%d fd_exhausted events", n)
		}
		return nil
	})
	e := s.waitAudit(map[string]any{"event": "fd_exhausted"})
	if e["severity"] != "critical" || e["stage"] != "system" || e["reason"] != "fd_exhausted" {
		t.Fatalf("fd_exhausted audited as %v", e)
	}

	// A client arriving now is not left hanging: it is reset, or — when a
	// descriptor happened to be free at that moment (the admin API's own
	// connections come and go) — answered.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.21")}, Timeout: 2 * time.Second}
	if c, err := d.Dial("tcp", s.wsAddr); err == nil {
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		_, _ = c.Write([]byte(upgradeRequest(s)))
		n, err := c.Read(make([]byte, 1))
		c.Close()
		if n == 0 && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
			t.Fatalf("connection while out of descriptors: %v, want a reset or an answer", err)
		}
	}

	// Continued connection attempts for 2 s cost the server little CPU.
	cpu0 := procCPU(t, pid)
	stop := time.Now().Add(2 * time.Second)
	attempts := 0
	var wg sync.WaitGroup
	var mu sync.Mutex
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.0.%d", 30+g))}, Timeout: 200 * time.Millisecond}
			for time.Now().Before(stop) {
				if c, err := d.Dial("tcp", s.wsAddr); err == nil {
					c.Close()
				}
				mu.Lock()
				attempts++
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
	cpu := procCPU(t, pid) - cpu0
	if cpu > 500*time.Millisecond {
		t.Fatalf("server used %s of CPU in 2 s out of descriptors (%d attempts), want < 500ms", cpu, attempts)
	}
	t.Logf("server CPU %s over 2 s and %d connection attempts out of descriptors", cpu, attempts)
	if n := strings.Count(s.stderr.String(), "out of file descriptors"); n != 1 {
		t.Fatalf("the condition was logged %d times, want once:\n%s", n, s.stderr.String())
	}
	if n := s.auditCount(map[string]any{"event": "fd_exhausted"}); n != 1 {
		t.Fatalf("%d fd_exhausted events, want 1", n)
	}

	// Descriptors free up: the gateway recovers by itself.
	for _, c := range held {
		c.Close()
	}
	// The connections still waiting from the flood are drained (reset)
	// first, so a client may need a few tries.
	checkFor(t, 15*time.Second, func() error {
		c, err := net.DialTimeout("tcp", s.wsAddr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, upgradeRequest(s)); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 101 {
			return fmt.Errorf("upgrade after recovery: %d", resp.StatusCode)
		}
		return nil
	})
	// The episode ends after fdQuiet (2 s) without a failed accept. The
	// flood above left up to 4,096 connections in the listen backlog; the
	// loops drain them in bursts that can hit the limit again, and each
	// such accept restarts the quiet window, so on a loaded machine the
	// end comes later than the first successful upgrade: wait for it
	// longer than waitAudit does.
	var r map[string]any
	checkFor(t, 40*time.Second, func() error {
		for _, e := range s.auditLines() {
			if e["event"] == "fd_recovered" {
				r = e
				return nil
			}
		}
		return errors.New("no fd_recovered event yet")
	})
	if r["severity"] != "info" || r["stage"] != "system" || r["count"] == nil || r["count"].(float64) < 1 {
		t.Fatalf("fd_recovered audited as %v", r)
	}
	if n := s.auditCount(map[string]any{"event": "fd_exhausted"}); n != 1 {
		t.Fatalf("%d fd_exhausted events after recovery, want 1", n)
	}
}
