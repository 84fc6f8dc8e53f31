package e2e

import (
	"fmt"
	"mime"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// smtpServer is a real SMTP server (Debian's python3-aiosmtpd) delivering
// into a Maildir.
type smtpServer struct {
	port int
	dir  string
}

func startSMTP(t *testing.T) *smtpServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := filepath.Join(t.TempDir(), "maildir")
	requireTool(t, "python3-aiosmtpd", hintAiosmtpd, pythonBinary, "-c", "import aiosmtpd")
	cmd := exec.Command(pythonBinary, "-m", "aiosmtpd", "-n", "-l", fmt.Sprintf("127.0.0.1:%d", port),
		"-c", "aiosmtpd.handlers.Mailbox", dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start aiosmtpd (apt-get install python3-aiosmtpd): %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	checkFor(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		return c.Close()
	})
	return &smtpServer{port: port, dir: dir}
}

// messages parses every message the server has received.
func (m *smtpServer) messages(t *testing.T) []*mail.Message {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(m.dir, "new", "*"))
	var out []*mail.Message
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := mail.ReadMessage(fh)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, msg)
		t.Cleanup(func() { fh.Close() })
	}
	return out
}

// The bar, end to end from the built binary: a token brute force
// produces exactly one grouped CRITICAL email at a real SMTP server within
// group_wait + 10 s, naming the banned address and carrying the unban
// command.
func TestAlertBruteForceSendsOneCriticalEmail(t *testing.T) {
	smtp := startSMTP(t)
	const groupWait = 2 * time.Second
	s := startServer(t, fmt.Sprintf(`bans: {allow: ["127.0.0.1"]}
alerting:
  smtp: {host: "127.0.0.1", port: %d, from: "portcullis@gw.example", to: ["oncall@site.example"], tls: none, timeout: 5s}
  group_wait: %s
`, smtp.port, groupWait))

	start := time.Now()
	rc := upgradeFrom(t, s, "127.0.0.5")
	for i := 0; i < 5; i++ {
		rc.sendJSON(subMsg(i, "news", "u1", wrongToken(i)))
		if m := rc.readMsg(); m["code"] != "auth_failed" {
			t.Fatalf("wrong token %d: %v", i, m)
		}
	}
	if _, code := rc.drain(); code != 1008 {
		t.Fatalf("banned connection closed with %d, want 1008", code)
	}
	// Keep knocking: refusals at accept must not produce more mail.
	for i := 0; i < 20; i++ {
		if c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}}).Dial("tcp", s.wsAddr); err == nil {
			c.Close()
		}
	}

	var got []*mail.Message
	checkFor(t, groupWait+10*time.Second, func() error {
		if got = smtp.messages(t); len(got) == 0 {
			return fmt.Errorf("no email after %s", time.Since(start).Round(time.Millisecond))
		}
		return nil
	})
	arrived := time.Since(start)
	time.Sleep(3 * time.Second) // anything more would have come by now
	if got = smtp.messages(t); len(got) != 1 {
		t.Fatalf("%d emails, want exactly one", len(got))
	}
	msg := got[0]
	subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(subject, "[portcullis CRITICAL]") {
		t.Fatalf("subject %q", subject)
	}
	if from := msg.Header.Get("From"); !strings.Contains(from, "portcullis@gw.example") {
		t.Fatalf("From %q", from)
	}
	if to := msg.Header.Get("To"); !strings.Contains(to, "oncall@site.example") {
		t.Fatalf("To %q", to)
	}
	raw, err := os.ReadFile(mustGlobOne(t, filepath.Join(smtp.dir, "new", "*")))
	if err != nil {
		t.Fatal(err)
	}
	body := decodeQP(string(raw))
	for _, want := range []string{"127.0.0.5", "portcullis ban rm 127.0.0.5/32", "portcullis audit query"} {
		if !strings.Contains(body, want) {
			t.Fatalf("email lacks %q:\n%s", want, body)
		}
	}
	t.Logf("one CRITICAL email %q after %s (group_wait %s)", subject, arrived.Round(time.Millisecond), groupWait)
	s.waitAudit(map[string]any{"event": "alert_sent", "reason": "sent"})
}

