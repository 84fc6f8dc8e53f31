package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// The production binary does not carry the load generator: it is
// portcullis-bench now.
func TestHelpListsNoBench(t *testing.T) {
	root := rootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	for _, want := range []string{"serve", "audit", "token", "publish", "ban", "alert", "config", "version"} {
		if !strings.Contains(help, "\n  "+want+" ") {
			t.Errorf("--help does not list %s:\n%s", want, help)
		}
	}
	if strings.Contains(help, "bench") {
		t.Errorf("--help still lists bench:\n%s", help)
	}
	for _, c := range root.Commands() {
		if c.Name() == "bench" {
			t.Fatal("a bench command is registered")
		}
	}
	if code := Main([]string{"bench", "idle"}); code != exitUsage {
		t.Fatalf("portcullis bench idle: exit %d, want %d (unknown command)", code, exitUsage)
	}
}

// The audit tools and admin clients build for darwin and windows; only
// serve needs Linux. A cross-compile (in .ci/run) proves it builds; this
// names the package that broke it when a portable file imports the
// gateway or Linux-only code again.
func TestPortableCommandsAvoidLinuxOnlyPackages(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not on PATH: %v", err)
	}
	const mod = "github.com/portcullis-gw/portcullis/"
	linuxOnly := []string{mod + "gateway", mod + "gateway/reactor"} // epoll
	need := []string{mod + "audit/verify", mod + "audit/query", mod + "audit/chain", mod + "gateway/config"}
	for _, goos := range []string{"darwin", "windows"} {
		cmd := exec.Command(goBin, "list", "-deps", ".")
		cmd.Env = append(cmd.Environ(), "GOOS="+goos, "GOARCH=arm64")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("GOOS=%s go list -deps: %v", goos, err)
		}
		deps := map[string]bool{}
		for _, p := range strings.Fields(string(out)) {
			deps[p] = true
		}
		for _, p := range linuxOnly {
			if deps[p] {
				t.Errorf("GOOS=%s: cmd/portcullis imports %s (Linux-only): keep it behind //go:build linux", goos, p)
			}
		}
		for _, p := range need {
			if !deps[p] {
				t.Errorf("GOOS=%s: cmd/portcullis no longer builds %s", goos, p)
			}
		}
	}
}
