package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"
)

// dialOutcome connects from src and says what happened: "open" (the
// handshake completed and nothing came back), "reset" (refused at accept),
// or "dropped" (the SYN got no answer: dropped in the kernel).
func dialOutcome(t *testing.T, s *server, src string) string {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 300 * time.Millisecond}
	c, err := d.Dial("tcp", s.wsAddr)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "dropped"
		}
		return "reset"
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "open"
		}
		return "reset"
	}
	return "open"
}

// A banned prefix that floods is moved into the kernel: after
// kernel_drop_rate refusals within a second its SYNs are dropped (no
// answer), the switch is audited once, other addresses are unaffected,
// and lifting the ban removes the filter.
func TestKernelDropUnderFlood(t *testing.T) {
	s := startServer(t, "bans: {allow: [\"127.0.0.1\"], kernel_drop_rate: 20}\n")
	if code, out := s.api("POST", "/v1/bans", `{"prefix":"127.0.0.64/26","for":"1h","reason":"flood test"}`); code != 201 {
		t.Fatalf("ban: %d %v", code, out)
	}
	if got := dialOutcome(t, s, "127.0.0.65"); got != "reset" {
		t.Fatalf("first attempt from the banned range: %s, want reset at accept", got)
	}
	for i := 0; i < 40; i++ {
		if c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.0.%d", 66+i%60))},
			Timeout: 200 * time.Millisecond}).Dial("tcp", s.wsAddr); err == nil {
			c.Close()
		}
	}
	e := s.waitAudit(map[string]any{"event": "kernel_drop", "counted_prefix": "127.0.0.64/26"})
	if e["reason"] != "banned" {
		t.Fatalf("kernel_drop event %v", e)
	}
	checkFor(t, 5*time.Second, func() error {
		if got := dialOutcome(t, s, "127.0.0.70"); got != "dropped" {
			return fmt.Errorf("attempt from the flooding range: %s, want dropped in the kernel", got)
		}
		return nil
	})
	if got := dialOutcome(t, s, "127.0.0.1"); got != "open" {
		t.Fatalf("allow-listed 127.0.0.1: %s", got)
	}
	if got := dialOutcome(t, s, "127.0.0.20"); got != "open" {
		t.Fatalf("127.0.0.20 outside the ban: %s", got)
	}
	if code, _ := s.api("DELETE", "/v1/bans/"+url.PathEscape("127.0.0.64/26"), ""); code != 200 {
		t.Fatalf("unban: %d", code)
	}
	checkFor(t, 5*time.Second, func() error {
		if got := dialOutcome(t, s, "127.0.0.70"); got != "open" {
			return fmt.Errorf("after the unban: %s", got)
		}
		return nil
	})
	if n := s.auditCount(map[string]any{"event": "kernel_drop"}); n != 1 {
		t.Fatalf("%d kernel_drop events, want 1", n)
	}
}
