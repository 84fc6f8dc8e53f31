package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHelpListsBenches(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != exitOK {
		t.Fatalf("--help: exit %d, %s", code, errb.String())
	}
	help := out.String()
	for _, want := range []string{"\n  idle ", "\n  fanout ", "\n  handshake ", "\n  flood ", "\n  stall ", "--gateway", "PORTCULLIS_BENCH_CPUPROFILE"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q:\n%s", want, help)
		}
	}
	if strings.Contains(help, "worker") {
		t.Errorf("--help lists the hidden worker:\n%s", help)
	}
	out.Reset()
	if code := run([]string{"fanout", "--help"}, &out, &errb); code != exitOK ||
		!strings.Contains(out.String(), "--subs") || !strings.Contains(out.String(), "--proto") {
		t.Fatalf("fanout --help: exit %d\n%s", code, out.String())
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{{"nosuch"}, {"idle", "--nosuch"}, {"idle", "extra"}, {"--client-nice", "20", "fanout"}, {"stall", "--client-nice", "-1"}} {
		var errb bytes.Buffer
		if code := run(args, io.Discard, &errb); code != exitUsage {
			t.Errorf("%q: exit %d, want %d (%s)", args, code, exitUsage, errb.String())
		}
	}
}

// fakeGateway writes an executable named name in dir that prints say.
func fakeGateway(t *testing.T, dir, name, say string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho '"+say+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLocateGateway(t *testing.T) {
	const v = "portcullis 9.9.9 (commit abc, go1.26)"
	outside := t.TempDir() // not inside any source tree
	t.Setenv("PATH", t.TempDir())

	// Nothing anywhere: an error that says what to do.
	self := filepath.Join(t.TempDir(), "portcullis-bench")
	if _, err := locateGateway("", self, outside, io.Discard); err == nil || !strings.Contains(err.Error(), "--gateway") {
		t.Fatalf("no gateway anywhere: %v", err)
	}

	// On PATH.
	pathDir := t.TempDir()
	onPath := fakeGateway(t, pathDir, "portcullis", v)
	t.Setenv("PATH", pathDir)
	b, err := locateGateway("", self, outside, io.Discard)
	if err != nil || b.path != onPath || b.how != "found on PATH" || b.version != v {
		t.Fatalf("PATH: %+v %v", b, err)
	}

	// Next to portcullis-bench wins over PATH.
	sibling := fakeGateway(t, filepath.Dir(self), "portcullis", v)
	b, err = locateGateway("", self, outside, io.Discard)
	if err != nil || b.path != sibling || b.how != "next to portcullis-bench" {
		t.Fatalf("sibling: %+v %v", b, err)
	}

	// --gateway wins over both; a relative path is made absolute.
	flagDir := t.TempDir()
	flagged := fakeGateway(t, flagDir, "gw", v)
	t.Chdir(flagDir)
	b, err = locateGateway("gw", self, outside, io.Discard)
	if err != nil || b.path != flagged || b.how != "--gateway" {
		t.Fatalf("--gateway: %+v %v", b, err)
	}

	// --gateway to something missing, not executable, or not portcullis.
	if _, err := locateGateway(filepath.Join(flagDir, "missing"), self, outside, io.Discard); err == nil {
		t.Fatal("missing --gateway accepted")
	}
	plain := filepath.Join(flagDir, "plain")
	if err := os.WriteFile(plain, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := locateGateway(plain, self, outside, io.Discard); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Fatalf("non-executable --gateway: %v", err)
	}
	other := fakeGateway(t, flagDir, "other", "hello")
	if _, err := locateGateway(other, self, outside, io.Discard); err == nil || !strings.Contains(err.Error(), "does not answer like portcullis") {
		t.Fatalf("non-portcullis --gateway: %v", err)
	}
}

func TestSourceRoot(t *testing.T) {
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "cmd", "portcullis"), 0o755); err != nil {
		t.Fatal(err)
	}
	deep := filepath.Join(tree, "policy", "bans")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := sourceRoot(deep); got != "" {
		t.Fatalf("no go.mod: %q", got)
	}
	if err := os.WriteFile(filepath.Join(tree, "go.mod"), []byte("// x\nmodule "+modulePath+"\n\ngo 1.26.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := sourceRoot(deep); got != tree {
		t.Fatalf("inside the tree: %q, want %q", got, tree)
	}
	// A nested module of another name hides the tree.
	if err := os.WriteFile(filepath.Join(deep, "go.mod"), []byte("module example.com/other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := sourceRoot(deep); got != "" {
		t.Fatalf("another module: %q", got)
	}
}

// From the source tree, with no binary next to the bench, the gateway is
// built from the checked-out code, answers `version`, and is removed after.
func TestLocateGatewayBuildsFromSource(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the gateway")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", filepath.Join(t.TempDir())+string(os.PathListSeparator)+os.Getenv("PATH"))
	fakeGateway(t, filepath.SplitList(os.Getenv("PATH"))[0], "portcullis", "portcullis 0.0.0-stale (commit old, go)")
	var log bytes.Buffer
	b, err := locateGateway("", filepath.Join(t.TempDir(), "portcullis-bench"), wd, &log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.remove()
	if !strings.HasPrefix(b.how, "built from ") || b.tmp == "" || !strings.HasPrefix(b.version, "portcullis ") || strings.Contains(b.version, "stale") {
		t.Fatalf("built: %+v", b)
	}
	if !strings.Contains(log.String(), "go build ./cmd/portcullis") {
		t.Fatalf("build not announced: %q", log.String())
	}
	b.remove()
	if _, err := os.Stat(b.tmp); !os.IsNotExist(err) {
		t.Fatalf("build directory left behind: %v", err)
	}
}
