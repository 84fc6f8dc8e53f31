package app

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/gateway/config"
)

// TestDiff holds the reload's key-by-key diff and its live/restart split
// to a table: each case changes the default config and names the keys it
// must report, and which of them need a restart.
func TestDiff(t *testing.T) {
	f := false
	for _, tc := range []struct {
		name    string
		change  func(c *config.Config)
		keys    []string
		restart []string
	}{
		{"nothing", func(c *config.Config) {}, nil, nil},
		{"listen", func(c *config.Config) { c.Listen = ":9090" }, []string{"listen"}, []string{"listen"}},
		{"admin listen", func(c *config.Config) { c.Admin.Listen = "127.0.0.1:9" }, []string{"admin.listen"}, []string{"admin.listen"}},
		{"data dir", func(c *config.Config) { c.DataDir = "/elsewhere" }, []string{"data_dir"}, []string{"data_dir"}},
		{"path", func(c *config.Config) { c.Path = "/socket" }, []string{"path"}, []string{"path"}},
		{"a topic rule", func(c *config.Config) {
			c.Topics = append(c.Topics, config.Topic{Match: "news", Subscribe: "public"})
		}, []string{"topics"}, nil},
		{"default access", func(c *config.Config) { c.Default = "deny" }, []string{"default"}, nil},
		{"origins", func(c *config.Config) { c.Origins = []string{"https://example.com"} }, []string{"origins"}, nil},
		{"allow missing origin", func(c *config.Config) { c.AllowMissingOrigin = &f }, []string{"allow_missing_origin"}, nil},
		{"trusted proxies and header", func(c *config.Config) {
			c.TrustedProxies = []string{"10.0.0.0/8"}
			c.ClientIPHeader = "X-Real-IP"
		}, []string{"trusted_proxies", "client_ip_header"}, nil},
		{"proxy protocol", func(c *config.Config) { c.ProxyProtocol = true }, []string{"proxy_protocol"}, []string{"proxy_protocol"}},
		{"per-connection limits", func(c *config.Config) {
			c.Limits.MsgRate.Rate = 5
			c.Limits.PingInterval = time.Minute
			c.Limits.MaxFrameBytes = 1000
		}, []string{"limits.max_frame_bytes", "limits.ping_interval", "limits.msg_rate.rate"}, nil},
		{"address-keyed limits", func(c *config.Config) {
			c.Limits.ConnRate.Burst = 1
			c.Limits.PerIPConnections = 2
		}, []string{"limits.per_ip_connections", "limits.conn_rate.burst"},
			[]string{"limits.per_ip_connections", "limits.conn_rate.burst"}},
		{"message size", func(c *config.Config) { c.Limits.MaxMessageBytes = 1 << 16 },
			[]string{"limits.max_message_bytes"}, []string{"limits.max_message_bytes"}},
		{"global cap", func(c *config.Config) { c.Limits.MaxConnections = 10 },
			[]string{"limits.max_connections"}, []string{"limits.max_connections"}},
		{"block lists", func(c *config.Config) {
			c.Bans.Block = []string{"192.0.2.0/24"}
			c.Bans.BlockFiles = []string{"/etc/drop.txt"}
		}, []string{"bans.block", "bans.block_files"}, nil},
		{"ban ladder", func(c *config.Config) { c.Bans.MaxRetry = 2 }, []string{"bans.maxretry"}, []string{"bans.maxretry"}},
		{"token ttl", func(c *config.Config) { c.Tokens.TTL = 2 * time.Minute }, []string{"tokens.ttl"}, nil},
		{"token source", func(c *config.Config) { c.Tokens.Source = "jwt" }, []string{"tokens.source"}, []string{"tokens.source"}},
		{"alerting", func(c *config.Config) {
			c.Alerting.SMTP.Host = "mail.example"
			c.Alerting.SMTP.To = []string{"oncall@example.com"}
			c.Alerting.Rules = []config.AlertRule{{Name: "bans", Event: "ban"}}
		}, []string{"alerting.smtp.host", "alerting.smtp.to", "alerting.rules"}, nil},
		{"audit", func(c *config.Config) { c.Audit.Fsync = "always" }, []string{"audit.fsync"}, []string{"audit.fsync"}},
		{"log level and drain", func(c *config.Config) {
			c.LogLevel = "debug"
			c.Shutdown.Drain = time.Second
		}, []string{"log_level", "shutdown.drain"}, nil},
		{"live and restart together", func(c *config.Config) {
			c.Default = "public"
			c.Listen = ":1"
		}, []string{"listen", "default"}, []string{"listen"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, next := config.Default(), config.Default()
			tc.change(next)
			got := Diff(old, next)
			if !slices.Equal(got, tc.keys) {
				t.Errorf("Diff = %q, want %q", got, tc.keys)
			}
			if r := needsRestart(got); !slices.Equal(r, tc.restart) {
				t.Errorf("needsRestart = %q, want %q", r, tc.restart)
			}
		})
	}
}

