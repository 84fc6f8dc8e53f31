package alerting

import (
	"crypto/tls"
	"errors"
	"fmt"
	netmail "net/mail"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Defaults of docs/CONFIG.md (`alerting:`). A zero Config field means its default,
// never "off" or "unlimited".
const (
	DefaultGroupWait      = 30 * time.Second
	DefaultGroupInterval  = 5 * time.Minute
	DefaultRepeatInterval = 4 * time.Hour
	DefaultMaxPerHour     = 20 // emails (digest included) in any sliding hour
	DefaultSMTPPort       = 587
	DefaultSMTPTimeout    = 10 * time.Second // one whole SMTP attempt, greeting included
	DefaultRetryBase      = 10 * time.Second // first retry delay; doubles per attempt
	DefaultRetryMax       = 10 * time.Minute // cap on one retry delay
	DefaultExpire         = 24 * time.Hour   // an undelivered mail is given up after this
)

// Limits that bound memory and keep config sane.
const (
	MaxRules      = 100     // rules in one config
	MaxThreshold  = 1000000 // events per window
	MaxWindow     = 24 * time.Hour
	MaxCountKeys  = 10000 // distinct count_by keys tracked per rule; beyond, new keys are not counted
	MaxGroups     = 1000  // live notification groups; beyond, new groups are dropped and counted
	MaxPerHourCap = 1000
)

// TLSMode is how the SMTP connection is protected.
type TLSMode uint8

// TLS modes. The zero value is StartTLS.
const (
	StartTLS    TLSMode = iota // plain connect, STARTTLS mandatory before AUTH or MAIL
	ImplicitTLS                // TLS from the first byte (port 465)
	NoTLS                      // clear text; refused when credentials are set
)

var tlsModeNames = [...]string{"starttls", "tls", "none"}

// String returns the config spelling of m.
func (m TLSMode) String() string {
	if int(m) < len(tlsModeNames) {
		return tlsModeNames[m]
	}
	return "unknown"
}

// ParseTLSMode parses "starttls", "tls" or "none".
func ParseTLSMode(s string) (TLSMode, error) {
	for i, n := range tlsModeNames {
		if n == s {
			return TLSMode(i), nil
		}
	}
	return 0, fmt.Errorf("TLS mode %q: want starttls, tls or none", s)
}

// SMTPConfig is `alerting.smtp`. There is deliberately no password field:
// the password comes from the environment variable PasswordEnv or the file
// PasswordFile, never from YAML.
type SMTPConfig struct {
	Host         string
	Port         int // default DefaultSMTPPort
	Username     string
	PasswordEnv  string // name of an environment variable holding the password
	PasswordFile string // path of a file holding the password (trailing newline ignored)
	From         string // one RFC 5322 address, parsed with net/mail
	To           []string
	TLS          TLSMode
	Timeout      time.Duration // bound on one whole attempt (dial, greeting, dialogue); default DefaultSMTPTimeout
	LocalName    string        // EHLO name; default "localhost"

	// TLSConfig, when set, is cloned as the base of the client TLS config
	// (tests use it for RootCAs). ServerName is always Host, and MinVersion
	// is raised to TLS 1.2.
	TLSConfig *tls.Config
}

// Enabled reports whether mail can be sent at all: a host and recipients.
func (c SMTPConfig) Enabled() bool { return c.Host != "" && len(c.To) > 0 }

// Password reads the password from PasswordEnv or PasswordFile ("" when
// neither is set). getenv nil means os.Getenv.
func (c SMTPConfig) Password(getenv func(string) string) (string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	switch {
	case c.PasswordEnv != "":
		p := getenv(c.PasswordEnv)
		if p == "" {
			return "", fmt.Errorf("alerting: smtp.password_env: variable %q is empty or unset", c.PasswordEnv)
		}
		return p, nil
	case c.PasswordFile != "":
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("alerting: smtp.password_file: %w", err)
		}
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return "", fmt.Errorf("alerting: smtp.password_file %q is empty", c.PasswordFile)
		}
		return p, nil
	}
	return "", nil
}

