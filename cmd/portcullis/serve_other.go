//go:build !linux

package main

import (
	"runtime"

	"github.com/spf13/cobra"
)

// serveCommand is serve on a system other than Linux: the gateway needs
// epoll and runs on Linux only, while the audit tools and admin clients of
// this binary work here. It accepts any arguments, so that every serve
// command line gets the same answer, and exits 1.
func serveCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "serve",
		Short:              "run the gateway (Linux only; this build is for " + runtime.GOOS + ")",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return failf("serve runs on Linux only (the gateway uses epoll); this is a %s/%s build: "+
				"run the gateway on Linux, and use this binary for audit verify|query|tail and the admin commands",
				runtime.GOOS, runtime.GOARCH)
		},
	}
}