// The certificate files are live (re-read on every reload), but turning
// TLS on or off on a listener needs a restart.
func TestTLSKeysLiveUnlessSwitched(t *testing.T) {
	for _, tc := range []struct {
		name    string
		old     func(c *config.Config)
		next    func(c *config.Config)
		restart []string
	}{
		{"renamed files", func(c *config.Config) {
			c.TLS.CertFile, c.TLS.KeyFile = "/a.crt", "/a.key"
			c.Admin.TLS.CertFile, c.Admin.TLS.KeyFile = "/b.crt", "/b.key"
		}, func(c *config.Config) {
			c.TLS.CertFile, c.TLS.KeyFile = "/a2.crt", "/a2.key"
			c.Admin.TLS.CertFile, c.Admin.TLS.KeyFile = "/b2.crt", "/b2.key"
		}, nil},
		{"wss on", func(c *config.Config) {}, func(c *config.Config) { c.TLS.CertFile, c.TLS.KeyFile = "/a.crt", "/a.key" },
			[]string{"tls.cert_file"}},
		{"admin https off", func(c *config.Config) { c.Admin.TLS.CertFile, c.Admin.TLS.KeyFile = "/b.crt", "/b.key" },
			func(c *config.Config) { c.Admin.TLS = config.AdminTLS{} }, []string{"admin.tls.cert_file"}},
		{"min version", func(c *config.Config) {}, func(c *config.Config) { c.TLS.MinVersion = "1.3" },
			[]string{"tls.min_version"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, next := config.Default(), config.Default()
			tc.old(old)
			tc.old(next)
			tc.next(next)
			if got := restartKeys(old, next, Diff(old, next)); !slices.Equal(got, tc.restart) {
				t.Errorf("restartKeys = %q, want %q", got, tc.restart)
			}
		})
	}
}

// Every key of the config is either live or needs a restart, and a key
// below a live section is live: a new key needs a restart until it is
// listed.
func TestLiveKeysExist(t *testing.T) {
	c := config.Default()
	for _, k := range liveKeys {
		if describe(c, k) == "?" {
			t.Errorf("live key %s is no config key", k)
		}
	}
	if !isLive("alerting.smtp.password_file") || isLive("alertingx") || isLive("limits") {
		t.Error("isLive: sections and prefixes mixed up")
	}
}

// A refused reload names the key, with old and new value where they are
// one value.
func TestRestartErrorNamesKeys(t *testing.T) {
	old, next := config.Default(), config.Default()
	next.Listen = "127.0.0.1:9"
	next.Bans.Allow = []string{"10.0.0.0/8"}
	next.Audit.Fsync = "always"
	err := restartError(old, next, needsRestart(Diff(old, next)))
	want := `listen (":8080" to "127.0.0.1:9"), audit.fsync ("1s" to "always") changed, which needs a restart`
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %q\nwant prefix %q", err, want)
	}
}

func TestFirstKey(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{config.Errors{"/etc/p.yaml:3:5: limits.msg_rate.rate: must be a positive number"}, "limits.msg_rate.rate"},
		{config.Errors{"/etc/p.yaml:1:1: the config must be a mapping of keys"}, ""},
		{errors.New("origins: bad origin"), "origins"},
		{errors.New("read config: open /x: no such file or directory"), ""},
	} {
		if got := firstKey(tc.err); got != tc.want {
			t.Errorf("firstKey(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