// Rule is one entry of `alerting.rules`. An event matches when every set
// filter matches; a rule with Threshold 0 alerts on every matching event,
// otherwise when more than Threshold matching events (weighted by
// audit.Event.Count for folded summaries) fall within Window for one
// CountBy key.
type Rule struct {
	Name   string        // unique; the alertname label
	Event  audit.Kind    // exact event kind; zero: any
	Reason reason.Reason // exact reason; reason.None: any
	Stage  audit.Stage   // exact stage; "" any
	// ExceptEvents are event kinds never matched (other rules cover them).
	ExceptEvents []audit.Kind
	MinSeverity  audit.Severity // events below are ignored
	// Match requires field equality, on the fields of FieldNames.
	Match map[string]string

	Threshold int           // events per Window; 0: every match alerts
	Window    time.Duration // sliding window of Threshold; required with it
	// CountBy are the fields the window is counted per (e.g. ip_prefix24:
	// "more than 10 a minute from one /24"). Empty: GroupBy.
	CountBy []string
	// GroupBy are the fields whose values split notifications into groups
	// (Alertmanager's group_by). Empty: one group for the rule.
	GroupBy []string

	Severity audit.Severity // of the alert (the Subject says it)
	Summary  string         // Subject text; default derived from the rule
	// Inhibits names rules whose notifications are muted while a group of
	// this rule fires (e.g. an attack-rate rule muting per-address bans).
	Inhibits []string
}

// Config is `alerting:`. A zero field means its default; Rules empty means
// DefaultRules().
type Config struct {
	SMTP SMTPConfig
	// Webhooks each receive every notification the mail gets, as
	// Alertmanager webhook JSON, through the same outbox.
	Webhooks       []WebhookConfig
	GroupWait      time.Duration
	GroupInterval  time.Duration
	RepeatInterval time.Duration
	MaxPerHour     int
	Rules          []Rule

	// Outbox retry policy (not in YAML; defaults fit docs/ALERTS.md).
	RetryBase time.Duration
	RetryMax  time.Duration
	Expire    time.Duration
}

// Enabled reports whether notifications have anywhere to go: mail
// (smtp.host and smtp.to) or at least one webhook.
func (c Config) Enabled() bool { return c.SMTP.Enabled() || len(c.Webhooks) > 0 }

// Names of the default rules, usable in silences and Inhibits.
const (
	RuleBan           = "ban"
	RuleTokenReplayed = "token_replayed"
	RuleTokenTheft    = "token_theft_suspected"
	RuleAuthRate      = "auth_failure_rate"
	RuleAuthRate24    = "auth_failure_rate_prefix"
	RuleConnFlood     = "conn_flood"
	RuleConnFlood24   = "conn_flood_prefix"
	RuleAuditDropped  = "audit_dropped"
	RuleJTITableFull  = "jti_table_full"
	RuleSystem        = "gateway_trouble"
	// RuleTokenSourceDown: the database of tokens.source sql fails:
	// every token is refused until it answers (one mail per episode).
	RuleTokenSourceDown = "token_source_down"
	// RuleUntrustedForwarding: one peer outside trusted_proxies kept
	// sending forwarding headers (audited once per peer per hour) for
	// three hours: most likely a proxy missing from trusted_proxies, whose
	// clients are all counted, limited and banned as the proxy.
	RuleUntrustedForwarding = "untrusted_forwarding"
)

