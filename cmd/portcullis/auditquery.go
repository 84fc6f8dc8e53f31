package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/query"
)

// aqTrail are the flags that say where the trails are. Each node of a
// cluster writes its own trail: every --dir and every --data names one,
// and query reads them together. A flag is repeated rather than given a
// comma list, since a directory's name may hold a comma.
type aqTrail struct {
	cmd         *cobra.Command
	dirs, datas []string
}

// flags adds --dir and --data to cmd; several says whether cmd reads
// several trails.
func (t *aqTrail) flags(cmd *cobra.Command, several bool) {
	t.cmd = cmd
	dir, data := "audit directory (default <data>/audit)", "data directory of the gateway (its trail is DIR/audit)"
	if several {
		dir += "; repeat for the trails of several nodes"
		data += "; repeat for several nodes"
	}
	cmd.Flags().StringArrayVar(&t.dirs, "dir", nil, dir)
	cmd.Flags().StringArrayVar(&t.datas, "data", []string{defaultDataDir()}, data)
}

// trailDirs returns the audit directories the flags name, one per trail: each
// --dir, and each --data given (DIR/audit); --data's default only when no
// --dir is given.
func (t *aqTrail) trailDirs() []string {
	dirs := append([]string(nil), t.dirs...)
	if len(dirs) == 0 || t.cmd.Flags().Changed("data") {
		for _, d := range t.datas {
			dirs = append(dirs, filepath.Join(d, "audit"))
		}
	}
	return dirs
}

// paths returns the PATH arguments, else the one audit directory the flags
// name. PATH arguments are one trail and replace the flags, as long as
// these name at most one.
func (t *aqTrail) paths(args []string) ([]string, error) {
	dirs := t.trailDirs()
	if len(args) > 0 {
		if len(dirs) > 1 {
			return nil, aqUsagef("PATH arguments are read as one trail: give the trails of several nodes as repeated --dir or --data, without PATH")
		}
		return args, nil
	}
	if len(dirs) > 1 {
		return nil, aqUsagef("%s reads one trail, and %d are given (%s): give one --dir or --data",
			t.cmd.CommandPath(), len(dirs), strings.Join(dirs, ", "))
	}
	return dirs, nil
}

// trails returns the trails to read: the PATH arguments as one trail, or
// one per audit directory the flags name.
func (t *aqTrail) trails(args []string) ([]query.Trail, error) {
	groups := [][]string{args}
	if len(args) == 0 {
		groups = nil
		for _, d := range t.trailDirs() {
			groups = append(groups, []string{d})
		}
	} else if _, err := t.paths(args); err != nil {
		return nil, err
	}
	trails := make([]query.Trail, 0, len(groups))
	for _, paths := range groups {
		files, err := query.Discover(paths)
		if err != nil {
			return nil, failf("%v (pass --dir, --data or PATH arguments)", err)
		}
		name := strings.Join(paths, ", ")
		if len(files) == 0 {
			return nil, failf("no audit files in %s (pass --dir, --data or PATH arguments)", name)
		}
		trails = append(trails, query.Trail{Name: name, Files: files})
	}
	return trails, nil
}

