// Package config is the Portcullis configuration file (docs/CONFIG.md): the
// embedded defaults, strict YAML loading with errors that name the file,
// line, column and key, and the checks across keys. `serve` and
// `config check` load configs through exactly this package.
//
// config imports nothing from the project.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole file. Every key this build supports is here; any
// other key is an error.
type Config struct {
	Listen  string   `yaml:"listen"`
	Path    string   `yaml:"path"`
	DataDir string   `yaml:"data_dir"`
	Admin   Admin    `yaml:"admin"`
	Origins []string `yaml:"origins"`
	// AllowMissingOrigin admits upgrade requests without an Origin header
	// (non-browser clients; browsers always send one). Nil: true.
	AllowMissingOrigin *bool `yaml:"allow_missing_origin"`

	TrustedProxies []string `yaml:"trusted_proxies"`  // CIDRs whose forwarding headers are believed
	ClientIPHeader string   `yaml:"client_ip_header"` // X-Forwarded-For, X-Real-IP or CF-Connecting-IP
	ProxyProtocol  bool     `yaml:"proxy_protocol"`   // require a PROXY v1/v2 header from trusted proxies

	// TLS terminates wss:// on the public listener (gateway/tlsfront);
	// an empty cert_file leaves the listener plain.
	TLS TLS `yaml:"tls"`

	Limits   Limits   `yaml:"limits"`
	Tokens   Tokens   `yaml:"tokens"`
	Topics   []Topic  `yaml:"topics"`
	Default  string   `yaml:"default"`
	Bans     Bans     `yaml:"bans"`
	Audit    Audit    `yaml:"audit"`
	Alerting Alerting `yaml:"alerting"`
	// Cluster joins other nodes through Redis; zero (no `cluster:`
	// block, the default): this node alone.
	Cluster Cluster `yaml:"cluster"`

	// LogLevel is the operational log's level: debug, info, warn or error
	// (serve --log-level overrides it).
	LogLevel string   `yaml:"log_level"`
	Shutdown Shutdown `yaml:"shutdown"`
	// IOURing lets the event loops batch their sends in one io_uring_enter
	// where the kernel allows it; false: one write(2) or writev(2) each.
	IOURing bool `yaml:"io_uring"`

	keys []KeyPos
	file string // the file the config was read from
}

// Admin is the admin HTTP listener.
type Admin struct {
	Listen  string   `yaml:"listen"`
	KeyFile string   `yaml:"key_file"`
	TLS     AdminTLS `yaml:"tls"` // required when Listen is not a loopback address
	// MetricsPublic lets GET /metrics answer every peer without the key;
	// false: only loopback peers need none.
	MetricsPublic bool `yaml:"metrics_public"`
}

// AdminTLS is the admin API's certificate and private key (PEM files); both
// empty: plain HTTP, allowed on loopback only.
type AdminTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Limits are the connection limits; every one is positive.
type Limits struct {
	MaxConnections          int           `yaml:"max_connections"`            // open connections in all
	MaxFrameBytes           int           `yaml:"max_frame_bytes"`            // bytes per frame
	MaxMessageBytes         int           `yaml:"max_message_bytes"`          // bytes per reassembled message
	HandshakeTimeout        time.Duration `yaml:"handshake_timeout"`          // to send the upgrade request
	PingInterval            time.Duration `yaml:"ping_interval"`              // between server pings
	WriteQueueBytes         int           `yaml:"write_queue_bytes"`          // queued for one client
	WriteStallTimeout       time.Duration `yaml:"write_stall_timeout"`        // without write progress
	MaxSubscriptionsPerConn int           `yaml:"max_subscriptions_per_conn"` // topics per connection
	MessageTimeout          time.Duration `yaml:"message_timeout"`            // a started message must complete within it
	// InboundBufferPerIP and InboundBufferTotal cap the inbound bytes held
	// for unfinished messages, WAMP v1 prefix tables and stored topic
	// strings: per counted address and in all.
	InboundBufferPerIP int `yaml:"inbound_buffer_per_ip"`
	InboundBufferTotal int `yaml:"inbound_buffer_total"`

	PerIPConnections  int  `yaml:"per_ip_connections"`  // open connections per counted address
	ConnRate          Rate `yaml:"conn_rate"`           // connection attempts per counted address
	HandshakeFailRate Rate `yaml:"handshake_fail_rate"` // failed handshakes per counted address
	MsgRate           Rate `yaml:"msg_rate"`            // messages (and pings) per connection
	BytesRate         Rate `yaml:"bytes_rate"`          // inbound bytes per second per counted address
	IPv6Prefix        int  `yaml:"ipv6_prefix"`         // bits of an IPv6 address that count as one client
}

