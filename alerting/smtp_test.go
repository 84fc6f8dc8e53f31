package alerting

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	netmail "net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
)

func smtpConfig(port int) SMTPConfig {
	return SMTPConfig{Host: "127.0.0.1", Port: port, From: "Portcullis <alerts@example.com>",
		To: []string{"ops@example.com", "Sec Team <sec@example.com>"}, TLS: NoTLS, Timeout: 2 * time.Second}
}

func passwordFile(t *testing.T, pw string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "smtp.pw")
	if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSMTPGoodServerHeadersAndBody(t *testing.T) {
	srv := newTestSMTP(t, nil)
	s, err := NewSMTP(smtpConfig(srv.port()), nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := Message{ID: "0000000000000001", Subject: "[portcullis CRITICAL] ärger\r\nBcc: evil@example.com (n1)",
		Text: "line\r\n.\r\nportcullis ban rm 198.51.100.0/24\n", HTML: "<p>x</p>", Date: time.Unix(1700000000, 0)}
	if _, err := s.Notify(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	got := srv.messages()
	if len(got) != 1 {
		t.Fatalf("server got %d mails, want 1", len(got))
	}
	m, err := netmail.ReadMessage(strings.NewReader(got[0]))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"From": true, "To": true, "Subject": true, "Date": true, "Message-Id": true,
		"Auto-Submitted": true, "Mime-Version": true, "Content-Type": true}
	for k := range m.Header {
		if !want[k] {
			t.Errorf("unexpected header %q: %q", k, m.Header[k])
		}
	}
	if from := m.Header.Get("From"); from != `"Portcullis" <alerts@example.com>` {
		t.Errorf("From = %q", from)
	}
	to, err := m.Header.AddressList("To")
	if err != nil || len(to) != 2 || to[0].Address != "ops@example.com" || to[1].Address != "sec@example.com" {
		t.Errorf("To = %v, %v", to, err)
	}
	raw := m.Header.Get("Subject")
	if !strings.HasPrefix(raw, "=?UTF-8?q?") {
		t.Errorf("Subject not encoded: %q", raw)
	}
	dec, err := new(mime.WordDecoder).DecodeHeader(raw)
	if err != nil || !strings.Contains(dec, "ärger  Bcc: evil@example.com") || strings.ContainsAny(dec, "\r\n") {
		t.Errorf("Subject decodes to %q (%v)", dec, err)
	}
	body, _ := io.ReadAll(m.Body)
	if !strings.Contains(string(body), "portcullis ban rm 198.51.100.0/24") {
		t.Errorf("body lacks the unban command:\n%s", body)
	}
	if !strings.Contains(string(body), "text/html") {
		t.Errorf("body lacks the HTML part")
	}
}

func TestSMTPNeverGreetsEndsWithinTimeout(t *testing.T) {
	srv := newTestSMTP(t, func(s *testSMTP) { s.noGreet = true })
	cfg := smtpConfig(srv.port())
	cfg.Timeout = 300 * time.Millisecond
	s, err := NewSMTP(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	retryable, err := s.Notify(context.Background(), Message{Subject: "x", Text: "y"})
	if err == nil || !retryable {
		t.Fatalf("Notify = %v, %v; want a retryable error", retryable, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Notify took %s with a 300ms timeout", d)
	}
	if !strings.Contains(err.Error(), "greeting") {
		t.Errorf("error %q does not name the greeting", err)
	}
}

func TestSMTPStrippedSTARTTLSSendsNoCredentials(t *testing.T) {
	srv := newTestSMTP(t, func(s *testSMTP) { s.auth = true }) // AUTH offered, STARTTLS stripped
	cfg := smtpConfig(srv.port())
	cfg.TLS = StartTLS
	cfg.Username = "alerts"
	cfg.PasswordFile = passwordFile(t, "s3cret-pw")
	s, err := NewSMTP(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	retryable, err := s.Notify(context.Background(), Message{Subject: "x", Text: "y"})
	if !errors.Is(err, ErrNoStartTLS) || !retryable {
		t.Fatalf("Notify = %v, %v; want retryable ErrNoStartTLS", retryable, err)
	}
	wire := srv.wire()
	for _, secret := range []string{"AUTH", "s3cret-pw", base64.StdEncoding.EncodeToString([]byte("\x00alerts\x00s3cret-pw")),
		base64.StdEncoding.EncodeToString([]byte("s3cret-pw")), "MAIL FROM"} {
		if strings.Contains(wire, secret) {
			t.Errorf("%q crossed the wire in clear:\n%s", secret, wire)
		}
	}
}

func TestSMTPTLSNoneWithAuthRefusedAtLoad(t *testing.T) {
	cfg := smtpConfig(25)
	cfg.Username = "alerts"
	cfg.PasswordEnv = "PORTCULLIS_TEST_PW"
	if _, err := NewSMTP(cfg, func(string) string { return "pw" }); err == nil || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("NewSMTP = %v; want tls: none refused with a username", err)
	}
}

func TestSMTPSTARTTLSThenAuth(t *testing.T) {
	server, client := testTLS(t)
	srv := newTestSMTP(t, func(s *testSMTP) { s.auth = true; s.tlsConf = server })
	cfg := smtpConfig(srv.port())
	cfg.TLS = StartTLS
	cfg.Username = "alerts"
	cfg.PasswordEnv = "PW"
	cfg.TLSConfig = client
	s, err := NewSMTP(cfg, func(k string) string { return map[string]string{"PW": "s3cret-pw"}[k] })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Notify(context.Background(), Message{Subject: "x", Text: "y"}); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	authed := append([]string(nil), srv.authed...)
	srv.mu.Unlock()
	if len(authed) != 1 || !strings.HasPrefix(authed[0], "tls=true AUTH PLAIN") {
		t.Fatalf("AUTH lines %q; want one PLAIN inside TLS", authed)
	}
	if len(srv.messages()) != 1 {
		t.Fatal("no mail delivered")
	}
}

func TestSMTPMailFromStallsIsBounded(t *testing.T) {
	srv := newTestSMTP(t, func(s *testSMTP) { s.stallMail = true })
	cfg := smtpConfig(srv.port())
	cfg.Timeout = 300 * time.Millisecond
	s, err := NewSMTP(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	retryable, err := s.Notify(context.Background(), Message{Subject: "x", Text: "y"})
	if err == nil || !retryable || !strings.Contains(err.Error(), "MAIL FROM") {
		t.Fatalf("Notify = %v, %v; want a retryable MAIL FROM error", retryable, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Notify took %s", d)
	}
	if n := srv.connCount(); n != 1 {
		t.Fatalf("%d connections for one attempt; want 1 (no hidden redial)", n)
	}
}

func TestSMTPPermanentRefusalNotRetried(t *testing.T) {
	if retryableErr(errors.New("eof")) != true {
		t.Error("plain errors must be retryable")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"defaults", Config{}, ""},
		{"header injection in from", Config{SMTP: SMTPConfig{Host: "h", From: "a@example.com\r\nBcc: x@example.com", To: []string{"b@example.com"}}}, "from"},
		{"two addresses in to", Config{SMTP: SMTPConfig{Host: "h", From: "a@example.com", To: []string{"b@example.com, c@example.com"}}}, "to[0]"},
		{"tls none with auth", Config{SMTP: SMTPConfig{Host: "h", From: "a@example.com", To: []string{"b@example.com"}, Username: "u", TLS: NoTLS}}, "tls"},
		{"interval below wait", Config{GroupWait: time.Hour}, "group_interval"},
		{"threshold without window", Config{Rules: []Rule{{Name: "r", Event: audit.KindBan, Threshold: 5}}}, "window"},
		{"unknown group_by", Config{Rules: []Rule{{Name: "r", Event: audit.KindBan, GroupBy: []string{"nope"}}}}, "group_by"},
		{"matches everything", Config{Rules: []Rule{{Name: "r"}}}, "every event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v; want one mentioning %q", err, tc.want)
			}
		})
	}
}
