package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/user"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// banCommand is `portcullis ban add|rm|list`, a client of /v1/bans.
func banCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ban",
		Short: "list, add and remove bans on a running gateway",
	}
	cmd.AddCommand(banAddCommand(), banRmCommand(), banListCommand())
	return cmd
}

// whoami names the person at the keyboard for the audit trail's actor.
func whoami() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	if n := os.Getenv("USER"); n != "" {
		return "cli:" + n
	}
	return "cli"
}

type banReply struct {
	Prefix    string `json:"prefix"`
	Until     string `json:"until"`
	Remaining string `json:"remaining"`
	Reason    string `json:"reason"` // a reason's name: "manual" for an operator's ban
	Note      string `json:"note"`   // the operator's --reason text, if any
	Actor     string `json:"actor"`
	Repeat    int    `json:"repeat"`
	DryRun    bool   `json:"dry_run"`
}

// why is what `ban add` and `ban list` show as a ban's reason: the
// operator's text when there is one, else the reason's name.
func (b banReply) why() string {
	if b.Note != "" {
		return b.Note
	}
	return b.Reason
}

func banAddCommand() *cobra.Command {
	var a adminClient
	var dur, why string
	cmd := &cobra.Command{
		Use:   "add ADDRESS|CIDR [--for 1h] [--reason TEXT]",
		Short: "ban an address (IPv6: its /64) or a CIDR; its live connections are closed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out banReply
			body := map[string]string{"prefix": args[0], "for": dur, "reason": why, "actor": whoami()}
			if err := a.call("POST", "/v1/bans", body, &out); err != nil {
				return err
			}
			fmt.Printf("banned %s until %s (%s), reason %q\n", out.Prefix, out.Until, out.Remaining, out.why())
			return nil
		},
	}
	a.flags(cmd)
	cmd.Flags().StringVar(&dur, "for", "", "ban length, e.g. 30m, 24h (default: bans.bantime)")
	cmd.Flags().StringVar(&why, "reason", "", "why, for the audit trail (default \"manual\")")
	return cmd
}

func banRmCommand() *cobra.Command {
	var a adminClient
	cmd := &cobra.Command{
		Use:   "rm ADDRESS|CIDR",
		Short: "lift a ban (exactly the prefix shown by `ban list`)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out map[string]any
			path := "/v1/bans/" + url.PathEscape(args[0]) + "?actor=" + url.QueryEscape(whoami())
			if err := a.call("DELETE", path, nil, &out); err != nil {
				return err
			}
			fmt.Printf("unbanned %v\n", out["removed"])
			return nil
		},
	}
	a.flags(cmd)
	return cmd
}

func banListCommand() *cobra.Command {
	var a adminClient
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "list the bans in force",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Bans []banReply `json:"bans"`
			}
			if err := a.call("GET", "/v1/bans", nil, &out); err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(out)
			}
			if len(out.Bans) == 0 {
				fmt.Println("no bans in force")
				return nil
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PREFIX\tUNTIL\tREMAINING\tREASON\tACTOR\tREPEAT")
			for _, b := range out.Bans {
				until := b.Until
				if b.DryRun {
					until += " (dry run)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", b.Prefix, until, b.Remaining, b.why(), b.Actor, b.Repeat)
			}
			return tw.Flush()
		},
	}
	a.flags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
