package alerting

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
)

const hookSecret = "0123456789abcdef0123456789abcdef"

// amWebhook mirrors the body of Alertmanager's webhook receiver (its
// notify/webhook.Message over template.Data), field for field.
type amWebhook struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   uint64            `json:"truncatedAlerts"`
	Receiver          string            `json:"receiver"`
	Status            string            `json:"status"`
	Alerts            []amWebhookAlert  `json:"alerts"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
}

type amWebhookAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

type hookPost struct {
	body      []byte
	delivery  string
	verified  bool // the signature matched, computed here from the documented construction
	msg       amWebhook
	decodeErr error
}

// hookReceiver is an HTTP receiver answering the statuses of answers in
// turn (then 200), verifying each POST's signature and decoding its body.
type hookReceiver struct {
	srv     *httptest.Server
	secret  []byte
	mu      sync.Mutex
	answers []int
	posts   []hookPost
}

func newHookReceiver(t *testing.T, answers ...int) *hookReceiver {
	r := &hookReceiver{secret: []byte(hookSecret), answers: answers}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	ts := req.Header.Get("X-Portcullis-Timestamp")
	mac := hmac.New(sha256.New, r.secret)
	mac.Write([]byte(ts + "." + string(body)))
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	p := hookPost{body: body, delivery: req.Header.Get("X-Portcullis-Delivery"),
		verified: req.Method == http.MethodPost && ts != "" && hmac.Equal([]byte(want), []byte(req.Header.Get("X-Portcullis-Signature"))) &&
			req.Header.Get("Content-Type") == "application/json"}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	p.decodeErr = dec.Decode(&p.msg)
	r.mu.Lock()
	r.posts = append(r.posts, p)
	code := http.StatusOK
	if len(r.answers) > 0 {
		code, r.answers = r.answers[0], r.answers[1:]
	}
	r.mu.Unlock()
	w.WriteHeader(code)
	fmt.Fprintf(w, "answer %d", code)
}

func (r *hookReceiver) got() []hookPost {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hookPost(nil), r.posts...)
}

func secretFile(t *testing.T, secret string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hook.secret")
	if err := os.WriteFile(p, []byte(secret+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// hookURL has a path and query standing for a receiver's token, which no
// audit line may show.
func (r *hookReceiver) hookURL() string { return r.srv.URL + "/hooks/T0SECRETPATH?token=Q0SECRET" }

func hookConfig(t *testing.T, r *hookReceiver) Config {
	return Config{Webhooks: []WebhookConfig{{URL: r.hookURL(), SecretFile: secretFile(t, hookSecret, 0o600), Timeout: 2 * time.Second}}}
}

// details returns the audit details of event/reason that name to.
func (s *recSink) details(event audit.Kind, reason, to string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.evs {
		if e.Event == event && e.Reason.String() == reason && strings.Contains(e.Detail, " to="+to+":") {
			out = append(out, e.Detail)
		}
	}
	return out
}

func (s *recSink) noSecrets(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.evs {
		for _, bad := range []string{"T0SECRETPATH", "Q0SECRET", hookSecret} {
			if strings.Contains(e.Detail, bad) {
				t.Errorf("audit detail shows %q: %s", bad, e.Detail)
			}
		}
	}
}

func TestWebhookSignedAlertmanagerJSONNextToMail(t *testing.T) {
	r := newHookReceiver(t)
	rec := &recNotifier{}
	h := newHarness(t, hookConfig(t, r), rec)
	h.e.Emit(ban(0, "198.51.100.7/32"))
	h.e.Emit(ban(time.Second, "198.51.100.8/32"))
	h.run(0, 2*time.Minute, 10*time.Second)

	posts := r.got()
	if len(posts) != 1 || len(rec.sent()) != 1 {
		t.Fatalf("%d POSTs and %d mails, want one each", len(posts), len(rec.sent()))
	}
	p := posts[0]
	if !p.verified {
		t.Fatal("signature does not verify as documented: HMAC-SHA256(secret, timestamp + \".\" + body)")
	}
	if p.decodeErr != nil {
		t.Fatalf("body does not decode as Alertmanager's webhook message: %v\n%s", p.decodeErr, p.body)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(p.body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
		"commonAnnotations", "externalURL", "alerts"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("body lacks %q", k)
		}
	}
	m := p.msg
	if m.Version != "4" || m.Status != "firing" || m.Receiver != "portcullis" || len(m.Alerts) != 1 ||
		m.GroupKey != `{}:{alertname="ban", severity="critical"}` {
		t.Fatalf("message %+v", m)
	}
	a := m.Alerts[0]
	if a.Status != "firing" || a.Labels["alertname"] != "ban" || a.Labels["severity"] != "critical" || a.Labels["node"] != "node-1" ||
		m.GroupLabels["alertname"] != "ban" || m.CommonLabels["alertname"] != "ban" {
		t.Fatalf("labels %v, group labels %v", a.Labels, m.GroupLabels)
	}
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(a.Fingerprint) || !a.StartsAt.Equal(t0) || !a.EndsAt.After(a.StartsAt) {
		t.Fatalf("fingerprint %q, startsAt %s, endsAt %s", a.Fingerprint, a.StartsAt, a.EndsAt)
	}
	for _, want := range []string{"198.51.100.7/32", "198.51.100.8/32", "portcullis ban rm 198.51.100.7/32", "Events:        2 in this alert"} {
		if !strings.Contains(a.Annotations["description"], want) {
			t.Errorf("description lacks %q:\n%s", want, a.Annotations["description"])
		}
	}
	if !strings.Contains(a.Annotations["summary"], "2 addresses banned") || m.CommonAnnotations["summary"] != a.Annotations["summary"] {
		t.Errorf("summary %q", a.Annotations["summary"])
	}
	host := strings.TrimPrefix(r.srv.URL, "http://")
	if got := h.sink.details(audit.KindAlertSent, "sent", "webhook:"+host); len(got) != 1 || !strings.Contains(got[0], "rule=ban outbox=") {
		t.Fatalf("webhook delivery audited %q", got)
	}
	if got := h.sink.details(audit.KindAlertSent, "sent", "mail"); len(got) != 1 {
		t.Fatalf("mail delivery audited %q", got)
	}
	if got := h.sink.details(audit.KindAlertSent, "queued", "webhook:"+host); len(got) != 1 {
		t.Fatalf("webhook queueing audited %q", got)
	}
	h.sink.noSecrets(t)
	if p.delivery == "" {
		t.Error("no X-Portcullis-Delivery header")
	}
}

// A webhook answering 500 is retried on its own: the mail, delivered at
// the first attempt, is not sent again; the retry carries the same
// delivery id and a fresh signature.
func TestWebhookRetriedAfter500MailNotResent(t *testing.T) {
	r := newHookReceiver(t, 500, 503)
	rec := &recNotifier{}
	h := newHarness(t, hookConfig(t, r), rec)
	h.e.Emit(ban(0, "198.51.100.7/32"))
	h.run(0, 10*time.Minute, 5*time.Second)
	posts := r.got()
	if len(posts) != 3 {
		t.Fatalf("%d POSTs, want 500, 503, then the delivered one", len(posts))
	}
	for _, p := range posts {
		if !p.verified || p.delivery != posts[0].delivery || string(p.body) != string(posts[0].body) {
			t.Fatalf("retry differs: verified %v, delivery %q vs %q", p.verified, p.delivery, posts[0].delivery)
		}
	}
	if n := len(rec.sent()); n != 1 {
		t.Fatalf("%d mails, want 1: a webhook failure must not re-send the mail", n)
	}
	host := strings.TrimPrefix(r.srv.URL, "http://")
	retries := h.sink.details(audit.KindAlertFailed, "retry", "webhook:"+host)
	if len(retries) != 2 || !strings.Contains(retries[0], "HTTP 500") || !strings.Contains(retries[1], "HTTP 503") {
		t.Fatalf("retries audited %q", retries)
	}
	if len(h.sink.details(audit.KindAlertSent, "sent", "webhook:"+host)) != 1 || h.e.Stats().Pending != 0 {
		t.Fatalf("not delivered at last: stats %+v", h.e.Stats())
	}
	h.sink.noSecrets(t)
}

func TestWebhook400RefusedNotRetried(t *testing.T) {
	r := newHookReceiver(t, 400)
	rec := &recNotifier{}
	h := newHarness(t, hookConfig(t, r), rec)
	h.e.Emit(ban(0, "198.51.100.7/32"))
	h.run(0, time.Hour, 10*time.Second)
	if n := len(r.got()); n != 1 {
		t.Fatalf("%d POSTs, want 1: a 400 is not retried", n)
	}
	host := strings.TrimPrefix(r.srv.URL, "http://")
	refused := h.sink.details(audit.KindAlertFailed, "refused", "webhook:"+host)
	if len(refused) != 1 || !strings.Contains(refused[0], "HTTP 400: answer 400") {
		t.Fatalf("refusal audited %q", refused)
	}
	if len(rec.sent()) != 1 || h.e.Stats().Pending != 0 {
		t.Fatalf("mails %d, stats %+v", len(rec.sent()), h.e.Stats())
	}
}

func TestWebhookStatusesRetryableOrNot(t *testing.T) {
	for _, tc := range []struct {
		code      int
		retryable bool
	}{{200, false}, {204, false}, {500, true}, {502, true}, {503, true}, {408, true}, {429, true},
		{400, false}, {401, false}, {403, false}, {404, false}, {410, false}, {301, false}, {307, false}} {
		moved := false
		target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { moved = true }))
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if tc.code >= 300 && tc.code < 400 {
				w.Header().Set("Location", target.URL+"/elsewhere")
			}
			w.WriteHeader(tc.code)
		}))
		w, err := NewWebhook(0, WebhookConfig{URL: srv.URL, SecretFile: secretFile(t, hookSecret, 0o600)})
		if err != nil {
			t.Fatal(err)
		}
		retryable, err := w.Notify(context.Background(), Message{ID: "0000000000000001", Subject: "s", JSON: []byte(`{}`)})
		srv.Close()
		target.Close()
		if (err == nil) != (tc.code < 300) || retryable != tc.retryable || moved {
			t.Errorf("HTTP %d: retryable %v, err %v, redirect followed %v", tc.code, retryable, err, moved)
		}
		if tc.code >= 300 && tc.code < 400 && (err == nil || !strings.Contains(err.Error(), "not followed")) {
			t.Errorf("HTTP %d: %v", tc.code, err)
		}
	}
}

func TestWebhookTimeoutAndRefusedConnectionRetryable(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })
	w, err := NewWebhook(0, WebhookConfig{URL: hang.URL + "/p?token=Q0SECRET", SecretFile: secretFile(t, hookSecret, 0o600),
		Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	retryable, err := w.Notify(context.Background(), Message{Subject: "s", JSON: []byte(`{}`)})
	if err == nil || !retryable || strings.Contains(err.Error(), "Q0SECRET") {
		t.Fatalf("hanging receiver: retryable %v, err %v", retryable, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	w, err = NewWebhook(0, WebhookConfig{URL: "http://" + addr + "/p?token=Q0SECRET", SecretFile: secretFile(t, hookSecret, 0o600)})
	if err != nil {
		t.Fatal(err)
	}
	retryable, err = w.Notify(context.Background(), Message{Subject: "s", JSON: []byte(`{}`)})
	if err == nil || !retryable || strings.Contains(err.Error(), "Q0SECRET") {
		t.Fatalf("refused connection: retryable %v, err %v", retryable, err)
	}
}

func TestWebhookHTTPSVerifiesCertificate(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(srv.Close)
	sf := secretFile(t, hookSecret, 0o600)
	w, err := NewWebhook(0, WebhookConfig{URL: srv.URL, SecretFile: sf})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Notify(context.Background(), Message{Subject: "s", JSON: []byte(`{}`)}); err == nil {
		t.Fatal("a certificate from an unknown CA was accepted")
	}
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	w, err = NewWebhook(0, WebhookConfig{URL: srv.URL, SecretFile: sf, TLSConfig: tlsRoots(roots)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Notify(context.Background(), Message{Subject: "s", JSON: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
}

func TestWebhookSilenceStopsIt(t *testing.T) {
	r := newHookReceiver(t)
	rec := &recNotifier{}
	h := newHarness(t, hookConfig(t, r), rec)
	if _, err := h.e.Silence(context.Background(), []Matcher{{"alertname", RuleBan}}, t0.Add(time.Hour), "alice", ""); err != nil {
		t.Fatal(err)
	}
	h.e.Emit(ban(0, "198.51.100.7/32"))
	h.run(0, 5*time.Minute, 10*time.Second)
	if len(r.got()) != 0 || len(rec.sent()) != 0 || h.sink.count(audit.KindAlertSent, "silenced") != 1 {
		t.Fatalf("%d POSTs, %d mails, %d silenced audited", len(r.got()), len(rec.sent()), h.sink.count(audit.KindAlertSent, "silenced"))
	}
}

// An attack of many auth failures and bans from one /24 is one POST, as it
// is one mail.
func TestWebhookGroupingOnePOSTPerAttack(t *testing.T) {
	r := newHookReceiver(t)
	h := newHarness(t, hookConfig(t, r), nil)
	for i := range 60 {
		at := time.Duration(i) * 500 * time.Millisecond
		h.e.Emit(audit.Event{Time: t0.Add(at), Event: audit.KindAuthFailed, Severity: audit.Warning,
			IP: netip.MustParseAddr(fmt.Sprintf("198.51.%d.1", i))})
		h.e.Emit(ban(at, fmt.Sprintf("198.51.%d.1/32", i)))
	}
	h.run(0, 4*time.Minute, 10*time.Second)
	posts := r.got()
	if len(posts) != 1 || posts[0].msg.Alerts[0].Labels["alertname"] != RuleAuthRate {
		var names []string
		for _, p := range posts {
			names = append(names, p.msg.GroupKey)
		}
		t.Fatalf("POSTs %q, want one for %s (bans muted)", names, RuleAuthRate)
	}
	if d := posts[0].msg.Alerts[0].Annotations["description"]; !strings.Contains(d, "198.51.59.1") {
		t.Fatalf("description lacks the top addresses:\n%s", d)
	}
}

// A delivery pending at Close is posted once after the restart; the mail,
// delivered before, is not sent again.
func TestWebhookRestartResumesPending(t *testing.T) {
	r := newHookReceiver(t, 503)
	rec := &recNotifier{}
	h := newHarness(t, hookConfig(t, r), rec)
	h.e.Emit(ban(0, "198.51.100.7/32"))
	h.at(30 * time.Second)
	if len(r.got()) != 1 || len(rec.sent()) != 1 || h.e.Stats().Pending != 1 {
		t.Fatalf("before the restart: %d POSTs, %d mails, stats %+v", len(r.got()), len(rec.sent()), h.e.Stats())
	}
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	h.open()
	h.run(31*time.Second, 10*time.Minute, 5*time.Second)
	posts := r.got()
	if len(posts) != 2 || !posts[1].verified || posts[1].delivery != posts[0].delivery || len(rec.sent()) != 1 {
		t.Fatalf("after the restart: %d POSTs, %d mails", len(posts), len(rec.sent()))
	}
	if h.e.Stats().Pending != 0 {
		t.Fatalf("stats %+v", h.e.Stats())
	}
}

// A pending delivery to a webhook removed from the config is given up,
// audited, and never posted elsewhere.
func TestWebhookRemovedDestinationGivenUp(t *testing.T) {
	r := newHookReceiver(t, 503)
	h := newHarness(t, hookConfig(t, r), &recNotifier{})
	h.e.Emit(ban(0, "198.51.100.7/32"))
	h.at(30 * time.Second)
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	h.cfg.Webhooks = nil
	h.open()
	h.run(31*time.Second, 5*time.Minute, 10*time.Second)
	if n := len(r.got()); n != 1 || h.sink.count(audit.KindAlertFailed, "refused") != 1 || h.e.Stats().Pending != 0 {
		t.Fatalf("%d POSTs, %d refused, stats %+v", n, h.sink.count(audit.KindAlertFailed, "refused"), h.e.Stats())
	}
}

func TestWebhookOnlyNoMailAndTest(t *testing.T) {
	r := newHookReceiver(t)
	e, err := Open(Options{Config: hookConfig(t, r), Path: filepath.Join(t.TempDir(), "a.db"), Manual: true, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Test(context.Background()); err != nil {
		t.Fatal(err)
	}
	posts := r.got()
	if len(posts) != 1 || !posts[0].verified || posts[0].decodeErr != nil || posts[0].msg.Alerts[0].Labels["alertname"] != "test" {
		t.Fatalf("test POSTs %+v", posts)
	}
}

func TestWebhookConfigValidation(t *testing.T) {
	good := secretFile(t, hookSecret, 0o600)
	for _, tc := range []struct {
		name string
		w    WebhookConfig
		want string
	}{
		{"https ok", WebhookConfig{URL: "https://hooks.example.com/x", SecretFile: good}, ""},
		{"loopback http ok", WebhookConfig{URL: "http://127.0.0.1:9/x", SecretFile: good}, ""},
		{"localhost http ok", WebhookConfig{URL: "http://localhost/x", SecretFile: good}, ""},
		{"insecure allowed", WebhookConfig{URL: "http://10.0.0.5/x", SecretFile: good, AllowInsecure: true}, ""},
		{"http elsewhere", WebhookConfig{URL: "http://10.0.0.5/T0SECRETPATH", SecretFile: good}, "alerting.webhooks[0].url: http to 10.0.0.5 sends alerts in clear"},
		{"scheme", WebhookConfig{URL: "ftp://hooks.example.com/", SecretFile: good}, `scheme "ftp"`},
		{"relative", WebhookConfig{URL: "/hook", SecretFile: good}, "scheme"},
		{"userinfo", WebhookConfig{URL: "https://u:p@hooks.example.com/", SecretFile: good}, "user info"},
		{"fragment", WebhookConfig{URL: "https://hooks.example.com/#x", SecretFile: good}, "fragment"},
		{"empty", WebhookConfig{SecretFile: good}, "url: required"},
		{"no secret", WebhookConfig{URL: "https://hooks.example.com/"}, "secret_file: required"},
		{"timeout", WebhookConfig{URL: "https://hooks.example.com/", SecretFile: good, Timeout: -time.Second}, "timeout: must be in"},
		{"timeout long", WebhookConfig{URL: "https://hooks.example.com/", SecretFile: good, Timeout: time.Hour}, "timeout: must be in"},
	} {
		err := Config{Webhooks: []WebhookConfig{tc.w}}.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "T0SECRETPATH") {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	dup := Config{Webhooks: []WebhookConfig{{URL: "https://a.example/", SecretFile: good}, {URL: "https://a.example/", SecretFile: good}}}
	if err := dup.Validate(); err == nil || !strings.Contains(err.Error(), "webhooks[1].url: the same URL as webhooks[0]") {
		t.Errorf("duplicate URL: %v", err)
	}
	for _, tc := range []struct {
		file, want string
	}{
		{secretFile(t, hookSecret, 0o644), "readable by group or others"},
		{secretFile(t, "short", 0o600), "at least 16 bytes"},
		{filepath.Join(t.TempDir(), "missing"), "no such file"},
	} {
		_, err := NewWebhook(2, WebhookConfig{URL: "https://hooks.example.com/", SecretFile: tc.file})
		if err == nil || !strings.Contains(err.Error(), "alerting.webhooks[2].secret_file") || !strings.Contains(err.Error(), tc.want) ||
			strings.Contains(err.Error(), hookSecret) {
			t.Errorf("secret file %s: %v, want %q", tc.file, err, tc.want)
		}
	}
	if _, err := Open(Options{Config: Config{}, Path: filepath.Join(t.TempDir(), "a.db")}); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("no mail, no webhook: %v", err)
	}
}

func TestSignWebhookConstruction(t *testing.T) {
	// openssl: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef
	got := SignWebhook([]byte(hookSecret), "1700000000", []byte(`{"a":1}`))
	if want := "sha256=f05f2539e3ae1c49aec5f8cfdad75ef6b06480b133973ffbb7ec9e18827af177"; got != want {
		t.Fatalf("SignWebhook = %s, want %s", got, want)
	}
}

func tlsRoots(roots *x509.CertPool) *tls.Config { return &tls.Config{RootCAs: roots} }
