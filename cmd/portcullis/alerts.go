package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/portcullis-gw/portcullis/alerting"
	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/admin"
	"github.com/portcullis-gw/portcullis/gateway/config"
)

// alertConfig maps the `alerting:` keys to the engine's config.
func alertConfig(c config.Alerting) (alerting.Config, error) {
	var errs []error
	tlsMode, err := alerting.ParseTLSMode(c.SMTP.TLS)
	if err != nil {
		errs = append(errs, fmt.Errorf("alerting.smtp.tls: %w", err))
	}
	out := alerting.Config{
		SMTP: alerting.SMTPConfig{Host: c.SMTP.Host, Port: c.SMTP.Port, Username: c.SMTP.Username,
			PasswordEnv: c.SMTP.PasswordEnv, PasswordFile: c.SMTP.PasswordFile, From: c.SMTP.From, To: c.SMTP.To,
			TLS: tlsMode, Timeout: c.SMTP.Timeout},
		GroupWait: c.GroupWait, GroupInterval: c.GroupInterval, RepeatInterval: c.RepeatInterval,
		MaxPerHour: c.MaxPerHour,
	}
	sev := func(key, s string) audit.Severity {
		if s == "" {
			return 0
		}
		v, ok := audit.ParseSeverity(s)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: %q must be info, notice, warning or critical", key, s))
		}
		return v
	}
	kind := func(key, s string) audit.Kind {
		if s == "" {
			return 0
		}
		k, ok := audit.ParseKind(s)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: unknown event %q (docs/AUDIT.md lists the events)", key, s))
		}
		return k
	}
	for i, r := range c.Rules {
		k := fmt.Sprintf("alerting.rules[%d]", i)
		out.Rules = append(out.Rules, alerting.Rule{Name: r.Name, Event: kind(k+".event", r.Event), Reason: r.Reason,
			Stage: audit.Stage(r.Stage), MinSeverity: sev(k+".min_severity", r.MinSeverity), Match: r.Match,
			Threshold: r.Threshold, Window: r.Window, CountBy: r.CountBy, GroupBy: r.GroupBy,
			Severity: sev(k+".severity", r.Severity), Summary: r.Summary, Inhibits: r.Inhibits})
	}
	if err := errors.Join(errs...); err != nil {
		return out, err
	}
	if out.SMTP.Enabled() {
		if err := out.Validate(); err != nil {
			return out, err
		}
	}
	return out, nil
}

// tee sends every event to the audit trail and to the alert engine.
type tee struct {
	trail  audit.Sink
	alerts audit.Sink
}

func (t tee) Emit(e audit.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	t.trail.Emit(e)
	t.alerts.Emit(e)
}

// watchTrail reports, once a second, what the audit writer itself cannot
// send through the tee: events it lost (audit_dropped) and a failing sink.
func watchTrail(ctx context.Context, aw *audit.Writer, eng *alerting.Engine) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastDropped uint64
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			st := aw.Stats()
			if st.Dropped > lastDropped {
				eng.Emit(audit.Event{Time: now, Event: audit.KindAuditDropped, Severity: audit.Critical, Stage: audit.StageSystem,
					Count: int64(st.Dropped - lastDropped), Detail: "audit events could not be written"})
				lastDropped = st.Dropped
			}
			if f := aw.Failing(); f && !failing {
				eng.Emit(audit.Event{Time: now, Event: audit.KindAuditFailing, Severity: audit.Critical, Stage: audit.StageSystem,
					Detail: "the audit trail cannot be written"})
				failing = true
			} else if !f {
				failing = false
			}
		}
	}
}

// silenceRoutes are the /v1/silences handlers and POST /v1/alerts/test.
func silenceRoutes(eng *alerting.Engine, aw audit.Sink) map[string]http.Handler {
	writeJSON := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	return map[string]http.Handler{
		"GET /v1/silences": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]any{"silences": eng.Silences()})
		}),
		"POST /v1/silences": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var req struct {
				Matchers []alerting.Matcher `json:"matchers"`
				For      string             `json:"for"`
				Comment  string             `json:"comment"`
				Actor    string             `json:"actor"`
			}
			if err := admin.Decode(r, &req); err != nil {
				admin.Error(w, http.StatusBadRequest, "bad_request", err.Error())
				return
			}
			d, err := time.ParseDuration(req.For)
			if err != nil || d <= 0 {
				admin.Error(w, http.StatusBadRequest, "bad_request", "for: a positive duration such as \"2h\" is required")
				return
			}
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			by := "api@" + host
			if req.Actor != "" {
				by = audit.Cap(req.Actor) + " via " + by
			}
			id, err := eng.Silence(req.Matchers, time.Now().Add(d), by, req.Comment)
			if err != nil {
				admin.Error(w, http.StatusBadRequest, "bad_request", err.Error())
				return
			}
			writeJSON(w, http.StatusCreated, map[string]any{"id": id})
		}),
		"DELETE /v1/silences/{id}": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := eng.Expire(r.PathValue("id")); err != nil {
				if errors.Is(err, alerting.ErrNoSilence) {
					admin.Error(w, http.StatusNotFound, "not_found", "no such silence")
					return
				}
				admin.Error(w, http.StatusInternalServerError, "internal", err.Error())
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"expired": r.PathValue("id")})
		}),
		"POST /v1/alerts/test": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
			defer cancel()
			if err := eng.Test(ctx); err != nil {
				admin.Error(w, http.StatusBadGateway, "smtp_failed", err.Error())
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"sent": true})
		}),
	}
}

// alertCommand is `portcullis alert test`.
func alertCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "alert", Short: "alert email tools"}
	var a adminClient
	test := &cobra.Command{
		Use:   "test",
		Short: "send a test alert email now through the running gateway's SMTP settings",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call("POST", "/v1/alerts/test", map[string]any{}, nil); err != nil {
				return err
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
				return err
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
				return err
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
