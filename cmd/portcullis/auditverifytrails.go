package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/chain"
	"github.com/portcullis-gw/portcullis/audit/verify"
)

// Each node of a cluster keeps its own trail, chained with its own key:
// `audit verify --data A --data B` checks each data directory's trail
// (DIR/audit) against that directory's key (DIR/audit.key), checkpoint
// public key and checkpoints.log, as a chain of its own, and reports one
// line per trail.

// checkOneTrailFlags refuses, with several --data, what names the files of
// one trail: PATH arguments, --key, --pub and --checkpoints.
func checkOneTrailFlags(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return cannotVerifyf("PATH arguments are checked as one trail with one key: with several --data, each trail is DIR/audit; verify a trail elsewhere on its own with PATH and --key")
	}
	for _, f := range []string{"key", "pub", "checkpoints"} {
		if cmd.Flags().Changed(f) {
			return cannotVerifyf("--%s applies to one trail: with several --data, each trail is checked with its own DIR/audit.key, DIR/audit-checkpoint.pub and DIR/audit/checkpoints.log; verify a trail with --%s on its own", f, f)
		}
	}
	return nil
}

// verifyTrails verifies the trail of each data directory and writes, per
// trail, its problems (file:line: what) and a summary line naming it. It
// goes on past a trail that cannot be checked. The error is exit 1 when any
// trail is broken (tampering outranks everything else), else exit 2 when
// any could not be checked.
func verifyTrails(out io.Writer, datas []string) error {
	var broken, failed []string
	for _, data := range datas {
		dir := filepath.Join(data, "audit")
		r, err := verifyDataDir(data, dir)
		if err != nil {
			fmt.Fprintf(out, "%s: could not verify: %v\n", dir, err)
			failed = append(failed, dir)
			continue
		}
		problems := 0
		for _, p := range r.Problems {
			fmt.Fprintln(out, p.String())
			if !p.Warning {
				problems++
			}
		}
		if !r.OK() {
			fmt.Fprintf(out, "%s: broken: %d problem(s) in %d lines, %d files\n", dir, problems, r.Lines, r.Files)
			broken = append(broken, dir)
			continue
		}
		fmt.Fprintf(out, "%s: %s\n", dir, intactSummary(r))
	}
	switch {
	case len(broken) > 0:
		return failf("audit trail broken: %d of %d trails (%s)", len(broken), len(datas), strings.Join(broken, ", "))
	case len(failed) > 0:
		return cannotVerifyf("could not verify %d of %d trails (%s)", len(failed), len(datas), strings.Join(failed, ", "))
	}
	return nil
}

// verifyDataDir verifies dir, the trail of the data directory data, with
// the keys kept in data.
func verifyDataDir(data, dir string) (*verify.Report, error) {
	key, err := chain.ReadKey(filepath.Join(data, "audit.key"))
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	var pub ed25519.PublicKey
	if p, err := chain.ReadPublicKey(audit.PublicKeyFile(filepath.Join(data, "audit-checkpoint.key"))); err == nil {
		pub = p
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("checkpoint public key: %w", err)
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	return verify.Dir(dir, verify.Options{Key: key, PublicKey: pub})
}

// intactSummary is the line `audit verify` prints for an intact trail.
func intactSummary(r *verify.Report) string {
	msg := fmt.Sprintf("intact: %d lines (seq %d..%d) in %d files", r.Lines, r.FirstSeq, r.LastSeq, r.Files)
	if c := r.LastCheckpoint; c != nil {
		msg += fmt.Sprintf(", %d checkpoints, last at seq %d signed %s (%s ago)", r.Checkpoints, c.Seq,
			c.Time.Format(time.RFC3339), time.Since(c.Time).Round(time.Second))
	}
	return msg
}