// Shutdown configures the stop on SIGTERM or SIGINT.
type Shutdown struct {
	// Drain is the window over which live clients are closed with 1001
	// (spread evenly, so they do not all reconnect elsewhere at once); 0
	// closes them all at once.
	Drain time.Duration `yaml:"drain"`
}

// TLS is the certificate of the public listener. CertFile and KeyFile are
// PEM files, both set or both empty; the certificate (with its chain) and
// its private key are re-read on every reload.
type TLS struct {
	CertFile   string `yaml:"cert_file"`   // PEM certificate chain, leaf first; empty: TLS off
	KeyFile    string `yaml:"key_file"`    // PEM private key of the leaf (0600)
	MinVersion string `yaml:"min_version"` // lowest TLS version accepted: "1.2" or "1.3"
}

// Rate is a token bucket with nginx limit_req semantics: Rate events per
// second on average, Burst more at once without delay.
type Rate struct {
	Rate  float64 `yaml:"rate"`  // events per second
	Burst int     `yaml:"burst"` // events above the rate allowed at once
}

// Bans configure the blocklist and fail2ban-style automatic bans.
type Bans struct {
	FindTime   time.Duration `yaml:"findtime"`    // window in which strikes count
	MaxRetry   int           `yaml:"maxretry"`    // strikes within findtime that ban
	BanTime    time.Duration `yaml:"bantime"`     // first ban's length
	Factor     float64       `yaml:"factor"`      // each repeat ban lasts this much longer
	MaxTime    time.Duration `yaml:"maxtime"`     // longest ban
	Allow      []string      `yaml:"allow"`       // CIDRs never counted, limited or banned
	Block      []string      `yaml:"block"`       // CIDRs always refused at accept
	BlockFiles []string      `yaml:"block_files"` // files of CIDRs, one per line, # comments
	DryRun     bool          `yaml:"dry_run"`     // count and audit, do not enforce
	// KernelDropRate is how many refusals per second of one banned prefix
	// move its enforcement into the kernel (a socket filter drops its
	// SYNs); 0: never.
	KernelDropRate int `yaml:"kernel_drop_rate"`
}

// Tokens configure the token source.
type Tokens struct {
	Source     string        `yaml:"source"`      // store | jwt | sql
	TTL        time.Duration `yaml:"ttl"`         // default lifetime
	MaxTTL     time.Duration `yaml:"max_ttl"`     // longest lifetime a caller may ask for
	MaxEntries int           `yaml:"max_entries"` // live tokens (or redeemed jtis) held at most
	JWT        JWT           `yaml:"jwt"`
	SQL        TokensSQL     `yaml:"sql"` // tokens.source: sql (tokens_sql.go)
}

// JWT configures the jwt token source. Secrets never live in the YAML.
type JWT struct {
	Algorithms    []string `yaml:"algorithms"`      // HS256 and/or EdDSA
	SecretEnv     string   `yaml:"secret_env"`      // environment variable holding the HS256 secret
	SecretFile    string   `yaml:"secret_file"`     // file holding the HS256 secret (0600)
	PublicKeyFile string   `yaml:"public_key_file"` // PEM Ed25519 public key for EdDSA
	Audience      string   `yaml:"audience"`        // required "aud" when set
	Issuer        string   `yaml:"issuer"`          // required "iss" when set
}

// Topic is one topic rule (docs/CONFIG.md).
type Topic struct {
	Match        string `yaml:"match"`
	Subscribe    string `yaml:"subscribe"`
	Publish      string `yaml:"publish"`
	SlowConsumer string `yaml:"slow_consumer"` // disconnect | drop_oldest | keep_latest
	DataSchema   string `yaml:"data_schema"`   // JSON Schema file for client-published data
	Feed         Feed   `yaml:"feed"`          // poll a URL while the topic has subscribers
}

