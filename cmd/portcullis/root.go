package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Exit codes of every command.
const (
	exitOK      = 0
	exitFailure = 1 // a failure the user can fix; the message says how
	exitUsage   = 2
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func failf(format string, a ...any) error {
	return &exitError{code: exitFailure, err: fmt.Errorf(format, a...)}
}

// Main runs the command line and returns the process exit code.
func Main(args []string) int {
	root := rootCommand()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(os.Stderr, "portcullis:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var coded interface{ ExitCode() int }
	if errors.As(err, &coded) {
		return coded.ExitCode()
	}
	// cobra's own errors are usage errors: unknown command or flag, bad args.
	return exitUsage
}

// rootCommand is portcullis and its commands. The load generator is a
// command of its own, portcullis-bench, which this binary does not link.
func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "portcullis",
		Short:         "Portcullis: a security-focused WebSocket gateway",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCommand(), configCommand(), tokenCommand(), publishCommand(), banCommand(),
		auditCommand(), alertCommand(), versionCommand())
	return root
}

// auditCommand groups the audit trail tools.
func auditCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "verify, query and follow the audit trail"}
	cmd.AddCommand(auditVerifyCommand(), auditQueryCommand(), auditTailCommand())
	return cmd
}

func defaultDataDir() string { return "./portcullis-data" }

func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			commit := "unknown"
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						commit = s.Value
					}
				}
			}
			fmt.Printf("portcullis %s (commit %s, %s)\n", version, commit, runtime.Version())
			return nil
		},
	}
}
