package main

import (
	"fmt"
	"os"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/admin"
	"github.com/portcullis-gw/portcullis/gateway/config"
	jwttoken "github.com/portcullis-gw/portcullis/policy/jwt"
	"github.com/portcullis-gw/portcullis/policy/reason"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// What serve and `config check` both build from a config. This file, like
// every command but serve, builds on every system.

// loadConfig is the one path by which serve and `config check` read a
// config: defaults when path is empty, then the checks of what this build
// supports.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// redeemer is what the gateway asks of a token source (the method set of
// gateway.TokenSource, which serve passes it as). It is spelled here so
// that `config check` builds the token source on every system, without the
// Linux-only gateway.
type redeemer interface {
	Redeem(token string, p tokens.Presenter, now time.Time) tokens.Result
}

// tokenSrc is the configured token source seen from its three users.
type tokenSrc struct {
	redeemer redeemer
	minter   admin.Minter // nil for jwt: the site mints
	sweep    func(now time.Time) int
	close    func(now time.Time) error // writes what is pending to disk
	jwt      *jwttoken.Source          // nil for store
}

// tokenSource builds the token source as `config check` sees it.
func tokenSource(cfg *config.Config) (tokenSrc, error) { return newTokenSource(cfg, audit.Discard{}) }

// newTokenSource builds the store or jwt source of tokens.source. The jwt
// source reports a full replay table to sink (jti_table_full, critical;
// jti_table_recovered); serve then opens its state file, <data>/jti.db.
func newTokenSource(cfg *config.Config, sink audit.Sink) (tokenSrc, error) {
	if cfg.Tokens.Source == "jwt" {
		j := cfg.Tokens.JWT
		src, err := jwttoken.Load(jwttoken.Config{
			Options: jwttoken.Options{Algorithms: j.Algorithms, MaxTTL: cfg.Tokens.MaxTTL, MaxEntries: cfg.Tokens.MaxEntries,
				Audience: j.Audience, Issuer: j.Issuer, TableAlarm: jtiTableAlarm(sink)},
			SecretEnv:  j.SecretEnv,
			SecretFile: j.SecretFile, PublicKeyFile: j.PublicKeyFile,
		}, os.Getenv)
		if err != nil {
			return tokenSrc{}, fmt.Errorf("tokens.jwt: %w", err)
		}
		return tokenSrc{redeemer: src, sweep: src.Sweep, close: src.Close, jwt: src}, nil
	}
	store := tokens.NewStore(tokens.Options{TTL: cfg.Tokens.TTL, MaxTTL: cfg.Tokens.MaxTTL, MaxEntries: cfg.Tokens.MaxEntries})
	return tokenSrc{redeemer: store, minter: store, sweep: store.Sweep, close: func(time.Time) error { return nil }}, nil
}

// jtiTableAlarm audits the jwt source's replay table filling up (an
// outage for every new visitor: critical, mailed by the default rules)
// and draining again, once per episode.
func jtiTableAlarm(sink audit.Sink) func(jwttoken.TableEvent) {
	return func(e jwttoken.TableEvent) {
		if e.Full {
			sink.Emit(audit.Event{Time: e.At, Event: audit.KindJTITableFull, Severity: audit.Critical, Stage: audit.StageSystem,
				Reason: reason.Internal.String(),
				Detail: fmt.Sprintf("used-jti table full (%d of tokens.max_entries %d): valid JWTs with a new jti are refused "+
					"until entries lapse (at most tokens.max_ttl + 60s); raise tokens.max_entries or lower tokens.max_ttl", e.Held, e.Max)})
			return
		}
		sink.Emit(audit.Event{Time: e.At, Event: audit.KindJTITableRecovered, Severity: audit.Notice, Stage: audit.StageSystem,
			Detail: fmt.Sprintf("used-jti table has room again (%d of %d); %d valid JWTs were refused since start", e.Held, e.Max, e.Refused)})
	}
}

// topicRules compiles the config's topic rules and the JSON Schemas of
// client-published data, keyed by rule pattern.
func topicRules(cfg *config.Config, val *schema.Validator) (*topics.Set, map[string]schema.DataSchema, error) {
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
