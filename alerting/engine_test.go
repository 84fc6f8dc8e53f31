package alerting

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	netmail "net/mail"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 0, 0, time.UTC)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// recSink is an audit.Durable keeping what it gets; durable counts the
// events given through EmitDurable, which fails with fail when set.
type recSink struct {
	mu      sync.Mutex
	evs     []audit.Event
	durable []reason.Reason
	fail    error
}

func (s *recSink) Emit(e audit.Event) { s.mu.Lock(); s.evs = append(s.evs, e); s.mu.Unlock() }

func (s *recSink) EmitDurable(_ context.Context, e audit.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evs = append(s.evs, e)
	if s.fail != nil {
		return s.fail
	}
	s.durable = append(s.durable, e.Reason)
	return nil
}

func (s *recSink) count(event audit.Kind, reason string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.evs {
		if e.Event == event && (reason == "" || e.Reason.String() == reason) {
			n++
		}
	}
	return n
}

type recNotifier struct {
	mu   sync.Mutex
	msgs []Message
}

func (r *recNotifier) Notify(_ context.Context, m Message) (bool, error) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	return false, nil
}

func (r *recNotifier) sent() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.msgs...)
}

type harness struct {
	t    *testing.T
	clk  *fakeClock
	sink *recSink
	path string
	cfg  Config
	n    Notifier
	e    *Engine
}

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func newHarness(t *testing.T, cfg Config, n Notifier) *harness {
	h := &harness{t: t, clk: &fakeClock{t: t0}, sink: &recSink{}, path: filepath.Join(t.TempDir(), "alerts.db"), cfg: cfg, n: n}
	h.open()
	t.Cleanup(func() { h.e.Close() })
	return h
}

func (h *harness) open() {
	h.t.Helper()
	e, err := Open(Options{Config: h.cfg, Path: h.path, Node: "node-1", Notifier: h.n, Audit: h.sink, Log: quietLog(),
		Now: h.clk.Now, Jitter: func() float64 { return 0.5 }, Manual: true, QueueSize: 20000})
	if err != nil {
		h.t.Fatal(err)
	}
	h.e = e
}

// at sets the clock and ticks.
func (h *harness) at(d time.Duration) {
	h.clk.Set(t0.Add(d))
	h.e.Tick(t0.Add(d))
}

// run ticks every step from..to (inclusive).
func (h *harness) run(from, to, step time.Duration) {
	for d := from; d <= to; d += step {
		h.at(d)
	}
}

// singleAddr is p's address when p is a single address, else the zero Addr.
func singleAddr(p netip.Prefix) netip.Addr {
	if p.IsSingleIP() {
		return p.Addr()
	}
	return netip.Addr{}
}

func ban(at time.Duration, prefix string) audit.Event {
	return audit.Event{Time: t0.Add(at), Event: audit.KindBan, Severity: audit.Critical, Stage: audit.StageSystem,
		IP: singleAddr(netip.MustParsePrefix(prefix)), CountedPrefix: netip.MustParsePrefix(prefix), Reason: reason.ConnRate, Actor: "guard", Strikes: 5,
		Detail: "banned for 10m0s until " + t0.Add(at+10*time.Minute).Format(time.RFC3339) + " (repeat 0)"}
}

func smtpEngineConfig(port int) Config {
	c := Config{SMTP: smtpConfig(port)}
	c.SMTP.Timeout = 500 * time.Millisecond
	return c
}

