package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWebhooksLoaded: a webhook's keys are read; alerting.webhooks is
// empty by default.
func TestWebhooksLoaded(t *testing.T) {
	if len(Default().Alerting.Webhooks) != 0 {
		t.Fatal("the defaults list a webhook")
	}
	key := filepath.Join(t.TempDir(), "hook.key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(write(t, "alerting:\n  webhooks:\n    - url: https://hooks.example.com/p\n      secret_file: "+key+
		"\n      timeout: 3s\n    - url: http://10.1.2.3:8080/x\n      secret_file: "+key+"\n      allow_insecure: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	w := c.Alerting.Webhooks
	if len(w) != 2 || w[0].URL != "https://hooks.example.com/p" || w[0].SecretFile != key || w[0].Timeout != 3*time.Second ||
		!w[1].AllowInsecure || w[1].Timeout != 0 {
		t.Fatalf("webhooks %+v", w)
	}
}

// TestWebhookErrors: every bad webhook key is named with its position,
// and no error repeats the URL's path or query.
func TestWebhookErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.key")
	if err := os.WriteFile(good, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open.key")
	if err := os.WriteFile(open, []byte("0123456789abcdef0123456789abcdef\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hook := func(lines ...string) string {
		return "alerting:\n  webhooks:\n    - " + strings.Join(lines, "\n      ") + "\n"
	}
	cases := []struct{ yaml, want string }{
		{hook("url: http://hooks.example.com/T0SECRET?k=Q0SECRET", "secret_file: "+good),
			":3:7: alerting.webhooks[0].url: http to hooks.example.com sends alerts in clear: use https, or set allow_insecure: true"},
		{hook("url: ftp://hooks.example.com/", "secret_file: "+good), ":3:7: alerting.webhooks[0].url: scheme \"ftp\""},
		{hook("url: https://u:T0SECRET@hooks.example.com/", "secret_file: "+good), ":3:7: alerting.webhooks[0].url: user info"},
		{hook("url: https://hooks.example.com/#frag", "secret_file: "+good), ":3:7: alerting.webhooks[0].url: a fragment"},
		{hook("secret_file: " + good), ":3:7: alerting.webhooks[0].url: required"},
		{hook("url: https://hooks.example.com/"), ":3:7: alerting.webhooks[0].secret_file: required"},
		{hook("url: https://hooks.example.com/", "secret_file: "+open), ":4:7: alerting.webhooks[0].secret_file: " + open + " is readable by group or others"},
		{hook("url: https://hooks.example.com/", "secret_file: "+short), ":4:7: alerting.webhooks[0].secret_file: " + short + ": the secret must be at least 16 bytes"},
		{hook("url: https://hooks.example.com/", "secret_file: "+filepath.Join(dir, "none")), ":4:7: alerting.webhooks[0].secret_file: stat "},
		{hook("url: https://hooks.example.com/", "secret_file: "+good, "timeout: 1h"), ":5:7: alerting.webhooks[0].timeout: 1h0m0s must be in (0, 5m0s]"},
		{hook("url: https://hooks.example.com/", "secret_file: "+good, "timeout: -1s"), ":5:7: alerting.webhooks[0].timeout: -1s must be in"},
		{hook("url: https://hooks.example.com/", "secret_file: "+good, "secret: x"), ":5:7: alerting.webhooks[0].secret: unknown key"},
		{"alerting:\n  webhooks:\n    - url: https://a.example/\n      secret_file: " + good + "\n    - url: https://a.example/\n      secret_file: " + good + "\n",
			":5:7: alerting.webhooks[1].url: the same URL as alerting.webhooks[0]"},
		{"alerting:\n  webhooks: https://a.example/\n", ":2:13: alerting.webhooks: want a list"},
	}
	for _, tc := range cases {
		p := write(t, tc.yaml)
		_, err := Load(p)
		if err == nil {
			t.Errorf("%q: loaded", tc.yaml)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("%q:\n got %v\nwant %s (in %s)", tc.yaml, err, tc.want, p)
		}
	}
}
