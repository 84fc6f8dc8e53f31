package alerting

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The webhook notifier. Every notification that is mailed is also posted,
// through the same outbox (one item per destination), to each configured
// webhook as the JSON body of Alertmanager's webhook receiver (version 4),
// so receivers written for Alertmanager take it unchanged. Each POST is
// signed:
//
//	X-Portcullis-Timestamp: <unix seconds of this attempt>
//	X-Portcullis-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
//
// The secret comes from a file (mode 0600 or stricter), never from YAML,
// and is never logged. Redirects are not followed. 2xx is delivered; 5xx,
// 408, 429, timeouts and connection errors are retried with the outbox's
// backoff; any other status (3xx and 4xx) is refused for good.

// Webhook defaults and bounds.
const (
	DefaultWebhookTimeout = 10 * time.Second // one whole POST, response headers included
	MaxWebhookTimeout     = 5 * time.Minute
	MaxWebhooks           = 16
	MinWebhookSecret      = 16 // bytes; `openssl rand -hex 32` gives 64
	maxWebhookReply       = 4 << 10
)

// Webhook headers.
const (
	HeaderSignature = "X-Portcullis-Signature"
	HeaderTimestamp = "X-Portcullis-Timestamp"
	// HeaderDelivery is the outbox id of the notification: the same on
	// every retry of one delivery, so a receiver can drop a repeat (a POST
	// that timed out after the receiver took it is posted again).
	HeaderDelivery = "X-Portcullis-Delivery"
)

// WebhookConfig is one entry of `alerting.webhooks`. There is deliberately
// no secret field: the secret comes from SecretFile.
type WebhookConfig struct {
	URL        string        // http or https; http only to a loopback host unless AllowInsecure
	SecretFile string        // file holding the HMAC secret on its first line (mode 0600)
	Timeout    time.Duration // bound on one POST; default DefaultWebhookTimeout
	// AllowInsecure allows http:// to a host that is not loopback: the
	// alert (addresses, user ids) then crosses the network in clear.
	AllowInsecure bool

	// TLSConfig, when set, is cloned as the base of the client TLS config
	// (tests use it for RootCAs). MinVersion is raised to TLS 1.2.
	TLSConfig *tls.Config
}

func (c WebhookConfig) withDefaults() WebhookConfig {
	if c.Timeout == 0 {
		c.Timeout = DefaultWebhookTimeout
	}
	return c
}

// validate reports every bad field of c, keyed alerting.webhooks[i].
func (c WebhookConfig) validate(i int) []error {
	var errs []error
	bad := func(key, f string, a ...any) {
		errs = append(errs, fmt.Errorf("alerting.webhooks[%d].%s: %s", i, key, fmt.Sprintf(f, a...)))
	}
	if _, err := parseWebhookURL(c.URL, c.AllowInsecure); err != nil {
		bad("url", "%v", err)
	}
	if c.SecretFile == "" {
		bad("secret_file", "required: every POST is signed with the secret in this file")
	}
	if c.Timeout < 0 || c.Timeout > MaxWebhookTimeout {
		bad("timeout", "must be in (0, %s] (0: default %s), got %s", MaxWebhookTimeout, DefaultWebhookTimeout, c.Timeout)
	}
	return errs
}

// parseWebhookURL checks a webhook URL: absolute http or https with a
// host, no user info, no fragment; http only to a loopback host unless
// insecure. Errors never repeat the URL, whose path or query may hold a
// receiver's token.
func parseWebhookURL(s string, insecure bool) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("required")
	}
	if hasCtl(s) || strings.ContainsAny(s, " ") {
		return nil, errors.New("control characters or spaces in the URL")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, errors.New("not a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("scheme %q: want https (or http to a loopback host)", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return nil, errors.New("no host")
	case u.User != nil:
		return nil, errors.New("user info in the URL is refused (it would be logged with the URL): put credentials in the receiver's path or use the signature")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return nil, errors.New("a fragment is never sent: remove it")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("port %q: want 1..65535", p)
		}
	}
	if u.Scheme == "http" && !insecure && !loopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("http to %s sends alerts in clear: use https, or set allow_insecure: true", u.Hostname())
	}
	return u, nil
}