// Feed polls URL every Every while a topic has subscribers and publishes
// each response to it. An empty URL means no feed.
type Feed struct {
	URL   string        `yaml:"url"`
	Every time.Duration `yaml:"every"`
}

// Audit configures the audit trail.
type Audit struct {
	Dir           string        `yaml:"dir"`            // default <data_dir>/audit
	Fsync         string        `yaml:"fsync"`          // interval such as 1s, or always
	RotateBytes   int64         `yaml:"rotate_bytes"`   // rotate the active file at this size (and daily)
	Retain        time.Duration `yaml:"retain"`         // delete rotated files older than this
	RetainBytes   int64         `yaml:"retain_bytes"`   // delete the oldest rotated files beyond this total
	OnFailure     string        `yaml:"on_failure"`     // fail_open | fail_closed
	CheckpointDir string        `yaml:"checkpoint_dir"` // copy of the signed checkpoints (another host)
}

// Alerting configures the on-call alerts (docs/ALERTS.md): mail, webhooks
// or both.
type Alerting struct {
	SMTP SMTP `yaml:"smtp"`
	// Webhooks each receive every alert as Alertmanager webhook JSON,
	// HMAC-signed (alerting.go checks them).
	Webhooks       []Webhook     `yaml:"webhooks"`
	GroupWait      time.Duration `yaml:"group_wait"`      // wait before a new group's first mail
	GroupInterval  time.Duration `yaml:"group_interval"`  // least time between mails of one group
	RepeatInterval time.Duration `yaml:"repeat_interval"` // re-send a still-firing group after this
	MaxPerHour     int           `yaml:"max_per_hour"`    // mails per hour at most, then one digest
	Rules          []AlertRule   `yaml:"rules"`           // empty: the default rules (docs/ALERTS.md)
}

// SMTP is the mail server alerts go through. The password never lives in
// the YAML: password_env or password_file.
type SMTP struct {
	Host         string        `yaml:"host"` // empty: alerting off
	Port         int           `yaml:"port"`
	Username     string        `yaml:"username"`
	PasswordEnv  string        `yaml:"password_env"`
	PasswordFile string        `yaml:"password_file"`
	From         string        `yaml:"from"`
	To           []string      `yaml:"to"`
	TLS          string        `yaml:"tls"` // starttls | tls | none (none only without auth)
	Timeout      time.Duration `yaml:"timeout"`
}

// AlertRule is one alert rule over audit events.
type AlertRule struct {
	Name        string            `yaml:"name"`
	Event       string            `yaml:"event"`
	Reason      string            `yaml:"reason"`
	Stage       string            `yaml:"stage"`
	MinSeverity string            `yaml:"min_severity"`
	Match       map[string]string `yaml:"match"`
	Threshold   int               `yaml:"threshold"`
	Window      time.Duration     `yaml:"window"`
	CountBy     []string          `yaml:"count_by"`
	GroupBy     []string          `yaml:"group_by"`
	Severity    string            `yaml:"severity"`
	Summary     string            `yaml:"summary"`
	Inhibits    []string          `yaml:"inhibits"`
}

// Pos is a place in a config file.
type Pos struct {
	File      string
	Line, Col int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col) }

// KeyPos is a key present in the file and where.
type KeyPos struct {
	Key string // dotted path, e.g. limits.ping_interval, topics[1].match
	Pos Pos
}

// Keys returns the keys the file set, in file order.
func (c *Config) Keys() []KeyPos { return c.keys }

//go:embed default.yaml
var defaultYAML string

// DefaultYAML is the complete default config with every key commented.
func DefaultYAML() string { return defaultYAML }

// Default returns the embedded defaults (docs/CONFIG.md).
func Default() *Config {
	c := &Config{}
	if err := parse("(defaults)", []byte(defaultYAML), c); err != nil {
		panic("embedded default config is broken: " + err.Error())
	}
	c.keys, c.file = nil, ""
	return c
}

