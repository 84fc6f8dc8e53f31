package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	jsclient "github.com/portcullis-gw/portcullis/clients/js"
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
func Main(args []string) int { return run(args, os.Stderr) }

// run is Main with the error stream given: the error, and after a usage
// error (an unknown command or flag, missing arguments) where the usage is.
func run(args []string, stderr io.Writer) int {
	root := rootCommand()
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "portcullis:", strings.TrimRight(err.Error(), "\n"))
	// cobra's own errors are usage errors: unknown command or flag, bad args.
	code := exitUsage
	var ee *exitError
	var coded interface{ ExitCode() int }
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case errors.As(err, &coded):
		code = coded.ExitCode()
	}
	if code == exitUsage {
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// requireSubcommands makes every command that only groups others (ban,
// audit, alert silence, ...) refuse an unknown subcommand as a usage
// error; cobra would print the group's help and exit 0. Without a
// subcommand the group still prints its help.
func requireSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		requireSubcommands(sub)
	}
	if !c.HasParent() || !c.HasSubCommands() || c.Run != nil || c.RunE != nil {
		return // the root: cobra refuses unknown commands there itself
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return &exitError{code: exitUsage, err: errors.New(msg)}
	}
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
		auditCommand(), alertCommand(), healthCommand(), versionCommand())
	requireSubcommands(root)
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
	var sri bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "print version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if sri {
				// The integrity attribute of the /portcullis.js this binary serves.
				fmt.Println(jsclient.Integrity())
				return nil
			}
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
	cmd.Flags().BoolVar(&sri, "client-sri", false, "print only the Subresource Integrity string (sha384-…) of the /portcullis.js this binary serves")
	return cmd
}