func mustGlobOne(t *testing.T, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(pattern)
	if len(m) != 1 {
		t.Fatalf("%s: %d files", pattern, len(m))
	}
	return m[0]
}

// decodeQP undoes quoted-printable soft line breaks and =XX escapes well
// enough to search the text.
func decodeQP(s string) string {
	s = strings.ReplaceAll(s, "=\r\n", "")
	s = strings.ReplaceAll(s, "=\n", "")
	return strings.NewReplacer("=3D", "=", "=20", " ").Replace(s)
}

// A gateway killed with SIGKILL is reported on its next start: an
// `unclean_stop` audit event (critical) and a CRITICAL email; a clean stop
// is not.
func TestAlertUncleanStop(t *testing.T) {
	smtp := startSMTP(t)
	extra := fmt.Sprintf(`alerting:
  smtp: {host: "127.0.0.1", port: %d, from: "portcullis@gw.example", to: ["oncall@site.example"], tls: none, timeout: 5s}
  group_wait: 1s
`, smtp.port)
	data := filepath.Join(t.TempDir(), "d")
	s := startServerIn(t, extra, data)
	s.stop()
	s = startServerIn(t, extra, data)
	if n := s.auditCount(map[string]any{"event": "unclean_stop"}); n != 0 {
		t.Fatalf("unclean_stop after a clean stop")
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s = startServerIn(t, extra, data)
	e := s.waitAudit(map[string]any{"event": "unclean_stop"})
	if e["severity"] != "critical" || e["stage"] != "system" {
		t.Fatalf("unclean_stop event %v", e)
	}
	checkFor(t, 15*time.Second, func() error {
		for _, m := range smtp.messages(t) {
			subj, _ := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
			if strings.HasPrefix(subj, "[portcullis CRITICAL]") {
				return nil
			}
		}
		return fmt.Errorf("no CRITICAL email about the unclean stop")
	})
	s.stop()
}

// A silence made with the CLI mutes matching alerts until it is removed;
// the muted decision is audited. (Like Alertmanager, a group muted once is
// mailed again at its next group_interval: 2 s here.)
func TestAlertSilence(t *testing.T) {
	smtp := startSMTP(t)
	s := startServer(t, fmt.Sprintf(`alerting:
  smtp: {host: "127.0.0.1", port: %d, from: "portcullis@gw.example", to: ["oncall@site.example"], tls: none, timeout: 5s}
  group_wait: 1s
  group_interval: 2s
`, smtp.port))
	cli := func(args ...string) string {
		out, err := exec.Command(gwBinary(t), append(args, "--data", s.data)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := cli("alert", "silence", "add", "--match", "alertname=ban", "--for", "1h", "--comment", "planned test")
	var id string
	if _, err := fmt.Sscanf(out, "silence %s until", &id); err != nil || id == "" {
		t.Fatalf("silence add printed %q", out)
	}
	if list := cli("alert", "silence", "list"); !strings.Contains(list, id) || !strings.Contains(list, "alertname=\"ban\"") {
		t.Fatalf("silence list:\n%s", list)
	}
	cli("ban", "add", "198.51.100.7", "--reason", "silenced test")
	s.waitAudit(map[string]any{"event": "alert_sent", "reason": "silenced"})
	time.Sleep(2 * time.Second)
	if n := len(smtp.messages(t)); n != 0 {
		t.Fatalf("%d emails despite the silence", n)
	}
	cli("alert", "silence", "rm", id)
	cli("ban", "add", "198.51.100.8", "--reason", "after the silence")
	checkFor(t, 12*time.Second, func() error {
		if len(smtp.messages(t)) == 0 {
			return fmt.Errorf("no email after the silence was removed")
		}
		return nil
	})
}
