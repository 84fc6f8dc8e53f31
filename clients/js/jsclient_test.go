package jsclient

import (
	"bytes"
	"crypto/sha512"
	"encoding/base64"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"testing"
)

// The embedded bytes are the file, and the integrity string and ETag are
// its SHA-384.
func TestIntegrity(t *testing.T) {
	b, err := os.ReadFile(Name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, Source()) {
		t.Fatal("Source() differs from portcullis.js")
	}
	sum := sha512.Sum384(b)
	want := "sha384-" + base64.StdEncoding.EncodeToString(sum[:])
	if Integrity() != want {
		t.Fatalf("Integrity() = %q, want %q", Integrity(), want)
	}
	if ETag() != `"`+want+`"` {
		t.Fatalf("ETag() = %s", ETag())
	}
}

// jsComments strips // and /* */ comments, well enough for our own file
// (it has no comment markers inside strings or regular expressions other
// than URLs, which the test below does not look at).
var jsComments = regexp.MustCompile(`/\*(?s:.*?)\*/|(^|[^:])//[^\n]*`)

// The client is one dependency-free module: no static or dynamic import,
// no require, no re-export from another module, and nothing fetched.
func TestNoDependencies(t *testing.T) {
	code := jsComments.ReplaceAllString(string(Source()), "$1")
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\s*import\b`),
		regexp.MustCompile(`\bimport\s*\(`),
		regexp.MustCompile(`\bimport\.meta\b`),
		regexp.MustCompile(`\brequire\s*\(`),
		regexp.MustCompile(`(?m)^\s*export\b[^;]*\bfrom\s*['"]`),
		regexp.MustCompile(`\b(fetch|importScripts|XMLHttpRequest|eval|Function)\s*\(`),
	} {
		if m := bad.FindString(code); m != "" {
			t.Errorf("portcullis.js has %q: it must not depend on other code", m)
		}
	}
	if !regexp.MustCompile(`(?m)^export class Client\b`).MatchString(code) {
		t.Fatal("the comment stripper ate the code: no export class Client left")
	}
}

var exported = regexp.MustCompile(`(?m)^export (?:declare )?(?:const|class|function|async function) ([A-Za-z_$][\w$]*)`)

func exports(t *testing.T, src string) []string {
	t.Helper()
	var names []string
	for _, m := range exported.FindAllStringSubmatch(src, -1) {
		names = append(names, m[1])
	}
	slices.Sort(names)
	return names
}

// portcullis.d.ts declares exactly what portcullis.js exports, and
// imports nothing either.
func TestTypesMatchExports(t *testing.T) {
	dts, err := os.ReadFile("portcullis.d.ts")
	if err != nil {
		t.Fatal(err)
	}
	js, ts := exports(t, string(Source())), exports(t, string(dts))
	if len(js) == 0 || !slices.Equal(js, ts) {
		t.Fatalf("portcullis.js exports %v, portcullis.d.ts declares %v", js, ts)
	}
	if regexp.MustCompile(`(?m)^\s*import\b|\bfrom\s*['"]`).Match(dts) {
		t.Fatal("portcullis.d.ts imports another module")
	}
}

// The client's own logic (back-off, close codes, fresh tokens, refusals,
// publish) under Node's test runner with a fake WebSocket and fake
// timers: portcullis.test.mjs. Node is required in CI (the e2e tests
// drive Chromium through it); elsewhere its absence skips.
func TestNodeUnit(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("node is missing: apt-get install nodejs")
		}
		t.Skip("node is missing: apt-get install nodejs")
	}
	out, err := exec.Command(node, "--test", "portcullis.test.mjs").CombinedOutput()
	if err != nil {
		t.Fatalf("node --test portcullis.test.mjs: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)^# pass [1-9]`).Match(out) || !regexp.MustCompile(`(?m)^# fail 0$`).Match(out) {
		t.Fatalf("node --test ran no test or failed one:\n%s", out)
	}
}