// DefaultRules returns the rules of docs/ALERTS.md, a fresh slice the caller may
// change.
func DefaultRules() []Rule {
	attack := []string{RuleBan}
	return []Rule{
		{Name: RuleBan, Event: audit.KindBan, Severity: audit.Critical, Summary: "addresses banned"},
		{Name: RuleTokenReplayed, Event: audit.KindAuthFailed, Reason: reason.TokenReplayed, Severity: audit.Warning,
			Summary: "one-use tokens replayed"},
		// A spent token from another address than the one that redeemed
		// it: a stolen token, mailed at once (the thief's address is also
		// banned, which the ban rule reports separately).
		{Name: RuleTokenTheft, Event: audit.KindAuthFailed, Reason: reason.TokenTheft, Severity: audit.Critical,
			Summary: "stolen tokens presented from another address"},
		{Name: RuleAuthRate, Event: audit.KindAuthFailed, Threshold: 50, Window: time.Minute, Severity: audit.Critical,
			Summary: "auth failures above 50/min", Inhibits: attack},
		{Name: RuleAuthRate24, Event: audit.KindAuthFailed, Threshold: 10, Window: time.Minute, CountBy: []string{"ip_prefix24"},
			Severity: audit.Critical, Summary: "auth failures above 10/min from one /24", Inhibits: attack},
		{Name: RuleConnFlood, Event: audit.KindConnRejected, Threshold: 1000, Window: time.Minute, Severity: audit.Critical,
			Summary: "connection flood: over 1000 refusals/min", Inhibits: attack},
		{Name: RuleConnFlood24, Event: audit.KindConnRejected, Threshold: 300, Window: time.Minute, CountBy: []string{"ip_prefix24"},
			Severity: audit.Critical, Summary: "connection flood from one /24", Inhibits: attack},
		{Name: RuleAuditDropped, Event: audit.KindAuditDropped, Severity: audit.Critical, Summary: "audit events lost"},
		{Name: RuleJTITableFull, Event: audit.KindJTITableFull, Severity: audit.Critical,
			Summary: "used-jti table full: valid JWTs refused"},
		{Name: RuleTokenSourceDown, Event: audit.KindTokenSourceDown, Severity: audit.Critical,
			Summary: "token database unavailable: tokens refused"},
		{Name: RuleUntrustedForwarding, Event: audit.KindUntrustedForwarding, Threshold: 2, Window: 3 * time.Hour,
			CountBy: []string{"peer_ip"}, Severity: audit.Warning,
			Summary: "a peer outside trusted_proxies keeps sending forwarding headers"},
		{Name: RuleSystem, Stage: audit.StageSystem, MinSeverity: audit.Critical,
			ExceptEvents: []audit.Kind{audit.KindBan, audit.KindAuditDropped, audit.KindJTITableFull, audit.KindTokenSourceDown}, Severity: audit.Critical, Summary: "gateway in trouble"},
	}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.GroupWait == 0 {
		c.GroupWait = DefaultGroupWait
	}
	if c.GroupInterval == 0 {
		c.GroupInterval = DefaultGroupInterval
	}
	if c.RepeatInterval == 0 {
		c.RepeatInterval = DefaultRepeatInterval
	}
	if c.MaxPerHour == 0 {
		c.MaxPerHour = DefaultMaxPerHour
	}
	if c.RetryBase == 0 {
		c.RetryBase = DefaultRetryBase
	}
	if c.RetryMax == 0 {
		c.RetryMax = DefaultRetryMax
	}
	if c.Expire == 0 {
		c.Expire = DefaultExpire
	}
	if c.SMTP.Port == 0 {
		c.SMTP.Port = DefaultSMTPPort
	}
	if c.SMTP.Timeout == 0 {
		c.SMTP.Timeout = DefaultSMTPTimeout
	}
	if c.SMTP.LocalName == "" {
		c.SMTP.LocalName = "localhost"
	}
	if len(c.Rules) == 0 {
		c.Rules = DefaultRules()
	}
	return c
}

var ruleName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// Validate reports every bad field at once, keyed by its YAML path.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, f string, a ...any) {
		errs = append(errs, fmt.Errorf("alerting.%s: %s", key, fmt.Sprintf(f, a...)))
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"group_wait", c.GroupWait}, {"group_interval", c.GroupInterval}, {"repeat_interval", c.RepeatInterval},
		{"smtp.timeout", c.SMTP.Timeout}} {
		if d.v < 0 {
			bad(d.key, "must not be negative, got %s", d.v)
		}
	}
	if c.MaxPerHour < 0 || c.MaxPerHour > MaxPerHourCap {
		bad("max_per_hour", "must be 1..%d (0: default %d), got %d", MaxPerHourCap, DefaultMaxPerHour, c.MaxPerHour)
	}
	full := c.withDefaults()
	if full.GroupInterval < full.GroupWait {
		bad("group_interval", "(%s) cannot be below group_wait (%s)", full.GroupInterval, full.GroupWait)
	}
	if full.RepeatInterval < full.GroupInterval {
		bad("repeat_interval", "(%s) cannot be below group_interval (%s)", full.RepeatInterval, full.GroupInterval)
	}
	errs = append(errs, c.SMTP.validate()...)
	if len(c.Webhooks) > MaxWebhooks {
		bad("webhooks", "at most %d webhooks, got %d", MaxWebhooks, len(c.Webhooks))
	}
	urls := map[string]int{}
	for i, w := range c.Webhooks {
		errs = append(errs, w.validate(i)...)
		if j, dup := urls[w.URL]; dup && w.URL != "" {
			bad(fmt.Sprintf("webhooks[%d].url", i), "the same URL as webhooks[%d]: every notification would be posted twice", j)
		}
		urls[w.URL] = i
	}
	if len(c.Rules) > MaxRules {
		bad("rules", "at most %d rules, got %d", MaxRules, len(c.Rules))
	}
	names := map[string]bool{}
	for _, r := range full.Rules {
		names[r.Name] = true
	}
	seen := map[string]bool{}
	for i, r := range c.Rules {
		key := fmt.Sprintf("rules[%d]", i)
		if !ruleName.MatchString(r.Name) {
			bad(key+".name", "%q: want [a-z0-9_.-], 1..64 characters", r.Name)
		}
		if seen[r.Name] {
			bad(key+".name", "%q used twice", r.Name)
		}
		seen[r.Name] = true
		if r.Event == 0 && r.Reason == reason.None && r.Stage == "" && r.MinSeverity == audit.Info && len(r.Match) == 0 {
			bad(key, "matches every event: set event, reason, stage, severity or match")
		}
		if r.Threshold < 0 || r.Threshold > MaxThreshold {
			bad(key+".threshold", "must be 0..%d, got %d", MaxThreshold, r.Threshold)
		}
		if r.Threshold > 0 && (r.Window <= 0 || r.Window > MaxWindow) {
			bad(key+".window", "must be in (0, %s] with a threshold, got %s", MaxWindow, r.Window)
		}
		if r.Threshold == 0 && len(r.CountBy) > 0 {
			bad(key+".count_by", "needs a threshold")
		}
		for _, f := range r.CountBy {
			if !knownField(f) {
				bad(key+".count_by", "unknown field %q (want one of %s)", f, strings.Join(FieldNames, ", "))
			}
		}
		for _, f := range r.GroupBy {
			if !knownField(f) {
				bad(key+".group_by", "unknown field %q (want one of %s)", f, strings.Join(FieldNames, ", "))
			}
		}
		for f, v := range r.Match {
			if !knownField(f) {
				bad(key+".match", "unknown field %q (want one of %s)", f, strings.Join(FieldNames, ", "))
			}
			if hasCtl(v) {
				bad(key+".match."+f, "control characters in value")
			}
		}
		if hasCtl(r.Summary) || len(r.Summary) > 120 {
			bad(key+".summary", "at most 120 characters, no control characters")
		}
		for _, n := range r.Inhibits {
			if !names[n] {
				bad(key+".inhibits", "unknown rule %q", n)
			}
			if n == r.Name {
				bad(key+".inhibits", "a rule cannot inhibit itself")
			}
		}
	}
	return errors.Join(errs...)
}

