package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/portcullis-gw/portcullis/alerting"
	"github.com/portcullis-gw/portcullis/cmd/internal/app"
	"github.com/portcullis-gw/portcullis/gateway/config"
)

// keyError is a problem with one config key, which `config check` places
// in the file.
type keyError = app.KeyError

// alertConfig maps the `alerting:` keys to the engine's config, as serve
// does (cmd/internal/app).
func alertConfig(c config.Alerting) (alerting.Config, error) { return app.AlertConfig(c) }

// alertingOff turns the admin API's 404 for the alert endpoints, which a
// gateway with alerting off does not route, into what to do about it.
func alertingOff(err error) error {
	var ae *apiError
	if errors.As(err, &ae) && ae.status == http.StatusNotFound {
		return failf("alerting is off on this gateway: set alerting.smtp.host and alerting.smtp.to " +
			"(and alerting.smtp.from), or alerting.webhooks, in its config, check it with `portcullis config check FILE`, and restart it")
	}
	return err
}

// alertCommand is `portcullis alert test`.
func alertCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "alert", Short: "alert email tools"}
	var a adminClient
	test := &cobra.Command{
		Use:   "test",
		Short: "send a test alert now to every destination of the running gateway (mail, webhooks)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call("POST", "/v1/alerts/test", map[string]any{}, nil); err != nil {
				return alertingOff(err)
			}
			fmt.Println("test alert sent")
			return nil
		},
	}
	a.flags(test)
	cmd.AddCommand(test, silenceCommand())
	return cmd
}

// silenceCommand is `portcullis alert silence add|list|rm`.
func silenceCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "silence", Short: "mute matching alerts for a while (Alertmanager-style silences)"}
	var add adminClient
	var matches []string
	var dur time.Duration
	var comment string
	addCmd := &cobra.Command{
		Use:   "add --match LABEL=VALUE... --for 2h [--comment TEXT]",
		Short: "silence alerts whose labels match (e.g. alertname=ban)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(matches) == 0 || dur <= 0 {
				return &exitError{code: exitUsage, err: errors.New("--match LABEL=VALUE and --for DURATION are required")}
			}
			var ms []alerting.Matcher
			for _, m := range matches {
				name, value, ok := strings.Cut(m, "=")
				if !ok || name == "" {
					return &exitError{code: exitUsage, err: fmt.Errorf("--match %q: want LABEL=VALUE", m)}
				}
				ms = append(ms, alerting.Matcher{Name: name, Value: value})
			}
			var out struct {
				ID string `json:"id"`
			}
			body := map[string]any{"matchers": ms, "for": dur.String(), "comment": comment, "actor": whoami()}
			if err := add.call("POST", "/v1/silences", body, &out); err != nil {
				return alertingOff(err)
			}
			fmt.Printf("silence %s until %s\n", out.ID, time.Now().Add(dur).UTC().Format(time.RFC3339))
			return nil
		},
	}
	add.flags(addCmd)
	addCmd.Flags().StringArrayVar(&matches, "match", nil, "label=value the alert must carry (repeatable; e.g. alertname=ban)")
	addCmd.Flags().DurationVar(&dur, "for", 0, "how long, e.g. 2h")
	addCmd.Flags().StringVar(&comment, "comment", "", "why, for the audit trail")

	var list adminClient
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "list silences",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Silences []alerting.Silence `json:"silences"`
			}
			if err := list.call("GET", "/v1/silences", nil, &out); err != nil {
				return alertingOff(err)
			}
			if len(out.Silences) == 0 {
				fmt.Println("no silences")
				return nil
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tUNTIL\tMATCHERS\tBY\tCOMMENT")
			for _, s := range out.Silences {
				var ms []string
				for _, m := range s.Matchers {
					ms = append(ms, m.Name+"="+strconv.Quote(m.Value))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, s.Until.UTC().Format(time.RFC3339), strings.Join(ms, ","), s.By, s.Comment)
			}
			return tw.Flush()
		},
	}
	list.flags(listCmd)

	var rm adminClient
	rmCmd := &cobra.Command{
		Use:   "rm ID",
		Short: "expire a silence now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := rm.call("DELETE", "/v1/silences/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Printf("silence %s expired\n", args[0])
			return nil
		},
	}
	rm.flags(rmCmd)
	cmd.AddCommand(addCmd, listCmd, rmCmd)
	return cmd
}