// Errors is every problem found in a file.
type Errors []string

func (e Errors) Error() string { return strings.Join(e, "\n") }

// Load reads path over the defaults: keys absent from the file keep their
// default. Unknown keys, wrong types and bad values are all reported at
// once, each as FILE:LINE:COL: KEY: message.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c := Default()
	if err := parse(path, b, c); err != nil {
		return nil, err
	}
	return c, nil
}

func parse(file string, b []byte, c *Config) error {
	doc, err := syntax(file, b)
	if err != nil {
		return err
	}
	d := decoder{file: file, c: c}
	c.file = file
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		d.duplicates(root, "")
		if root.Kind != yaml.MappingNode {
			if !(root.Kind == yaml.ScalarNode && root.Tag == "!!null") {
				d.errf(root, "", "the config must be a mapping of keys")
			}
		} else {
			d.mapping(root, reflect.ValueOf(c).Elem(), "")
		}
	}
	d.validate()
	if len(d.errs) > 0 {
		return d.errs
	}
	return nil
}

type decoder struct {
	file string
	c    *Config
	errs Errors
	pos  map[string]Pos
	// dup holds the mappings with a key set twice (reported already).
	dup map[*yaml.Node]bool
}

func (d *decoder) errf(n *yaml.Node, key, format string, a ...any) {
	p := Pos{d.file, n.Line, n.Column}
	msg := fmt.Sprintf(format, a...)
	if key != "" {
		d.errs = append(d.errs, fmt.Sprintf("%s: %s: %s", p, key, msg))
	} else {
		d.errs = append(d.errs, fmt.Sprintf("%s: %s", p, msg))
	}
}

var durationType = reflect.TypeOf(time.Duration(0))

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, prefix string) {
	t := v.Type()
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := prefix + k.Value
		fi := -1
		for j := 0; j < t.NumField(); j++ {
			if tag := t.Field(j).Tag.Get("yaml"); tag == k.Value {
				fi = j
				break
			}
		}
		if fi < 0 {
			d.errf(k, key, "unknown key")
			continue
		}
		d.c.keys = append(d.c.keys, KeyPos{Key: key, Pos: Pos{d.file, k.Line, k.Column}})
		if d.pos == nil {
			d.pos = make(map[string]Pos)
		}
		d.pos[key] = Pos{d.file, k.Line, k.Column}
		d.value(val, v.Field(fi), key)
	}
}

func (d *decoder) value(n *yaml.Node, f reflect.Value, key string) {
	switch {
	case f.Type() == durationType:
		if n.Kind != yaml.ScalarNode {
			d.errf(n, key, "want a duration such as \"10s\"")
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.errf(n, key, "%q is not a duration (Go syntax: 90s, 10m, 168h)", n.Value)
			return
		}
		f.SetInt(int64(dur))
	case f.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.errf(n, key, "want a mapping")
			return
		}
		d.mapping(n, f, key+".")
	case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct:
		if n.Kind != yaml.SequenceNode {
			d.errf(n, key, "want a list")
			return
		}
		s := reflect.MakeSlice(f.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			ik := fmt.Sprintf("%s[%d]", key, i)
			if item.Kind != yaml.MappingNode {
				d.errf(item, ik, "want a mapping")
				continue
			}
			d.mapping(item, s.Index(i), ik+".")
		}
		f.Set(s)
	default:
		if n.Kind == yaml.SequenceNode {
			// Remember where each element is, so that value checks can
			// name the line of a bad CIDR in a long list.
			for i, item := range n.Content {
				d.pos[fmt.Sprintf("%s[%d]", key, i)] = Pos{d.file, item.Line, item.Column}
			}
		}
		p := reflect.New(f.Type())
		if err := n.Decode(p.Interface()); err != nil {
			if d.dup[n] {
				return // the duplicate key is the error, reported already
			}
			d.errf(n, key, "want %s: %s", kindName(f.Type()), strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n  "))
			return
		}
		f.Set(p.Elem())
	}
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int:
		return "an integer"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "a list of " + strings.TrimPrefix(kindName(t.Elem()), "a ")
	}
	return t.String()
}

