package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// modulePath is the Go module of the gateway's source tree.
const modulePath = "github.com/portcullis-gw/portcullis"

// gatewayExe is the portcullis binary startGateway runs; run sets it
// before any bench starts.
var gatewayExe string

// serverCPUs is --server-cpus: the CPU list the servers run on ("" any).
var serverCPUs string

// noIOURing is --no-io-uring: the gateway's config says io_uring: false.
var noIOURing bool

// serverCommand is exec.Command(bin, args...) for a server, under
// `taskset -c serverCPUs` when --server-cpus is set (set before the exec,
// so that the Go runtime of the server sizes itself to those CPUs).
func serverCommand(bin string, args ...string) *exec.Cmd {
	if serverCPUs == "" {
		return exec.Command(bin, args...)
	}
	return exec.Command("taskset", append([]string{"-c", serverCPUs, bin}, args...)...)
}

// gatewayBinary is the portcullis binary a run uses.
type gatewayBinary struct {
	path    string // absolute path of the binary
	how     string // how it was found, as printed
	version string // its `portcullis version` line
	tmp     string // directory the binary was built into for this run, or ""
}

// remove deletes a binary built for this run.
func (b gatewayBinary) remove() {
	if b.tmp != "" {
		os.RemoveAll(b.tmp)
	}
}

// locateGateway finds the portcullis binary the benches start, in the
// order a user of the bench expects:
//
//  1. flag, the --gateway value, when set;
//  2. portcullis next to self (the running executable), as `go install
//     ./cmd/...` or a release archive puts the two;
//  3. when wd is inside the gateway's source tree: portcullis built from it
//     with `go build` into a temporary directory, so that
//     `go run ./cmd/portcullis-bench` measures the code checked out rather
//     than an older portcullis found on PATH;
//  4. portcullis on PATH.
//
// The binary must answer `portcullis version`: a path that is not a
// portcullis binary is refused before any bench starts. Progress of a
// build is written to log.
func locateGateway(flag, self, wd string, log io.Writer) (gatewayBinary, error) {
	if flag != "" {
		p, err := filepath.Abs(flag)
		if err != nil {
			return gatewayBinary{}, fmt.Errorf("--gateway %s: %w", flag, err)
		}
		if err := executable(p); err != nil {
			return gatewayBinary{}, fmt.Errorf("--gateway: %w", err)
		}
		return withVersion(gatewayBinary{path: p, how: "--gateway"})
	}
	if self != "" {
		p := filepath.Join(filepath.Dir(self), "portcullis")
		if executable(p) == nil {
			return withVersion(gatewayBinary{path: p, how: "next to " + filepath.Base(self)})
		}
	}
	if root := sourceRoot(wd); root != "" {
		if _, err := exec.LookPath("go"); err == nil {
			b, err := buildGateway(root, log)
			if err != nil {
				return gatewayBinary{}, err
			}
			return withVersion(b)
		}
	}
	if p, err := exec.LookPath("portcullis"); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		return withVersion(gatewayBinary{path: p, how: "found on PATH"})
	}
	return gatewayBinary{}, errors.New("no portcullis binary: pass --gateway PATH, put portcullis next to portcullis-bench " +
		"(go install ./cmd/...) or on PATH, or run portcullis-bench from the source tree with go installed")
}

// executable reports why p is not an executable regular file, or nil.
func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// sourceRoot returns the directory of the gateway's go.mod that holds wd,
// or "" when wd is not inside the gateway's source tree.
func sourceRoot(wd string) string {
	for dir := wd; dir != ""; {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			mod := moduleLine(f)
			f.Close()
			if mod == modulePath {
				if st, err := os.Stat(filepath.Join(dir, "cmd", "portcullis")); err == nil && st.IsDir() {
					return dir
				}
			}
			return "" // the nearest go.mod is another module's
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return ""
}

// moduleLine returns the module path a go.mod declares, or "".
func moduleLine(r io.Reader) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module"); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// buildGateway builds ./cmd/portcullis of the source tree at root into a
// new temporary directory.
func buildGateway(root string, log io.Writer) (gatewayBinary, error) {
	tmp, err := os.MkdirTemp("", "portcullis-bench-gateway")
	if err != nil {
		return gatewayBinary{}, fmt.Errorf("build directory: %w", err)
	}
	p := filepath.Join(tmp, "portcullis")
	fmt.Fprintf(log, "portcullis-bench: building the gateway from %s (go build ./cmd/portcullis)…\n", root)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", p, "./cmd/portcullis")
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		os.RemoveAll(tmp)
		return gatewayBinary{}, fmt.Errorf("go build ./cmd/portcullis in %s: %w\n%s", root, err, out.Bytes())
	}
	return gatewayBinary{path: p, how: "built from " + root, tmp: tmp}, nil
}

// withVersion asks b for its version line, which also checks that b is a
// portcullis binary.
func withVersion(b gatewayBinary) (gatewayBinary, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, b.path, "version").Output()
	v := strings.TrimSpace(string(out))
	if err != nil || !strings.HasPrefix(v, "portcullis ") {
		b.remove()
		if err == nil {
			err = fmt.Errorf("unexpected output %q", v)
		}
		return gatewayBinary{}, fmt.Errorf("%s (%s) does not answer like portcullis to `version`: %w", b.path, b.how, err)
	}
	b.version = v
	return b, nil
}