func aqUsagef(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// aqWarn prints a non-fatal problem to stderr.
func aqWarn(msg string) { fmt.Fprintln(os.Stderr, "portcullis: warning:", msg) }

// aqIsTerminal reports whether w is a character device (a terminal), the
// only place colour is written to; NO_COLOR turns it off.
func aqIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func auditQueryCommand() *cobra.Command {
	var (
		trail                          aqTrail
		since, until, ip, sev, countBy string
		f                              query.Filter
		events                         []string
		asJSON, stats, noIndex         bool
		limit                          int
	)
	cmd := &cobra.Command{
		Use:   "query [PATH...]",
		Short: "filter the audit trail: a table for people, JSON lines with --json",
		Long: `Filter the audit trail. All filters must hold. PATH arguments are audit
files (plain or .gz) or directories; the default is <data>/audit. Files are
read in trail order: rotated files by first sequence number, then audit.log.

Each node of a cluster keeps its own trail. Repeat --data (or --dir) to read
several: their lines are merged by time (each trail's own order kept) and the
table gets a NODE column; --node keeps one node's lines.

Times (--since, --until) are RFC 3339, a date (2006-01-02, UTC), or an age
such as 30m, 1h, 7d meaning that long ago. --ip takes an address or a CIDR
and matches ip or peer_ip; IPv4-mapped IPv6 forms count as IPv4. --topic is
exact or a glob where * matches anything. --severity is a minimum.

--json prints the matching lines exactly as written. --count-by prints how
many events there are per value (summary events count as the occurrences
they fold), most first. --limit keeps the first N matches (or top N counts).`,
		Example: `  portcullis audit query --since 1h --severity warning
  portcullis audit query --ip 203.0.113.0/24 --event auth_failed,conn_rejected --json
  portcullis audit query --since 7d --count-by reason
  portcullis audit query --data /srv/node-a --data /srv/node-b --since 1h --event ban`,
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now()
			var err error
			if since != "" {
				if f.Since, err = query.ParseTime(since, now); err != nil {
					return aqUsagef("--since: %v", err)
				}
			}
			if until != "" {
				if f.Until, err = query.ParseTime(until, now); err != nil {
					return aqUsagef("--until: %v", err)
				}
			}
			if ip != "" {
				if f.IP, err = query.ParseIP(ip); err != nil {
					return aqUsagef("--ip: %v", err)
				}
			}
			if sev != "" {
				var ok bool
				if f.MinSeverity, ok = audit.ParseSeverity(strings.ToLower(sev)); !ok {
					return aqUsagef("--severity: invalid severity %q: want info, notice, warning or critical", sev)
				}
			}
			for _, e := range events {
				if e = strings.TrimSpace(e); e != "" {
					f.Events = append(f.Events, e)
				}
			}
			var key query.Key
			if countBy != "" {
				if key, err = query.ParseKey(countBy); err != nil {
					return aqUsagef("%v", err)
				}
			}
			if limit < 0 {
				return aqUsagef("--limit must not be negative")
			}
			trails, err := trail.trails(args)
			if err != nil {
				return err
			}
			var files []query.File // every trail's: counts need no order
			for _, tr := range trails {
				files = append(files, tr.Files...)
			}
			ctx, stop := signal.NotifyContext(aqContext(cmd), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()
			bw := bufio.NewWriterSize(out, 64<<10)
			o := query.Options{Filter: f, Limit: limit, Warn: aqWarn, NoIndex: noIndex}
			start := time.Now()
			var st query.Stats
			switch {
			case key != 0:
				var rows []query.Count
				rows, st, err = query.CountBy(ctx, files, o, key)
				if err == nil {
					err = aqWriteCounts(bw, key, rows, asJSON)
				}
			case asJSON && len(trails) > 1:
				st, err = query.Merge(ctx, trails, o, func(_ int, line []byte) error {
					bw.Write(line)
					return bw.WriteByte('\n')
				})
			case asJSON:
				st, err = query.Lines(ctx, files, o, func(line []byte) error {
					bw.Write(line)
					return bw.WriteByte('\n')
				})
			case len(trails) > 1:
				t := query.NewTable(bw, aqIsTerminal(out)).WithNode()
				st, err = query.MergeRecords(ctx, trails, o, query.FieldsTable, func(_ int, r *query.Record) error {
					t.Add(r)
					return nil
				})
				if ferr := t.Flush(); err == nil {
					err = ferr
				}
			default:
				t := query.NewTable(bw, aqIsTerminal(out))
				st, err = query.Records(ctx, files, o, query.FieldsTable, func(r *query.Record) error {
					t.Add(r)
					return nil
				})
				if ferr := t.Flush(); err == nil {
					err = ferr
				}
			}
			if ferr := bw.Flush(); err == nil {
				err = ferr
			}
			if stats {
				el := time.Since(start)
				fmt.Fprintf(os.Stderr, "%d files read, %d skipped by time, %d answered by their .idx; %d lines, %.1f MB in %v (%.0f lines/s, %.0f MB/s); %d matched\n",
					st.Files, st.Skipped, st.Indexed, st.Lines, float64(st.Bytes)/1e6, el.Round(time.Millisecond),
					float64(st.Lines)/el.Seconds(), float64(st.Bytes)/1e6/el.Seconds(), st.Matched)
			}
			if err == nil && st.Matched == 0 && !asJSON {
				fmt.Fprintln(os.Stderr, "no matching events")
			}
			if ctx.Err() != nil && aqContext(cmd).Err() == nil {
				return nil // interrupted by the user
			}
			if err != nil {
				return failf("audit query: %v", err)
			}
			if st.Errors > 0 {
				return failf("%d audit file(s) could not be read to the end (see the warnings above)", st.Errors)
			}
			return nil
		},
	}
	trail.flags(cmd, true)
	fl := cmd.Flags()
	fl.StringVar(&since, "since", "", "only events at or after T (RFC 3339, date, or age like 1h, 7d)")
	fl.StringVar(&until, "until", "", "only events before T (RFC 3339, date, or age like 30m)")
	fl.StringVar(&ip, "ip", "", "only events whose ip or peer_ip is this address or lies in this CIDR, and bans and unbans of ranges inside it")
	fl.StringVar(&f.User, "user", "", "only events of this userId")
	fl.StringSliceVar(&events, "event", nil, "only these events (repeatable or comma-separated)")
	fl.StringVar(&sev, "severity", "", "minimum severity: info, notice, warning or critical")
	fl.StringVar(&f.Topic, "topic", "", "only this topic (exact, or a glob with *)")
	fl.StringVar(&f.Reason, "reason", "", "only events with this reason")
	fl.StringVar(&f.Node, "node", "", "only events written by this node (the line's node)")
	fl.BoolVar(&asJSON, "json", false, "print the matching lines as written (JSON lines)")
	fl.StringVar(&countBy, "count-by", "", "count events by ip, user, reason, event or node instead of listing them")
	fl.IntVar(&limit, "limit", 0, "stop after N events (with --count-by: the top N values); 0 means all")
	fl.BoolVar(&stats, "stats", false, "print what was read and how fast to stderr")
	fl.BoolVar(&noIndex, "no-index", false, "read every file, ignoring the per-file summaries (.idx) that let rotated files be skipped or counted unread")
	return cmd
}

func aqContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

func aqWriteCounts(w io.Writer, key query.Key, rows []query.Count, asJSON bool) error {
	if !asJSON {
		return query.WriteCounts(w, key, rows)
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, r := range rows {
		if err := enc.Encode(map[string]any{key.String(): r.Value, "count": r.N}); err != nil {
			return err
		}
	}
	return nil
}

func auditTailCommand() *cobra.Command {
	var (
		trail          aqTrail
		follow, asJSON bool
		n              int
		interval       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "tail [PATH]",
		Short: "show the newest audit events; --follow keeps printing new ones",
		Long: `Show the last N events of the audit trail (default <data>/audit; PATH is an
audit directory or file). With --follow, keep printing events as they are
appended, following audit.log across rotation, until interrupted (exit 0).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if n < 0 {
				return aqUsagef("-n must not be negative")
			}
			paths, err := trail.paths(args)
			if err != nil {
				return err
			}
			path := paths[0]
			active := path
			st, err := os.Stat(path)
			switch {
			case err == nil && st.IsDir():
				active = filepath.Join(path, query.ActiveName)
			case err != nil && !follow:
				return failf("audit trail %q: %v (pass --dir, --data or a PATH)", path, err)
			case err != nil:
				return failf("audit trail %q: %v (pass --dir, --data or a PATH; --follow waits for audit.log, not for its directory)", path, err)
			}
			var fo *query.Follower
			var off int64
			if follow {
				if fo, off, err = query.NewFollower(active, aqWarn); err != nil {
					return failf("follow %s: %v", active, err)
				}
				defer fo.Close()
			}
			files, err := query.Discover([]string{path})
			if err != nil {
				return failf("%v", err)
			}
			if fo != nil {
				for i := range files {
					if filepath.Clean(files[i].Path) == filepath.Clean(active) {
						files[i].Limit = off
						if off == 0 {
							files = append(files[:i], files[i+1:]...)
						}
						break
					}
				}
			}
			if len(files) == 0 && !follow {
				return failf("no audit files in %s (pass --dir, --data or a PATH)", path)
			}
			lines, err := query.LastLines(files, n, aqWarn)
			if err != nil {
				return failf("%v", err)
			}
			out := cmd.OutOrStdout()
			bw := bufio.NewWriterSize(out, 64<<10)
			var t *query.Table
			if !asJSON {
				t = query.NewTable(bw, aqIsTerminal(out))
			}
			var rec query.Record
			emit := func(line []byte) error {
				if asJSON {
					bw.Write(line)
					return bw.WriteByte('\n')
				}
				if rec.Parse(line, query.FieldsTable) == nil {
					t.Add(&rec)
				}
				return nil
			}
			flush := func() error {
				if t != nil {
					if err := t.Flush(); err != nil {
						return err
					}
				}
				return bw.Flush()
			}
			for _, l := range lines {
				emit(l)
			}
			if err := flush(); err != nil {
				return failf("audit tail: %v", err)
			}
			if !follow {
				return nil
			}
			ctx, stop := signal.NotifyContext(aqContext(cmd), os.Interrupt, syscall.SIGTERM)
			defer stop()
			err = fo.Run(ctx, interval, func(line []byte) error {
				if err := emit(line); err != nil {
					return err
				}
				return nil
			}, flush)
			if err != nil {
				return failf("audit tail: %v", err)
			}
			return nil
		},
	}
	trail.flags(cmd, false)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing events as they are appended (across rotation) until interrupted")
	cmd.Flags().IntVarP(&n, "lines", "n", 20, "how many of the newest events to show")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the lines as written (JSON lines)")
	cmd.Flags().DurationVar(&interval, "interval", 200*time.Millisecond, "how often --follow polls for new lines")
	return cmd
}
