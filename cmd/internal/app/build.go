package app

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/portcullis-gw/portcullis/alerting"
	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/config"
	jwttoken "github.com/portcullis-gw/portcullis/policy/jwt"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/tokens/redistokens"
	"github.com/portcullis-gw/portcullis/policy/tokens/sqltokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// What serve and `config check` both build from a config. This file, like
// every command but serve, builds on every system.

// LoadConfig is the one path by which serve, a reload and `config check`
// read a config: the embedded defaults when path is empty, else the file
// over them.
func LoadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// Redeemer is what the gateway asks of a token source (the method set of
// gateway.TokenSource). It is spelled here so that `config check` builds
// the token source on every system, without the Linux-only gateway.
type Redeemer interface {
	Redeem(token string, p tokens.Presenter, now time.Time) tokens.Result
}

// TokenSource is the configured token source seen from its users.
type TokenSource struct {
	Redeemer Redeemer
	Store    *tokens.Store       // the minting store; nil for jwt (the site mints)
	JWT      *jwttoken.Source    // nil for store
	Cluster  *redistokens.Source // a cluster's minting source, in Redis (clusterstate.go); nil alone
	SQL      *sqltokens.Source   // tokens.source sql: the site's database; nil otherwise
	Sweep    func(now time.Time) int
}

// NewTokenSource builds the store or jwt source of tokens.source. The jwt
// source reports a full replay table to sink (jti_table_full, critical;
// jti_table_recovered); serve then opens its state file, <data>/jti.db.
func NewTokenSource(cfg *config.Config, sink audit.Sink) (TokenSource, error) {
	if cfg.Tokens.Source == "jwt" {
		j := cfg.Tokens.JWT
		src, err := jwttoken.Load(jwttoken.Config{
			Options: jwttoken.Options{Algorithms: j.Algorithms, MaxTTL: cfg.Tokens.MaxTTL, MaxEntries: cfg.Tokens.MaxEntries,
				Audience: j.Audience, Issuer: j.Issuer, TableAlarm: jtiTableAlarm(sink)},
			SecretEnv:  j.SecretEnv,
			SecretFile: j.SecretFile, PublicKeyFile: j.PublicKeyFile,
		}, os.Getenv)
		if err != nil {
			return TokenSource{}, fmt.Errorf("tokens.jwt: %w", err)
		}
		return TokenSource{Redeemer: src, JWT: src, Sweep: src.Sweep}, nil
	}
	if cfg.Tokens.Source == "sql" {
		src, err := NewSQLTokens(cfg, sink)
		if err != nil {
			return TokenSource{}, err
		}
		return TokenSource{Redeemer: src, SQL: src, Sweep: src.Sweep}, nil
	}
	store := tokens.NewStore(tokens.Options{TTL: cfg.Tokens.TTL, MaxTTL: cfg.Tokens.MaxTTL, MaxEntries: cfg.Tokens.MaxEntries})
	return TokenSource{Redeemer: store, Store: store, Sweep: store.Sweep}, nil
}

// NewSQLTokens opens the sql token source of cfg (without connecting),
// its DSN read from tokens.sql.dsn_file. The database's failing and
// answering again are audited once per episode: token_source_down
// (critical, mailed by the default rules), token_source_recovered.
func NewSQLTokens(cfg *config.Config, sink audit.Sink) (*sqltokens.Source, error) {
	c := cfg.Tokens.SQL
	dsn, err := config.ReadSecretFile(c.DSNFile)
	if err != nil {
		return nil, fmt.Errorf("tokens.sql.dsn_file: %w", err)
	}
	src, err := sqltokens.New(sqltokens.Options{Driver: sqltokens.Driver(c.Driver), DSN: dsn, Table: c.Table,
		Columns: sqltokens.Columns{Token: c.Columns.Token, User: c.Columns.User, Topics: c.Columns.Topics,
			Expires: c.Columns.Expires, Used: c.Columns.Used},
		Hashed: c.Hashed, Timeout: c.Timeout, MaxOpen: c.MaxOpen, MaxRemembered: cfg.Tokens.MaxEntries,
		OnState: sqlStateAlarm(c.Driver, sink)})
	if err != nil {
		return nil, fmt.Errorf("tokens.sql: %w", err)
	}
	return src, nil
}

// sqlStateAlarm audits the transitions of the token database's health.
func sqlStateAlarm(driver string, sink audit.Sink) func(sqltokens.State) {
	return func(s sqltokens.State) {
		if s.Down {
			sink.Emit(audit.Event{Time: s.At, Event: audit.KindTokenSourceDown, Severity: audit.Critical, Stage: audit.StageSystem,
				Reason: reason.TokenSourceUnavailable,
				Detail: audit.Cap("token database (" + driver + ") unavailable: every token is refused until it answers: " + s.Err)})
			return
		}
		sink.Emit(audit.Event{Time: s.At, Event: audit.KindTokenSourceRecovered, Severity: audit.Notice, Stage: audit.StageSystem,
			DurationMS: s.At.Sub(s.Since).Milliseconds(), Count: s.Refused,
			Detail: fmt.Sprintf("token database (%s) answers again; %d redemptions were refused meanwhile", driver, s.Refused)})
	}
}

