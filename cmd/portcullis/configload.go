package main

import (
	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/cmd/internal/app"
	"github.com/portcullis-gw/portcullis/gateway/config"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens/sqltokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// `config check` builds from a config what serve builds, through the same
// functions of cmd/internal/app; these are its names for them. This file,
// like every command but serve, builds on every system.

// loadConfig reads a config: the embedded defaults when path is empty.
func loadConfig(path string) (*config.Config, error) { return app.LoadConfig(path) }

// tokenSource builds the token source as `config check` sees it.
func tokenSource(cfg *config.Config) (app.TokenSource, error) {
	return app.NewTokenSource(cfg, audit.Discard{})
}

// sqlTokens opens the sql token source (tokens.source sql) without
// connecting.
func sqlTokens(cfg *config.Config) (*sqltokens.Source, error) {
	return app.NewSQLTokens(cfg, audit.Discard{})
}

// topicRules compiles the topic rules and their data schemas.
func topicRules(cfg *config.Config, val *schema.Validator) (*topics.Set, map[string]schema.DataSchema, error) {
	return app.TopicRules(cfg, val)
}
