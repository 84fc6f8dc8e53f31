package config

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Webhook is one entry of alerting.webhooks: a receiver of every alert as
// Alertmanager webhook JSON, signed with the secret of SecretFile.
type Webhook struct {
	URL        string        `yaml:"url"`         // https, or http to a loopback host
	SecretFile string        `yaml:"secret_file"` // HMAC secret on its first line, mode 0600, at least 16 bytes
	Timeout    time.Duration `yaml:"timeout"`     // one POST; 0: 10s
	// AllowInsecure permits http:// to a host that is not loopback.
	AllowInsecure bool `yaml:"allow_insecure"`
}

// Bounds of alerting.webhooks (the alerting package applies the same).
const (
	maxWebhooks       = 16
	maxWebhookTimeout = 5 * time.Minute
	minWebhookSecret  = 16
)

// validateAlerting checks the webhooks of alerting.webhooks: each URL,
// each secret file (read now, so that a bad one stops the load at its
// line), each timeout. Error texts never repeat a URL's path or query,
// which may hold the receiver's token.
func (d *decoder) validateAlerting() {
	hooks := d.c.Alerting.Webhooks
	if len(hooks) > maxWebhooks {
		d.bad("alerting.webhooks", "at most %d webhooks, got %d", maxWebhooks, len(hooks))
	}
	seen := map[string]int{}
	for i, w := range hooks {
		k := fmt.Sprintf("alerting.webhooks[%d]", i)
		bad := func(key, format string, a ...any) {
			where := d.at("alerting.webhooks")
			for _, try := range []string{k + "." + key, k + ".url", k + ".secret_file"} {
				if p, ok := d.pos[try]; ok {
					where = p.String()
					break
				}
			}
			d.errs = append(d.errs, fmt.Sprintf("%s: %s.%s: %s", where, k, key, fmt.Sprintf(format, a...)))
		}
		if msg := webhookURLProblem(w.URL, w.AllowInsecure); msg != "" {
			bad("url", "%s", msg)
		} else if j, dup := seen[w.URL]; dup {
			bad("url", "the same URL as alerting.webhooks[%d]: every alert would be posted twice", j)
		}
		seen[w.URL] = i
		if w.SecretFile == "" {
			bad("secret_file", "required: every POST is signed with the secret in this file (e.g. openssl rand -hex 32)")
		} else if s, err := ReadSecretFile(w.SecretFile); err != nil {
			bad("secret_file", "%v", err)
		} else if len(s) < minWebhookSecret {
			bad("secret_file", "%s: the secret must be at least %d bytes (e.g. openssl rand -hex 32)", w.SecretFile, minWebhookSecret)
		}
		if w.Timeout < 0 || w.Timeout > maxWebhookTimeout {
			bad("timeout", "%s must be in (0, %s] (0 or absent: 10s)", w.Timeout, maxWebhookTimeout)
		}
	}
}

// webhookURLProblem says what is wrong with a webhook URL ("" when
// nothing): absolute http or https with a host, no user info, no
// fragment, and http only to a loopback host unless insecure.
func webhookURLProblem(s string, insecure bool) string {
	if s == "" {
		return "required: the receiver's URL (https://...)"
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return "white space in the URL"
	}
	u, err := url.Parse(s)
	if err != nil {
		return "not a URL"
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("scheme %q: want https (or http to a loopback host)", u.Scheme)
	case u.Hostname() == "":
		return "no host"
	case u.User != nil:
		return "user info in the URL is refused (it would be logged with the URL)"
	case u.Fragment != "" || strings.Contains(s, "#"):
		return "a fragment is never sent: remove it"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("port %q: want 1 to 65535", p)
		}
	}
	if u.Scheme == "http" && !insecure && !loopbackHost(u.Hostname()) {
		return fmt.Sprintf("http to %s sends alerts in clear: use https, or set allow_insecure: true", u.Hostname())
	}
	return ""
}

// loopbackHost reports whether host is localhost or a loopback address.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
