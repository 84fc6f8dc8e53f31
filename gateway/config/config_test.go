package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "portcullis.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	c := Default()
	if c.Listen != ":8080" || c.Path != "/ws" || c.Admin.Listen != "127.0.0.1:8081" || c.Default != "token" ||
		c.Limits.PingInterval != 25*time.Second || c.Limits.MaxFrameBytes != 65536 || c.Tokens.TTL != time.Minute {
		t.Fatalf("defaults: %+v", c)
	}
	got, err := Load(write(t, DefaultYAML()))
	if err != nil {
		t.Fatal(err)
	}
	got.keys, got.file = nil, ""
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("Load(DefaultYAML()) differs from Default()")
	}
}

func TestOverlay(t *testing.T) {
	c, err := Load(write(t, "limits:\n  ping_interval: 5s\ntopics:\n  - match: news\n    subscribe: public\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.PingInterval != 5*time.Second || c.Limits.MaxFrameBytes != 65536 || len(c.Topics) != 1 || c.Topics[0].Subscribe != "public" {
		t.Fatalf("%+v", c)
	}
	keys := c.Keys()
	if len(keys) < 2 || keys[0].Key != "limits" || keys[1].Key != "limits.ping_interval" || keys[1].Pos.Line != 2 {
		t.Fatalf("keys %+v", keys)
	}
	if c, err := Load(write(t, "")); err != nil || c.Listen != ":8080" {
		t.Fatalf("empty file: %v", err)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown top-level key", "lisen: x\n", []string{"portcullis.yaml:1:1: lisen: unknown key"}},
		{"unknown nested key", "limits:\n  ping_intervall: 5s\n", []string{":2:3: limits.ping_intervall: unknown key"}},
		{"unknown key in list", "topics:\n  - match: a\n    subscrib: token\n", []string{":3:5: topics[0].subscrib: unknown key"}},
		{"bad duration", "limits:\n  ping_interval: 5 seconds\n", []string{":2:18: limits.ping_interval: \"5 seconds\" is not a duration"}},
		{"wrong type", "limits:\n  max_connections: lots\n", []string{":2:20: limits.max_connections: want an integer"}},
		{"zero is not unlimited", "limits:\n  max_connections: 0\n", []string{":2:3: limits.max_connections: must be positive"}},
		{"bad enum", "topics:\n  - match: a\n    subscribe: maybe\n", []string{"topics[0].subscribe: \"maybe\" must be token, public or deny"}},
		{"bad origin", "origins: [\"https://*.example.com\", \"https://a.example.com/x\"]\n",
			[]string{"origins[0]: \"https://*.example.com\"", "origins[1]: \"https://a.example.com/x\""}},
		{"cross-field", "limits:\n  max_frame_bytes: 2000000\n", []string{":2:3: limits.max_frame_bytes: 2000000 is above limits.max_message_bytes"}},
		{"several at once", "a: 1\nb: 2\n", []string{"1:1: a: unknown key", "2:1: b: unknown key"}},
		{"bad trusted proxy", "trusted_proxies: [\"10.0.0.0/33\"]\n", []string{":1:19: trusted_proxies[0]: \"10.0.0.0/33\" is not a CIDR"}},
		{"bad block CIDR", "bans:\n  block: [\"1.2.3\"]\n", []string{":2:11: bans.block[0]: \"1.2.3\" is not a CIDR"}},
		{"proxy protocol needs trusted proxies", "proxy_protocol: true\n", []string{":1:1: proxy_protocol: needs trusted_proxies"}},
		{"bad header", "client_ip_header: X-Client\n", []string{"client_ip_header: \"X-Client\""}},
		{"rate must be positive", "limits:\n  conn_rate: {rate: 0, burst: 3}\n", []string{"limits.conn_rate.rate: must be a positive number"}},
		{"unknown rate key", "limits:\n  msg_rate: {rate: 1, brust: 3}\n", []string{":2:23: limits.msg_rate.brust: unknown key"}},
		{"ipv6 prefix", "limits:\n  ipv6_prefix: 200\n", []string{":2:3: limits.ipv6_prefix: 200 must be between 32 and 128"}},
		{"ban factor", "bans:\n  factor: 0.5\n", []string{":2:3: bans.factor: 0.5 must be at least 1"}},
		{"ban maxtime below bantime", "bans:\n  bantime: 2h\n  maxtime: 1h\n", []string{":3:3: bans.maxtime: 1h0m0s is below bans.bantime 2h0m0s (at "}},
		{"jwt none", "tokens:\n  source: jwt\n  jwt:\n    algorithms: [none]\n", []string{"tokens.jwt.algorithms[0]: \"none\": supported are HS256 and EdDSA"}},
		{"jwt secret in yaml", "tokens:\n  source: jwt\n  jwt:\n    secret: abc\n", []string{":4:5: tokens.jwt.secret: unknown key"}},
		{"jwt without secret", "tokens:\n  source: jwt\n", []string{"tokens.jwt: HS256 needs exactly one of secret_env or secret_file"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Load(write(t, c.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
