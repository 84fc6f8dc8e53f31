package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/portcullis-gw/portcullis/gateway/config"
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
			if _, err := loadConfig(args[0]); err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			fmt.Printf("%s: ok\n", args[0])
			return nil
		},
	})
	return cmd
}