// jtiTableAlarm audits the jwt source's replay table filling up (an
// outage for every new visitor: critical, mailed by the default rules)
// and draining again, once per episode.
func jtiTableAlarm(sink audit.Sink) func(jwttoken.TableEvent) {
	return func(e jwttoken.TableEvent) {
		if e.Full {
			sink.Emit(audit.Event{Time: e.At, Event: audit.KindJTITableFull, Severity: audit.Critical, Stage: audit.StageSystem,
				Reason: reason.Internal,
				Detail: fmt.Sprintf("used-jti table full (%d of tokens.max_entries %d): valid JWTs with a new jti are refused "+
					"until entries lapse (at most tokens.max_ttl + 60s); raise tokens.max_entries or lower tokens.max_ttl", e.Held, e.Max)})
			return
		}
		sink.Emit(audit.Event{Time: e.At, Event: audit.KindJTITableRecovered, Severity: audit.Notice, Stage: audit.StageSystem,
			Detail: fmt.Sprintf("used-jti table has room again (%d of %d); %d valid JWTs were refused since start", e.Held, e.Max, e.Refused)})
	}
}

// TopicRules compiles the config's topic rules and the JSON Schemas of
// client-published data, keyed by rule pattern.
func TopicRules(cfg *config.Config, val *schema.Validator) (*topics.Set, map[string]schema.DataSchema, error) {
	rules := make([]topics.Rule, 0, len(cfg.Topics))
	data := map[string]schema.DataSchema{}
	for i, r := range cfg.Topics {
		rule := topics.Rule{Match: r.Match, Subscribe: topics.Access(r.Subscribe), Publish: topics.Access(r.Publish),
			SlowConsumer: topics.Policy(r.SlowConsumer), DataSchema: r.DataSchema}
		if r.Feed.URL != "" {
			rule.Feed = &topics.Feed{URL: r.Feed.URL, Every: r.Feed.Every}
		}
		rules = append(rules, rule)
		if r.DataSchema != "" {
			if _, dup := data[r.Match]; dup {
				continue // the first rule of a pattern wins, as in matching
			}
			ds, err := val.CompileDataSchema(r.DataSchema)
			if err != nil {
				return nil, nil, fmt.Errorf("topics[%d].data_schema: %w", i, err)
			}
			data[r.Match] = ds
		}
	}
	set, err := topics.Compile(rules, topics.Access(cfg.Default))
	return set, data, err
}

// KeyError is a problem with one config key, which `config check` places
// in the file.
type KeyError struct {
	Key string // e.g. alerting.rules[2].event
	Err error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// AlertConfig maps the `alerting:` keys to the engine's config. Each
// problem with a key is a *KeyError; they are joined.
func AlertConfig(c config.Alerting) (alerting.Config, error) {
	var errs []error
	tlsMode, err := alerting.ParseTLSMode(c.SMTP.TLS)
	if err != nil {
		errs = append(errs, &KeyError{"alerting.smtp.tls", err})
	}
	out := alerting.Config{
		SMTP: alerting.SMTPConfig{Host: c.SMTP.Host, Port: c.SMTP.Port, Username: c.SMTP.Username,
			PasswordEnv: c.SMTP.PasswordEnv, PasswordFile: c.SMTP.PasswordFile, From: c.SMTP.From, To: c.SMTP.To,
			TLS: tlsMode, Timeout: c.SMTP.Timeout},
		GroupWait: c.GroupWait, GroupInterval: c.GroupInterval, RepeatInterval: c.RepeatInterval,
		MaxPerHour: c.MaxPerHour,
	}
	for _, w := range c.Webhooks {
		out.Webhooks = append(out.Webhooks, alerting.WebhookConfig{URL: w.URL, SecretFile: w.SecretFile, Timeout: w.Timeout,
			AllowInsecure: w.AllowInsecure})
	}
	sev := func(key, s string) audit.Severity {
		if s == "" {
			return 0
		}
		v, ok := audit.ParseSeverity(s)
		if !ok {
			errs = append(errs, &KeyError{key, fmt.Errorf("%q must be info, notice, warning or critical", s)})
		}
		return v
	}
	kind := func(key, s string) audit.Kind {
		if s == "" {
			return 0
		}
		k, ok := audit.ParseKind(s)
		if !ok {
			errs = append(errs, &KeyError{key, fmt.Errorf("unknown event %q (docs/AUDIT.md lists the events)", s)})
		}
		return k
	}
	why := func(key, s string) reason.Reason {
		if s == "" {
			return reason.None
		}
		r, ok := reason.Parse(s)
		if !ok {
			errs = append(errs, &KeyError{key, fmt.Errorf("unknown reason %q (docs/AUDIT.md lists the reasons)", s)})
		}
		return r
	}
	for i, r := range c.Rules {
		k := fmt.Sprintf("alerting.rules[%d]", i)
		out.Rules = append(out.Rules, alerting.Rule{Name: r.Name, Event: kind(k+".event", r.Event), Reason: why(k+".reason", r.Reason),
			Stage: audit.Stage(r.Stage), MinSeverity: sev(k+".min_severity", r.MinSeverity), Match: r.Match,
			Threshold: r.Threshold, Window: r.Window, CountBy: r.CountBy, GroupBy: r.GroupBy,
			Severity: sev(k+".severity", r.Severity), Summary: r.Summary, Inhibits: r.Inhibits})
	}
	if err := errors.Join(errs...); err != nil {
		return out, err
	}
	if out.Enabled() {
		if err := out.Validate(); err != nil {
			return out, err
		}
	}
	return out, nil
}
