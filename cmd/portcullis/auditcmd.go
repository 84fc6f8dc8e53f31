package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/chain"
	"github.com/portcullis-gw/portcullis/audit/verify"
)

// exitCannotVerify is the exit code of `audit verify` when the trail could
// not be checked at all (a missing directory or key, an unreadable file, a
// bad flag): neither intact (exitOK) nor broken (exitFailure), so that a
// script tells "tampered" from "wrong path". It is cobra's usage code, so
// a bad flag gives the same answer.
const exitCannotVerify = exitUsage

// cannotVerifyf is the error of a verification that could not run.
func cannotVerifyf(format string, a ...any) error {
	return &exitError{code: exitCannotVerify, err: fmt.Errorf(format, a...)}
}

// auditVerifyCommand is `portcullis audit verify [PATH...]` (docs/AUDIT.md):
// exit 0 when the trail is intact, 1 with every break as file:line: what,
// 2 when it could not be checked.
func auditVerifyCommand() *cobra.Command {
	var datas []string // one per node's data directory (auditverifytrails.go)
	var keyFile, pubFile string
	var checkpoints []string
	cmd := &cobra.Command{
		Use:   "verify [PATH...]",
		Short: "verify the audit trail's hash chain, files and signed checkpoints",
		Long: `Verify the audit trail: the HMAC chain of every line across rotated and gzip'd
files, sequence numbers, file headers and the signed checkpoints.

With no PATH, or with a directory, the whole trail in it is checked against its
checkpoints.log (and any --checkpoints). With files, just those files are checked
as one trail, in sequence order. Exit 0 when intact, 1 when anything is broken,
2 when the trail could not be checked (a missing directory or key, an unreadable
file, a bad flag).

Each node of a cluster keeps its own trail and key: repeat --data to check
several, each as its own chain with its own DIR/audit.key, one line per trail.
Exit 1 when any is broken, else 2 when any could not be checked.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(datas) > 1 {
				if err := checkOneTrailFlags(cmd, args); err != nil {
					return err
				}
				return verifyTrails(cmd.OutOrStdout(), datas)
			}
			data := datas[0]
			if keyFile == "" {
				keyFile = filepath.Join(data, "audit.key")
			}
			if pubFile == "" {
				pubFile = audit.PublicKeyFile(filepath.Join(data, "audit-checkpoint.key"))
			}
			key, err := chain.ReadKey(keyFile)
			if err != nil {
				return cannotVerifyf("audit key: %v (pass --key FILE or --data DIR)", err)
			}
			var pub ed25519.PublicKey
			if p, err := chain.ReadPublicKey(pubFile); err == nil {
				pub = p
			} else if !errors.Is(err, os.ErrNotExist) || cmd.Flags().Changed("pub") {
				return cannotVerifyf("checkpoint public key: %v", err)
			}
			var cps []string
			for _, c := range checkpoints {
				if st, err := os.Stat(c); err == nil && st.IsDir() {
					c = filepath.Join(c, chain.CheckpointsName)
				}
				cps = append(cps, c)
			}
			o := verify.Options{Key: key, PublicKey: pub, Checkpoints: cps}
			if len(args) == 0 {
				args = []string{filepath.Join(data, "audit")}
			}
			var reports []*verify.Report
			var files []string
			for _, a := range args {
				st, err := os.Stat(a)
				if err != nil {
					return cannotVerifyf("%v", err)
				}
				if !st.IsDir() {
					files = append(files, a)
					continue
				}
				r, err := verify.Dir(a, o)
				if err != nil {
					return cannotVerifyf("%v", err) // names the directory or file itself
				}
				reports = append(reports, r)
			}
			if len(files) > 0 {
				r, err := verify.Paths(files, o)
				if err != nil {
					return cannotVerifyf("%v", err)
				}
				reports = append(reports, r)
			}
			out := cmd.OutOrStdout()
			ok := true
			var lines, nfiles, problems int
			for _, r := range reports {
				for _, p := range r.Problems {
					fmt.Fprintln(out, p.String())
					if !p.Warning {
						problems++
					}
				}
				ok = ok && r.OK()
				lines += r.Lines
				nfiles += r.Files
			}
			if !ok {
				return failf("audit trail broken: %d problem(s) in %d lines, %d files", problems, lines, nfiles)
			}
			for _, r := range reports {
				fmt.Fprintln(out, intactSummary(r))
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&datas, "data", []string{defaultDataDir()}, "data directory: the trail is DIR/audit, the key DIR/audit.key; repeat to check the trails of several nodes")
	cmd.Flags().StringVar(&keyFile, "key", "", "HMAC key of the chain (default DIR/audit.key)")
	cmd.Flags().StringVar(&pubFile, "pub", "", "checkpoint public key (default DIR/audit-checkpoint.pub)")
	cmd.Flags().StringArrayVar(&checkpoints, "checkpoints", nil, "also check against this checkpoints file or directory (e.g. the off-host copy); repeatable")
	return cmd
}
