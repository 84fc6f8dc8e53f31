package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

// healthCommand is `portcullis health`: one GET of a health endpoint,
// exit 0 on 200 and 1 otherwise. It is the container HEALTHCHECK, for
// images that carry no shell or curl.
func healthCommand() *cobra.Command {
	var target string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "health [--url http://127.0.0.1:8080/healthz]",
		Short: "probe a gateway's health endpoint (exit 0 when it answers 200); for container health checks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := url.Parse(target)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return &exitError{code: exitUsage, err: fmt.Errorf("--url %q: want http://host:port/path", target)}
			}
			c := &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			}}
			resp, err := c.Get(target)
			if err != nil {
				return failf("unhealthy: %v", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			if resp.StatusCode != http.StatusOK {
				return failf("unhealthy: %s answered %d: %s", target, resp.StatusCode, body)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "healthy: %s\n", target)
			return nil
		},
	}
	cmd.Flags().StringVar(&target, "url", "http://127.0.0.1:8080/healthz", "health endpoint to GET (the public listener's /healthz or /readyz)")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "give up after this long")
	return cmd
}