func TestEngineMailOverSMTPResistsHeaderInjection(t *testing.T) {
	srv := newTestSMTP(t, nil)
	cfg := smtpEngineConfig(srv.port())
	cfg.Rules = append(DefaultRules(), Rule{Name: "denied", Event: audit.KindAuthFailed, Severity: audit.Warning,
		GroupBy: []string{"user_id", "topic", "reason"}, Summary: "auth failed"})
	h := newHarness(t, cfg, nil)
	h.e.Emit(ban(0, "198.51.100.0/24"))
	h.e.Emit(audit.Event{Time: t0, Event: audit.KindAuthFailed, Severity: audit.Warning, IP: netip.MustParseAddr("203.0.113.9"),
		UserID: "eve\r\nBcc: victim@example.com", Topic: "news\nX-Injected: 1", Reason: reason.TokenUnknown,
		TokenFP: "abcd1234"})
	h.at(29 * time.Second)
	if n := len(srv.messages()); n != 0 {
		t.Fatalf("%d mails before group_wait", n)
	}
	h.at(30 * time.Second)
	msgs := srv.messages()
	if len(msgs) != 2 {
		t.Fatalf("got %d mails at group_wait, want 2 (ban, denied)", len(msgs))
	}
	allowed := map[string]bool{"From": true, "To": true, "Subject": true, "Date": true, "Message-Id": true,
		"Auto-Submitted": true, "Mime-Version": true, "Content-Type": true}
	var banBody string
	for _, raw := range msgs {
		m, err := netmail.ReadMessage(strings.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		for k := range m.Header {
			if !allowed[k] {
				t.Errorf("injected header %q: %q", k, m.Header[k])
			}
		}
		if got := m.Header.Get("From"); got != `"Portcullis" <alerts@example.com>` {
			t.Errorf("From = %q", got)
		}
		if got := m.Header.Get("To"); !strings.Contains(got, "ops@example.com") || strings.Contains(got, "victim") {
			t.Errorf("To = %q", got)
		}
		subj, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
		if err != nil || !strings.HasPrefix(subj, "[portcullis ") || !strings.HasSuffix(subj, "(node-1)") {
			t.Errorf("Subject = %q (%v)", subj, err)
		}
		b, _ := io.ReadAll(m.Body)
		if strings.Contains(subj, "banned") {
			banBody = string(b)
		}
	}
	for _, want := range []string{"portcullis ban rm 198.51.100.0/24", "portcullis audit query --since 2026-03-04T05:05:00Z",
		"--ip 198.51.100.0/24", "Action taken", "banned for 10m0s until",
		// One ban line is one ban, whatever its strikes: they are shown apart.
		"Events:        1 in this alert", "5 strikes"} {
		if !strings.Contains(banBody, want) {
			t.Errorf("ban mail lacks %q:\n%s", want, banBody)
		}
	}
	if h.sink.count(audit.KindAlertSent, "sent") != 2 || h.sink.count(audit.KindAlertSent, "queued") != 2 {
		t.Errorf("audit: %d sent, %d queued; want 2 and 2", h.sink.count(audit.KindAlertSent, "sent"), h.sink.count(audit.KindAlertSent, "queued"))
	}
}

func TestEngineSMTPDownTwoMinutesThenUpArrivesOnce(t *testing.T) {
	srv := newTestSMTP(t, nil)
	srv.down.Store(true)
	h := newHarness(t, smtpEngineConfig(srv.port()), nil)
	h.e.Emit(ban(0, "198.51.100.0/24"))
	h.run(0, 150*time.Second, 5*time.Second) // first attempt at 30 s, down until 2m30s
	if n := len(srv.messages()); n != 0 {
		t.Fatalf("%d mails while down", n)
	}
	if h.sink.count(audit.KindAlertFailed, "retry") == 0 {
		t.Fatal("failed attempts not audited")
	}
	if st := h.e.Stats(); st.Pending != 1 {
		t.Fatalf("pending = %d, want 1", st.Pending)
	}
	srv.down.Store(false)
	h.run(155*time.Second, 30*time.Minute, 5*time.Second)
	if n := len(srv.messages()); n != 1 {
		t.Fatalf("%d mails after the outage, want exactly 1", n)
	}
	if st := h.e.Stats(); st.Pending != 0 || st.Sent != 1 || st.Queued != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestEngineNeverGreetingServerIsRetriedLater(t *testing.T) {
	srv := newTestSMTP(t, func(s *testSMTP) { s.noGreet = true })
	h := newHarness(t, smtpEngineConfig(srv.port()), nil)
	h.e.Emit(ban(0, "198.51.100.0/24"))
	start := time.Now()
	h.at(30 * time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("attempt took %s", d)
	}
	h.at(35 * time.Second) // backoff: nothing due yet
	if got := h.sink.count(audit.KindAlertFailed, "retry"); got != 1 {
		t.Fatalf("%d failed attempts audited, want 1", got)
	}
	h.at(41 * time.Second)
	if got := h.sink.count(audit.KindAlertFailed, "retry"); got != 2 {
		t.Fatalf("%d failed attempts after the backoff, want 2", got)
	}
}

func TestEngineStrippedSTARTTLSAuditedNoCredentials(t *testing.T) {
	srv := newTestSMTP(t, func(s *testSMTP) { s.auth = true })
	cfg := smtpEngineConfig(srv.port())
	cfg.SMTP.TLS = StartTLS
	cfg.SMTP.Username = "alerts"
	cfg.SMTP.PasswordFile = passwordFile(t, "s3cret-pw")
	h := newHarness(t, cfg, nil)
	h.e.Emit(ban(0, "198.51.100.0/24"))
	h.at(30 * time.Second)
	if h.sink.count(audit.KindAlertFailed, "retry") != 1 {
		t.Fatal("refused attempt not audited")
	}
	if w := srv.wire(); strings.Contains(w, "AUTH") || strings.Contains(w, "MAIL") {
		t.Fatalf("sent in clear:\n%s", w)
	}
}

func TestEngineMailFromStallsAttemptsBounded(t *testing.T) {
	srv := newTestSMTP(t, func(s *testSMTP) { s.stallMail = true })
	h := newHarness(t, smtpEngineConfig(srv.port()), nil)
	h.e.Emit(ban(0, "198.51.100.0/24"))
	h.run(0, 10*time.Minute, 10*time.Second)
	st := h.e.Stats()
	// Attempts at 30s, then +10, +20, +40, +80, +160, +320 s: 6 by 10 min.
	if st.Attempts == 0 || st.Attempts > 7 || uint64(srv.connCount()) != st.Attempts {
		t.Fatalf("attempts %d, connections %d; want a few, one connection each", st.Attempts, srv.connCount())
	}
}

func TestEngineRestartResumesPendingOnce(t *testing.T) {
	srv := newTestSMTP(t, nil)
	srv.down.Store(true)
	h := newHarness(t, smtpEngineConfig(srv.port()), nil)
	h.e.Emit(ban(0, "198.51.100.0/24"))
	h.at(30 * time.Second)
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	srv.down.Store(false)
	h.open()
	h.run(31*time.Second, 10*time.Minute, 5*time.Second)
	if n := len(srv.messages()); n != 1 {
		t.Fatalf("%d mails after restart, want 1", n)
	}

	// Closed before group_wait: the group is saved at Close, sent after.
	h.e.Emit(ban(11*time.Minute, "192.0.2.0/24"))
	h.clk.Set(t0.Add(11 * time.Minute))
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	h.open()
	h.run(11*time.Minute, 20*time.Minute, 5*time.Second)
	msgs := srv.messages()
	if len(msgs) != 2 || !strings.Contains(msgs[1], "192.0.2.0/24") {
		t.Fatalf("%d mails; want the group closed before group_wait delivered once", len(msgs))
	}
}

func TestEngine10000BansOneMailThenBoundedUpdates(t *testing.T) {
	rec := &recNotifier{}
	h := newHarness(t, Config{}, rec)
	for i := range 10000 {
		at := time.Duration(i) * time.Millisecond
		h.e.Emit(ban(at, fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)))
		if i%1000 == 999 {
			h.at(at)
		}
	}
	h.at(29 * time.Second)
	if n := len(rec.sent()); n != 0 {
		t.Fatalf("%d mails before group_wait", n)
	}
	h.run(30*time.Second, time.Hour, 10*time.Second)
	msgs := rec.sent()
	if len(msgs) != 1 {
		t.Fatalf("%d mails for one burst, want 1", len(msgs))
	}
	if !strings.Contains(msgs[0].Subject, "10000 addresses banned") || !strings.Contains(msgs[0].Text, "and 9980 more") {
		t.Errorf("mail: %q\n%s", msgs[0].Subject, msgs[0].Text)
	}
	if st := h.e.Stats(); st.EventsDropped != 0 || st.Events != 10000 {
		t.Fatalf("stats %+v", st)
	}
	// A steady flood for 20 minutes: one mail, then at most one per group_interval.
	base := 2 * time.Hour
	for s := time.Duration(0); s <= 20*time.Minute; s += 10 * time.Second {
		for i := range 50 {
			h.e.Emit(ban(base+s, fmt.Sprintf("172.16.%d.0/24", i)))
		}
		h.at(base + s)
	}
	h.run(base+20*time.Minute, base+40*time.Minute, 10*time.Second)
	if n := len(rec.sent()) - 1; n < 2 || n > 1+20/5+1 {
		t.Fatalf("%d mails for a 20-minute flood; want 1 + at most one per 5 minutes", n)
	}
}

func TestEngineCapHoldsBackAndSendsOneDigest(t *testing.T) {
	rec := &recNotifier{}
	cfg := Config{MaxPerHour: 3, Rules: []Rule{{Name: "per_ip", Event: audit.KindAuthFailed, GroupBy: []string{"ip"},
		Severity: audit.Warning}}}
	h := newHarness(t, cfg, rec)
	for i := range 10 {
		h.e.Emit(audit.Event{Time: t0, Event: audit.KindAuthFailed, Severity: audit.Warning, IP: netip.MustParseAddr(fmt.Sprintf("203.0.113.%d", i))})
	}
	h.run(0, 30*time.Minute, 10*time.Second)
	if n := len(rec.sent()); n != 3 {
		t.Fatalf("%d mails in the first hour, want max_per_hour 3", n)
	}
	if st := h.e.Stats(); st.Capped != 7 || h.sink.count(audit.KindAlertSent, "capped") != 7 {
		t.Fatalf("capped %d (audited %d), want 7", st.Capped, h.sink.count(audit.KindAlertSent, "capped"))
	}
	h.run(30*time.Minute+10*time.Second, 3*time.Hour, 10*time.Second)
	msgs := rec.sent()
	if len(msgs) != 4 || !strings.Contains(msgs[3].Subject, "7 further alerts held back") {
		t.Fatalf("%d mails; last %q", len(msgs), msgs[len(msgs)-1].Subject)
	}
}

func TestEngineAttackInhibitsBanMails(t *testing.T) {
	rec := &recNotifier{}
	h := newHarness(t, Config{}, rec)
	for i := range 60 { // 60 auth failures in a minute, each from another /24
		h.e.Emit(audit.Event{Time: t0.Add(time.Duration(i) * 500 * time.Millisecond), Event: audit.KindAuthFailed,
			Severity: audit.Warning, IP: netip.MustParseAddr(fmt.Sprintf("198.51.%d.1", i)), Reason: reason.TokenUnknown})
	}
	h.e.Emit(ban(10*time.Second, "198.51.7.1/32"))
	h.run(0, 2*time.Minute, 10*time.Second)
	msgs := rec.sent()
	if len(msgs) != 1 || !strings.Contains(msgs[0].Subject, "auth failures above 50/min") {
		t.Fatalf("mails %v; want only the attack mail", subjects(msgs))
	}
	if h.sink.count(audit.KindAlertSent, "inhibited") != 1 {
		t.Fatal("inhibition not audited")
	}
	// After the attack, a new ban mails again.
	h.e.Emit(ban(20*time.Minute, "192.0.2.1/32"))
	h.run(20*time.Minute, 21*time.Minute, 10*time.Second)
	if msgs := rec.sent(); len(msgs) != 2 || !strings.Contains(msgs[1].Subject, "192.0.2.1/32") {
		t.Fatalf("mails %v", subjects(msgs))
	}
}

func TestEngineSilencesMuteSurviveRestartAndExpire(t *testing.T) {
	rec := &recNotifier{}
	h := newHarness(t, Config{}, rec)
	id, err := h.e.Silence(context.Background(), []Matcher{{"alertname", RuleBan}}, t0.Add(time.Hour), "alice", "maintenance")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.e.Silence(context.Background(), nil, t0.Add(time.Hour), "", ""); err == nil {
		t.Fatal("a silence without matchers or author was accepted")
	}
	h.e.Emit(ban(0, "198.51.100.0/24"))
	h.run(0, time.Minute, 10*time.Second)
	if len(rec.sent()) != 0 || h.sink.count(audit.KindAlertSent, "silenced") != 1 {
		t.Fatalf("silenced ban mailed (%d) or not audited", len(rec.sent()))
	}
	h.e.Close()
	h.open()
	sls := h.e.Silences()
	if len(sls) != 1 || sls[0].ID != id || sls[0].By != "alice" || !sls[0].Active(t0.Add(time.Minute)) {
		t.Fatalf("silences after restart: %+v", sls)
	}
	h.clk.Set(t0.Add(10 * time.Minute))
	if err := h.e.Expire(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if err := h.e.Expire(context.Background(), "nope"); err != ErrNoSilence {
		t.Fatalf("Expire(unknown) = %v", err)
	}
	h.e.Emit(ban(10*time.Minute, "192.0.2.0/24"))
	h.run(10*time.Minute, 11*time.Minute, 10*time.Second)
	if len(rec.sent()) != 1 {
		t.Fatalf("%d mails after the silence expired, want 1", len(rec.sent()))
	}
}

func TestEngineIgnoresOwnReportsAndNeverBlocks(t *testing.T) {
	rec := &recNotifier{}
	h := newHarness(t, Config{}, rec)
	h.e.Emit(audit.Event{Time: t0, Event: audit.KindAlertFailed, Severity: audit.Critical, Stage: audit.StageSystem})
	h.at(time.Hour)
	if len(rec.sent()) != 0 || h.e.Stats().Events != 0 {
		t.Fatal("the engine alerted on its own report")
	}
	e, err := Open(Options{Config: Config{}, Path: filepath.Join(t.TempDir(), "a.db"), Notifier: rec, Manual: true,
		QueueSize: 1, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for range 10000 {
		e.Emit(ban(0, "198.51.100.0/24"))
	}
	if st := e.Stats(); st.Events+st.EventsDropped != 10000 || st.EventsDropped == 0 {
		t.Fatalf("stats %+v: overflow not counted", st)
	}
}

func TestEngineTestMail(t *testing.T) {
	srv := newTestSMTP(t, nil)
	h := newHarness(t, smtpEngineConfig(srv.port()), nil)
	if err := h.e.Test(context.Background()); err != nil {
		t.Fatal(err)
	}
	if msgs := srv.messages(); len(msgs) != 1 || !strings.Contains(msgs[0], "test alert") {
		t.Fatalf("test mail: %q", msgs)
	}
}

func subjects(ms []Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Subject)
	}
	return out
}

func TestEngineBackgroundWorkersDeliver(t *testing.T) {
	rec := &recNotifier{}
	e, err := Open(Options{Config: Config{GroupWait: 20 * time.Millisecond, GroupInterval: time.Second},
		Path: filepath.Join(t.TempDir(), "a.db"), Notifier: rec, TickEvery: 10 * time.Millisecond, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.Emit(audit.Event{Event: audit.KindBan, Severity: audit.Critical, Stage: audit.StageSystem, CountedPrefix: netip.MustParsePrefix("192.0.2.0/24")})
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.sent()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // real clock on purpose: this test covers the background tickers
	}
	if len(rec.sent()) != 1 {
		t.Fatalf("%d mails from the background workers, want 1", len(rec.sent()))
	}
}

// TestEngineSilenceIsDurable: adding and ending a silence are acknowledged
// only once their admin lines are on disk; when the trail cannot say so,
// the change is made anyway and the error wraps audit.ErrNotDurable (the
// admin API answers 503 audit_unavailable).
func TestEngineSilenceIsDurable(t *testing.T) {
	h := newHarness(t, Config{}, &recNotifier{})
	id, err := h.e.Silence(context.Background(), []Matcher{{"alertname", RuleBan}}, t0.Add(time.Hour), "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.e.Expire(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	h.sink.mu.Lock()
	got := h.sink.durable
	h.sink.fail = fmt.Errorf("%w: disk full", audit.ErrNotDurable)
	h.sink.mu.Unlock()
	if len(got) != 2 || got[0] != reason.SilenceAdd || got[1] != reason.SilenceExpire {
		t.Fatalf("durable admin lines %v, want silence_add and silence_expire", got)
	}
	id2, err := h.e.Silence(context.Background(), []Matcher{{"alertname", RuleBan}}, t0.Add(time.Hour), "bob", "")
	if !errors.Is(err, audit.ErrNotDurable) || id2 == "" {
		t.Fatalf("Silence with a failing trail: %q, %v; want the id and ErrNotDurable", id2, err)
	}
	if sls := h.e.Silences(); len(sls) != 2 {
		t.Fatalf("silences %+v: the silence must be in force anyway", sls)
	}
	if err := h.e.Expire(context.Background(), id2); !errors.Is(err, audit.ErrNotDurable) {
		t.Fatalf("Expire with a failing trail: %v", err)
	}
}