// at returns the position of key in the file, or a position naming the
// defaults when the file did not set it.
func (d *decoder) at(key string) string {
	if p, ok := d.pos[key]; ok {
		return p.String()
	}
	return d.file + " (default)"
}

func (d *decoder) bad(key, format string, a ...any) {
	d.errs = append(d.errs, fmt.Sprintf("%s: %s: %s", d.at(key), key, fmt.Sprintf(format, a...)))
}

// validate checks values and the relations between keys.
func (d *decoder) validate() {
	c := d.c
	if !strings.HasPrefix(c.Path, "/") {
		d.bad("path", "%q must start with /", c.Path)
	}
	d.validateListeners()
	if c.DataDir == "" {
		d.bad("data_dir", "must not be empty")
	}
	for i, o := range c.Origins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" ||
			u.RawQuery != "" || u.User != nil || strings.Contains(o, "*") {
			d.bad(fmt.Sprintf("origins[%d]", i), "%q must be exactly scheme://host[:port] (http or https, no path, no wildcard)", o)
		}
	}
	pos := func(key string, v int) {
		if v <= 0 {
			d.bad(key, "must be positive (zero is not \"unlimited\")")
		}
	}
	posd := func(key string, v time.Duration) {
		if v <= 0 {
			d.bad(key, "must be a positive duration")
		}
	}
	l := c.Limits
	pos("limits.max_connections", l.MaxConnections)
	pos("limits.max_frame_bytes", l.MaxFrameBytes)
	pos("limits.max_message_bytes", l.MaxMessageBytes)
	pos("limits.write_queue_bytes", l.WriteQueueBytes)
	pos("limits.max_subscriptions_per_conn", l.MaxSubscriptionsPerConn)
	posd("limits.handshake_timeout", l.HandshakeTimeout)
	posd("limits.ping_interval", l.PingInterval)
	posd("limits.write_stall_timeout", l.WriteStallTimeout)
	if l.MaxMessageBytes > 1<<30 {
		d.bad("limits.max_message_bytes", "%d is above 1 GiB", l.MaxMessageBytes)
	}
	if l.MaxFrameBytes > l.MaxMessageBytes {
		d.bad("limits.max_frame_bytes", "%d is above limits.max_message_bytes %d (at %s)", l.MaxFrameBytes, l.MaxMessageBytes, d.at("limits.max_message_bytes"))
	}
	d.validateAudit()
	d.validateTokens()
	d.validateLimits()
	d.validateBans()
	d.validateLifecycle()
	d.validateTLS()
	d.validateCluster()
	d.validateAlerting()
	posd("tokens.ttl", c.Tokens.TTL)
	posd("tokens.max_ttl", c.Tokens.MaxTTL)
	pos("tokens.max_entries", c.Tokens.MaxEntries)
	if c.Tokens.MaxTTL < c.Tokens.TTL {
		d.bad("tokens.max_ttl", "%s is below tokens.ttl %s (at %s)", c.Tokens.MaxTTL, c.Tokens.TTL, d.at("tokens.ttl"))
	}
	switch c.Default {
	case "token", "public", "deny":
	default:
		d.bad("default", "%q must be token, public or deny", c.Default)
	}
	for i, t := range c.Topics {
		k := fmt.Sprintf("topics[%d]", i)
		if t.Match == "" {
			d.bad(k+".match", "is required")
		}
		switch t.Subscribe {
		case "", "token", "public", "deny":
		default:
			d.bad(k+".subscribe", "%q must be token, public or deny", t.Subscribe)
		}
		switch t.Publish {
		case "", "token", "deny":
		default:
			d.bad(k+".publish", "%q must be token or deny", t.Publish)
		}
		switch t.SlowConsumer {
		case "", "disconnect", "drop_oldest", "keep_latest":
		default:
			d.bad(k+".slow_consumer", "%q must be disconnect, drop_oldest or keep_latest", t.SlowConsumer)
		}
		if t.DataSchema != "" && t.Publish != "token" {
			d.bad(k+".data_schema", "is set, but clients may not publish to this rule (publish is not token)")
		}
	}
}

// ErrNotFound is returned for a missing file.
var ErrNotFound = errors.New("config file not found")
