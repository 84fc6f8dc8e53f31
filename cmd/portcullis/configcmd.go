package main

import (
	"fmt"
	"os"

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
	}, &cobra.Command{
		Use:   "check FILE",
		Short: "validate a config file; errors name the file, line, column and key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(args[0])
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			// What serve reads next from other files: block lists and
			// token keys, through the same constructors.
			if _, err := blocklist.NewSet(cfg.Bans.Block, cfg.Bans.Allow, cfg.Bans.BlockFiles); err != nil {
				return failf("%s: bans: %v", args[0], err)
			}
			if _, err := tokenSource(cfg); err != nil {
				return failf("%s: %v", args[0], err)
			}
			val, err := schema.New(schema.Limits{MaxBytes: cfg.Limits.MaxMessageBytes})
			if err != nil {
				return failf("schemas: %v", err)
			}
			set, _, err := topicRules(cfg, val)
			if err != nil {
				return failf("%s: topics: %v", args[0], err)
			}
			// Warnings leave the exit code at 0: the config is valid.
			for _, w := range set.Warnings() {
				fmt.Fprintf(os.Stderr, "%s: warning: %s\n", args[0], w)
			}
			if _, err := alertConfig(cfg.Alerting); err != nil {
				return failf("%s: %v", args[0], err)
			}
			fmt.Printf("%s: ok\n", args[0])
			return nil
		},
	})
	return cmd
}