// loopbackHost reports whether host is localhost or a loopback address.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readSecretFile reads the secret on the first line of path (surrounding
// white space trimmed): a file only its owner can read or write.
func readSecretFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by group or others (mode %04o): chmod 600 %s", path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, _, _ := strings.Cut(string(b), "\n")
	s = strings.TrimSpace(s)
	if len(s) < MinWebhookSecret {
		return nil, fmt.Errorf("%s: the secret must be at least %d bytes (e.g. openssl rand -hex 32 > %s)", path, MinWebhookSecret, path)
	}
	return []byte(s), nil
}

// Webhook is a Notifier posting the Alertmanager JSON of a notification
// (Message.JSON) to one URL. It is safe for use by multiple goroutines.
type Webhook struct {
	cfg    WebhookConfig
	url    string
	key    string // outbox destination: "webhook:" + 16 hex digits of the URL's SHA-256
	label  string // for audit lines and logs: "webhook:" + host[:port]; never the path or query
	client *http.Client
}

// NewWebhook checks cfg and reads its secret; i is its index in
// alerting.webhooks, for error messages.
func NewWebhook(i int, cfg WebhookConfig) (*Webhook, error) {
	c := cfg.withDefaults()
	if errs := c.validate(i); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	u, _ := parseWebhookURL(c.URL, c.AllowInsecure)
	if _, err := readSecretFile(c.SecretFile); err != nil {
		return nil, fmt.Errorf("alerting.webhooks[%d].secret_file: %w", i, err)
	}
	var tc *tls.Config
	if c.TLSConfig != nil {
		tc = c.TLSConfig.Clone()
	} else {
		tc = &tls.Config{}
	}
	tc.MinVersion = max(tc.MinVersion, tls.VersionTLS12)
	tr := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            (&net.Dialer{Timeout: c.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:        tc,
		TLSHandshakeTimeout:    c.Timeout,
		ResponseHeaderTimeout:  c.Timeout,
		MaxIdleConns:           2,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		ForceAttemptHTTP2:      true,
	}
	sum := sha256.Sum256([]byte(c.URL))
	return &Webhook{
		cfg: c, url: c.URL,
		key:   "webhook:" + hex.EncodeToString(sum[:8]),
		label: "webhook:" + u.Host,
		client: &http.Client{Transport: tr, Timeout: c.Timeout,
			// Never follow: a redirect is a moved receiver (fix the URL),
			// and following it would post the alert somewhere unchecked.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}, nil
}

// Dest is the webhook's outbox destination key.
func (w *Webhook) Dest() string { return w.key }

// String names the webhook by host, as audit lines do; never its path,
// query or secret.
func (w *Webhook) String() string { return w.label }

// SignWebhook returns the X-Portcullis-Signature value of body posted at
// timestamp (the X-Portcullis-Timestamp value): "sha256=" and the hex
// HMAC-SHA256 under secret of timestamp, ".", body.
func SignWebhook(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Notify posts m.JSON in one attempt bounded by the webhook's timeout (and
// by ctx). retryable is true for 5xx, 408, 429, timeouts and connection
// errors.
func (w *Webhook) Notify(ctx context.Context, m Message) (retryable bool, err error) {
	if len(m.JSON) == 0 || !json.Valid(m.JSON) {
		return false, fmt.Errorf("alerting: %s: no valid JSON body to post", w.label)
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(m.JSON))
	if err != nil {
		return false, fmt.Errorf("alerting: %s: %s", w.label, clean(redactURL(err.Error(), w.url), 200))
	}
	// The secret is read again at every attempt, so that a rotated secret
	// takes effect without a reload.
	secret, err := readSecretFile(w.cfg.SecretFile)
	if err != nil {
		return true, fmt.Errorf("alerting: %s: secret_file: %w", w.label, err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "portcullis-alerting")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, SignWebhook(secret, ts, m.JSON))
	if safeID(m.ID) && m.ID != "" {
		req.Header.Set(HeaderDelivery, m.ID)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		// url.Error repeats the URL, path and query included: keep the
		// cause only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return true, fmt.Errorf("alerting: %s: post: %s", w.label, clean(redactURL(err.Error(), w.url), 200))
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, maxWebhookReply))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return false, nil
	}
	msg := fmt.Sprintf("alerting: %s: HTTP %d", w.label, code)
	if t := strings.TrimSpace(string(reply)); t != "" {
		msg += ": " + clean(t, 120)
	}
	switch {
	case code >= 300 && code < 400:
		where := "elsewhere"
		if loc, err := url.Parse(resp.Header.Get("Location")); err == nil && loc.Host != "" {
			where = "to " + loc.Host
		}
		return false, errors.New(msg + " (redirect " + clean(where, 80) + " not followed: fix the webhook's url)")
	case code >= 500, code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		return true, errors.New(msg)
	}
	return false, errors.New(msg)
}

// redactURL removes the full URL from an error text, leaving its host.
func redactURL(s, raw string) string {
	if raw == "" {
		return s
	}
	host := ""
	if u, err := url.Parse(raw); err == nil {
		host = u.Host
	}
	return strings.ReplaceAll(s, raw, host)
}

// The body of Alertmanager's webhook receiver, version 4
// (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config).
type amPayload struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []amAlert         `json:"alerts"`
}

type amAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// webhookReceiver is the receiver name of every payload.
const webhookReceiver = "portcullis"

// renderWebhook builds the Alertmanager JSON of n: one alert whose labels
// are the group's (alertname, severity, the rule's group_by values) and
// node; its annotations are the mail's subject (summary) and plain-text
// body (description: counts, top addresses, bans, samples, commands).
// endsAt is when the group stops firing unless new events come.
func renderWebhook(n *notification, mail Message, node string, hold time.Duration) json.RawMessage {
	group := map[string]string{}
	for _, l := range n.Labels {
		group[l.Name] = l.Value
	}
	labels := map[string]string{"node": node}
	for k, v := range group {
		labels[k] = v
	}
	ann := map[string]string{"summary": mail.Subject, "description": mail.Text}
	starts := n.First
	if starts.IsZero() {
		starts = mail.Date
	}
	ends := n.Last.Add(hold)
	if n.Last.IsZero() || n.Held > 0 {
		ends = mail.Date
	}
	p := amPayload{
		Version: "4", GroupKey: "{}:" + promLabels(n.Labels), Status: "firing", Receiver: webhookReceiver,
		GroupLabels: group, CommonLabels: labels, CommonAnnotations: ann,
		Alerts: []amAlert{{Status: "firing", Labels: labels, Annotations: ann, StartsAt: starts.UTC(), EndsAt: ends.UTC(),
			Fingerprint: fingerprint(labels)}},
	}
	b, err := json.Marshal(p)
	if err != nil { // maps of strings and times: cannot fail
		return nil
	}
	return b
}

// promLabels renders ls as Alertmanager spells a group key's labels:
// {a="x", b="y"}, names sorted.
func promLabels(ls Labels) string {
	s := slices.Clone(ls)
	slices.SortFunc(s, func(a, b Label) int { return strings.Compare(a.Name, b.Name) })
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(l.Name + "=" + strconv.Quote(l.Value))
	}
	b.WriteByte('}')
	return b.String()
}

// fingerprint is Prometheus's label-set fingerprint: FNV-1a 64 over the
// names and values in name order, each followed by 0xff, in 16 hex digits.
func fingerprint(labels map[string]string) string {
	names := make([]string, 0, len(labels))
	for k := range labels {
		names = append(names, k)
	}
	slices.Sort(names)
	h := fnv.New64a()
	for _, k := range names {
		h.Write([]byte(k))
		h.Write([]byte{0xff})
		h.Write([]byte(labels[k]))
		h.Write([]byte{0xff})
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// testWebhookMessage is the payload of Engine.Test for webhooks.
func testWebhookMessage(node string, now time.Time) Message {
	m := testMessage(node, now)
	n := &notification{GroupKey: "test", Rule: "test", Labels: Labels{{"alertname", "test"}, {"severity", "notice"}},
		First: now, Last: now}
	m.JSON = renderWebhook(n, m, node, 0)
	return m
}
