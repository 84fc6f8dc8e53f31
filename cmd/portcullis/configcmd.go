package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/portcullis-gw/portcullis/gateway/config"
	"github.com/portcullis-gw/portcullis/policy/blocklist"
	"github.com/portcullis-gw/portcullis/policy/schema"
)

func configCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "print or check configuration"}
	cmd.AddCommand(&cobra.Command{
		Use:   "default",
		Short: "print the complete default config, every key commented",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Print(config.DefaultYAML())
			return nil
		},
	}, checkCommand())
	return cmd
}

// checkCommand is `config check [--connect] FILE`.
func checkCommand() *cobra.Command {
	var connect bool
	cmd := &cobra.Command{
		Use:   "check FILE",
		Short: "validate a config file; errors name the file, line, column and key",
		Long: `Validate a config file the way serve loads it, and report every problem at
once, each as FILE:LINE:COL: KEY: message. Checked: YAML syntax, unknown and
duplicate keys, types and values, the relations between keys, the listen
addresses (syntax, port, host, no overlap, the admin API on loopback unless
admin.tls), and what serve reads from other files next: block lists, token
keys, data schemas, topic patterns and alert rules. With --connect it also
connects to what serve would connect to at its first use: the database of
tokens.source sql, whose table and columns must exist.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(args[0])
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			problems, warnings := checkBuilt(cfg)
			// Warnings leave the exit code at 0: the config is valid.
			for _, w := range warnings {
				fmt.Fprintf(os.Stderr, "%s: warning: %s\n", args[0], w)
			}
			if connect && len(problems) == 0 {
				problems = checkConnect(cmd.Context(), cfg)
			}
			if len(problems) > 0 {
				return &exitError{code: exitFailure, err: config.Errors(problems)}
			}
			fmt.Printf("%s: ok\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&connect, "connect", false, "also connect to the token database (tokens.source sql) and check its table and columns")
	return cmd
}

// checkConnect connects to the database of tokens.source sql and checks
// that its table and columns exist; any other source has nothing to
// connect to.
func checkConnect(ctx context.Context, cfg *config.Config) []string {
	if cfg.Tokens.Source != "sql" {
		fmt.Fprintf(os.Stderr, "--connect: tokens.source is %s: no database to check\n", cfg.Tokens.Source)
		return nil
	}
	src, err := sqlTokens(cfg)
	if err == nil {
		defer src.Close()
		if ctx == nil {
			ctx = context.Background()
		}
		err = src.Check(ctx)
	}
	if err != nil {
		return []string{cfg.Where("tokens.sql") + ": tokens.sql: " + err.Error()}
	}
	return nil
}

// checkBuilt builds what serve builds from a loaded config next, through
// the same constructors: block lists, the token source, the topic rules
// with their data schemas, the alert rules. Each problem is placed at the
// key it is about (config.Where); the constructors' messages name the key
// or the file themselves, so no further prefix is added.
func checkBuilt(cfg *config.Config) (problems, warnings []string) {
	at := func(key string, err error) {
		for _, e := range unjoin(err) {
			problems = append(problems, cfg.Where(key)+": "+e.Error())
		}
	}
	if _, err := blocklist.NewSet(cfg.Bans.Block, cfg.Bans.Allow, nil); err != nil {
		at("bans", err)
	}
	for i, f := range cfg.Bans.BlockFiles {
		if _, err := blocklist.NewSet(nil, nil, []string{f}); err != nil {
			key := fmt.Sprintf("bans.block_files[%d]", i)
			at(key, fmt.Errorf("%s: %w", key, err))
		}
	}
	if src, err := tokenSource(cfg); err != nil {
		key := "tokens.jwt"
		if cfg.Tokens.Source == "sql" {
			key = "tokens.sql"
		}
		at(key, err)
	} else if src.SQL != nil {
		_ = src.SQL.Close() // opened, never connected: --connect connects
	}
	if val, err := schema.New(schema.Limits{MaxBytes: cfg.Limits.MaxMessageBytes}); err != nil {
		at("limits.max_message_bytes", err)
	} else if set, _, err := topicRules(cfg, val); err != nil {
		at("topics", err)
	} else {
		warnings = set.Warnings()
	}
	ac, err := alertConfig(cfg.Alerting)
	if err == nil && ac.SMTP.Enabled() {
		// The password is read when the engine opens: an unset variable
		// or a missing file would stop serve.
		if _, perr := ac.SMTP.Password(nil); perr != nil {
			key := "alerting.smtp.password_env"
			if ac.SMTP.PasswordEnv == "" {
				key = "alerting.smtp.password_file"
			}
			at(key, perr)
		}
	}
	if err != nil {
		for _, e := range unjoin(err) {
			key := "alerting"
			var ke *keyError
			if errors.As(e, &ke) {
				key = ke.Key
			}
			at(key, e)
		}
	}
	return problems, warnings
}

// unjoin splits an errors.Join (or a multi-line error) into its parts.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) > 1 {
		out := make([]error, 0, len(lines))
		for _, l := range lines {
			if l != "" {
				out = append(out, errors.New(l))
			}
		}
		return out
	}
	return []error{err}
}
