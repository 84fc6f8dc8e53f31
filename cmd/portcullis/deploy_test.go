package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/gateway/config"
)

const deployDir = "../../deploy"

// parseUnit reads a systemd unit: sections of key=value lines, # and ;
// comments, backslash continuations. Any other line fails the test.
func parseUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	units := map[string]map[string][]string{}
	var section, pending string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := pending + strings.TrimSpace(sc.Text())
		pending = ""
		if strings.HasSuffix(line, "\\") {
			pending = strings.TrimSuffix(line, "\\") + " "
			continue
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if units[section] == nil {
				units[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || k == "" || strings.ContainsAny(k, " \t") {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			units[section][k] = append(units[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return units
}

// checkCommandLine runs args through the real command tree: the command
// and every flag must exist, and positional arguments must be accepted.
func checkCommandLine(t *testing.T, where string, args []string) {
	t.Helper()
	root := rootCommand()
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root {
		t.Fatalf("%s: %q is not a portcullis command: %v", where, args, err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatalf("%s: %q: %v", where, args, err)
	}
	if cmd.Args != nil {
		if err := cmd.Args(cmd, cmd.Flags().Args()); err != nil {
			t.Fatalf("%s: %q: %v", where, args, err)
		}
	}
}

// The systemd unit has what running the gateway needs (reload by SIGHUP,
// a stop timeout longer than the default drain, descriptors for a million
// clients) and the hardening, and its ExecStart is a real command line.
// systemd-analyze is absent in CI containers, so this is the check.
func TestSystemdUnit(t *testing.T) {
	u := parseUnit(t, filepath.Join(deployDir, "portcullis.service"))
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			t.Fatalf("no [%s] section", s)
		}
	}
	svc := u["Service"]
	one := func(k string) string {
		t.Helper()
		v := svc[k]
		if len(v) != 1 {
			t.Fatalf("[Service] %s: %d values, want exactly one", k, len(v))
		}
		return v[0]
	}
	for k, want := range map[string]string{
		"Type": "simple", "ExecReload": "/bin/kill -HUP $MAINPID", "KillSignal": "SIGTERM", "LimitNOFILE": "1048576",
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ReadWritePaths": "/var/lib/portcullis",
		"AmbientCapabilities": "", "CapabilityBoundingSet": "", "DynamicUser": "yes", "StateDirectory": "portcullis",
	} {
		if got := one(k); got != want {
			t.Errorf("[Service] %s=%q, want %q", k, got, want)
		}
	}
	stop, err := strconv.Atoi(one("TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	if drain := config.Default().Shutdown.Drain; time.Duration(stop)*time.Second <= drain {
		t.Errorf("TimeoutStopSec=%d does not outlast the default shutdown.drain %s", stop, drain)
	}
	exec := strings.Fields(one("ExecStart"))
	if exec[0] != "/usr/local/bin/portcullis" {
		t.Errorf("ExecStart runs %s", exec[0])
	}
	checkCommandLine(t, "ExecStart", exec[1:])
	if got := u["Install"]["WantedBy"]; len(got) != 1 || got[0] != "multi-user.target" {
		t.Errorf("[Install] WantedBy=%q", got)
	}
}

// The Dockerfile copies only paths that exist in the repository (the
// build context is its root), its commands are real command lines, and
// the config it ships loads.
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(raw), "\\\n", " ")
	var copies, froms int
	var entry, cmd, health []string
	exposed := map[string]bool{}
	for n, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		where := "Dockerfile:" + strconv.Itoa(n+1)
		execForm := func(s string) []string {
			var v []string
			if err := json.Unmarshal([]byte(strings.TrimSpace(s)), &v); err != nil {
				t.Fatalf("%s: not the exec (JSON) form: %v", where, err)
			}
			return v
		}
		rest := strings.TrimSpace(strings.TrimPrefix(line, f[0]))
		switch f[0] {
		case "FROM":
			froms++
		case "COPY":
			if strings.HasPrefix(rest, "--from=") {
				continue
			}
			copies++
			for _, src := range f[1 : len(f)-1] {
				if _, err := os.Stat(filepath.Join("../..", src)); err != nil {
					t.Errorf("%s: COPY source %s: %v", where, src, err)
				}
			}
		case "RUN":
			for _, w := range f[1:] {
				if strings.HasPrefix(w, "deploy/") {
					if _, err := os.Stat(filepath.Join("../..", w)); err != nil {
						t.Errorf("%s: runs %s: %v", where, w, err)
					}
				}
			}
			if i := strings.Index(rest, "./cmd/"); i >= 0 {
				pkg := strings.Fields(rest[i:])[0]
				if _, err := os.Stat(filepath.Join("../..", pkg, "main.go")); err != nil {
					t.Errorf("%s: builds %s: %v", where, pkg, err)
				}
			}
		case "ENTRYPOINT":
			entry = execForm(rest)
		case "CMD":
			cmd = execForm(rest)
		case "HEALTHCHECK":
			_, c, ok := strings.Cut(rest, " CMD ")
			if !ok {
				t.Fatalf("%s: HEALTHCHECK without CMD", where)
			}
			health = execForm(c)
		case "EXPOSE":
			for _, p := range f[1:] {
				exposed[p] = true
			}
		case "USER":
			if strings.HasPrefix(rest, "0") || strings.HasPrefix(rest, "root") {
				t.Errorf("%s: runs as root", where)
			}
		}
	}
	if froms < 2 || copies == 0 {
		t.Fatalf("want a multi-stage build: %d FROM, %d COPY from the context", froms, copies)
	}
	if len(entry) != 1 || entry[0] != "/usr/local/bin/portcullis" {
		t.Fatalf("ENTRYPOINT %q", entry)
	}
	checkCommandLine(t, "CMD", cmd)
	checkCommandLine(t, "HEALTHCHECK", health[1:])
	if health[0] != entry[0] || !strings.HasSuffix(health[len(health)-1], ":8080/healthz") {
		t.Errorf("HEALTHCHECK %q does not probe /healthz on the public port", health)
	}

	// The shipped config is the one CMD names, and it loads.
	cfg, err := config.Load(filepath.Join(deployDir, "portcullis.yaml"))
	if err != nil {
		t.Fatalf("deploy/portcullis.yaml: %v", err)
	}
	if cmd[len(cmd)-1] != "/etc/portcullis/portcullis.yaml" || cfg.DataDir != "/var/lib/portcullis" {
		t.Errorf("CMD %q, data_dir %q", cmd, cfg.DataDir)
	}
	for _, l := range []string{cfg.Listen, cfg.Admin.Listen} {
		if port := l[strings.LastIndexByte(l, ':')+1:]; !exposed[port] {
			t.Errorf("listener %s: port not EXPOSEd", l)
		}
	}
}