func (c SMTPConfig) validate() []error {
	var errs []error
	bad := func(key, f string, a ...any) {
		errs = append(errs, fmt.Errorf("alerting.smtp.%s: %s", key, fmt.Sprintf(f, a...)))
	}
	if c.Host == "" {
		if len(c.To) > 0 || c.Username != "" {
			bad("host", "required when to or username is set")
		}
		return errs
	}
	if hasCtl(c.Host) || strings.ContainsAny(c.Host, " /") {
		bad("host", "%q is not a host name", c.Host)
	}
	if c.Port < 0 || c.Port > 65535 {
		bad("port", "must be 1..65535, got %d", c.Port)
	}
	if c.TLS > NoTLS {
		bad("tls", "unknown mode %d", c.TLS)
	}
	if c.Username != "" && c.TLS == NoTLS {
		bad("tls", "none is refused with a username: credentials would cross the network in clear")
	}
	if hasCtl(c.Username) {
		bad("username", "control characters")
	}
	if c.PasswordEnv != "" && c.PasswordFile != "" {
		bad("password_env", "set password_env or password_file, not both")
	}
	if c.Username == "" && (c.PasswordEnv != "" || c.PasswordFile != "") {
		bad("username", "required with a password")
	}
	if _, err := parseAddress(c.From); err != nil {
		bad("from", "%v", err)
	}
	if len(c.To) == 0 {
		bad("to", "at least one recipient")
	}
	for i, t := range c.To {
		if _, err := parseAddress(t); err != nil {
			bad(fmt.Sprintf("to[%d]", i), "%v", err)
		}
	}
	if hasCtl(c.LocalName) || strings.ContainsAny(c.LocalName, " ") {
		bad("local_name", "%q is not a host name", c.LocalName)
	}
	return errs
}

// parseAddress parses one address with net/mail, refusing control
// characters anywhere and more than one address.
func parseAddress(s string) (*netmail.Address, error) {
	if s == "" {
		return nil, errors.New("empty address")
	}
	if hasCtl(s) {
		return nil, fmt.Errorf("%q: control characters", s)
	}
	a, err := netmail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("%q: %v", s, err)
	}
	if hasCtl(a.Address) || hasCtl(a.Name) || strings.ContainsAny(a.Address, "<>,;\" ") {
		return nil, fmt.Errorf("%q: unsafe address", s)
	}
	return a, nil
}

// hasCtl reports whether s holds CR, LF, NUL or any other control
// character (tab excepted).
func hasCtl(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; (b < ' ' && b != '\t') || b == 0x7f {
			return true
		}
	}
	return false
}
