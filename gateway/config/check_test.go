package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The operators' mistakes `config check` (and serve, through the same
// Load) catches, each with its exact message. $F stands for the file; a
// want ending in "…" is a prefix (the rest comes from the system).
func TestCheckCatchesMistakes(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		// Duplicate keys, at any depth: YAML would keep the last silently.
		{"duplicate top-level key", "topics:\n  - match: a\ntopics:\n  - match: b\n",
			"$F:3:1: topics: duplicate key (first set at $F:1:1): YAML would keep only the last; merge them into one"},
		{"duplicate nested key", "limits:\n  max_connections: 100\n  max_connections: 200\n",
			"$F:3:3: limits.max_connections: duplicate key (first set at $F:2:3): YAML would keep only the last; merge them into one"},
		{"duplicate key in a list item", "topics:\n  - match: a\n    match: b\n",
			"$F:3:5: topics[0].match: duplicate key (first set at $F:2:5): YAML would keep only the last; merge them into one"},
		{"duplicate key in a flow mapping", "limits:\n  msg_rate: {rate: 1, rate: 2}\n",
			"$F:2:23: limits.msg_rate.rate: duplicate key (first set at $F:2:14): YAML would keep only the last; merge them into one"},
		{"duplicate key in a map value", "alerting:\n  rules:\n    - name: x\n      match: {topic: a, topic: b}\n",
			"$F:4:25: alerting.rules[0].match.topic: duplicate key (first set at $F:4:15): YAML would keep only the last; merge them into one"},

		// YAML syntax, placed at the line and its first column.
		{"bad indentation", "listen: \":8080\"\nlimits:\n  max_connections: 1\n bad: 2\n",
			"$F:4:2: YAML syntax: did not find expected key"},
		{"tab indentation", "limits:\n\tmax_connections: 5\n",
			"$F:2:1: YAML syntax: found character that cannot start any token"},
		{"unclosed flow list", "origins: [\"https://a.example\"\nlisten: \":8080\"\n",
			"$F:2:1: YAML syntax: did not find expected ',' or ']'"},
		{"list item out of line", "topics:\n  - match: a\n   subscribe: token\n",
			"$F:2:3: YAML syntax: did not find expected '-' indicator"},
		{"colon in a plain value", "listen: :80: 80\n", "$F:1:1: YAML syntax: mapping values are not allowed in this context"},
		{"unknown alias", "path: /ws\ndata_dir: *dir\n", "$F:2:11: YAML syntax: unknown anchor 'dir' referenced"},
		{"control character", "listen: \":80\x0180\"\n", "$F:1:13: control character U+0001 is not allowed in YAML"},
		{"not UTF-8", "path: \"/w\xffs\"\n", "$F:1:10: the file is not UTF-8 (byte 0xff)"},
		{"second document", "listen: \":8080\"\n---\nlisten: \":9090\"\n",
			"$F:2:1: a second YAML document: one file holds one config (remove this \"---\" line)"},

		// Listen addresses.
		{"listen without port", "listen: \"nonsense\"\n",
			"$F:1:1: listen: \"nonsense\" must be host:port, e.g. \":8080\", \"127.0.0.1:8081\" or \"[::1]:8081\" (empty host: every address)"},
		{"port not a number", "listen: \":http\"\n", "$F:1:1: listen: \":http\": port \"http\" must be a number from 1 to 65535"},
		{"port above 65535", "listen: \":65536\"\n", "$F:1:1: listen: \":65536\": port 65536 is above 65535"},
		{"port 0 on every address", "listen: \":0\"\n",
			"$F:1:1: listen: \":0\": port 0 binds a random free port nobody could find: name the port (port 0 is accepted on loopback only, for tests)"},
		{"public host name", "listen: \"gw.example.com:8080\"\n",
			"$F:1:1: listen: \"gw.example.com:8080\": host \"gw.example.com\" must be an IP address, localhost, or empty for every address"},
		{"admin host that does not resolve", "admin:\n  listen: \"no-such-host.invalid:8081\"\n",
			"$F:2:3: admin.listen: \"no-such-host.invalid:8081\": host \"no-such-host.invalid\" does not resolve (…"},
		{"public on the admin port", "listen: \"127.0.0.1:8081\"\n",
			"$F:1:1: listen: \"127.0.0.1:8081\" and admin.listen \"127.0.0.1:8081\" (at $F (default)) bind the same port 8081 on a common address: give the admin API a port of its own"},
		{"every address covers loopback", "listen: \"0.0.0.0:9000\"\nadmin: {listen: \"127.0.0.1:9000\"}\n",
			"$F:2:9: admin.listen: \"127.0.0.1:9000\" and listen \"0.0.0.0:9000\" (at $F:1:1) bind the same port 9000 on a common address: give the admin API a port of its own"},
		{"dual-stack covers IPv4", "listen: \":9000\"\nadmin: {listen: \"localhost:9000\"}\n",
			"$F:2:9: admin.listen: \"localhost:9000\" and listen \":9000\" (at $F:1:1) bind the same port 9000 on a common address: give the admin API a port of its own"},
		{"admin on every address", "admin: {listen: \":8081\"}\n",
			"$F:1:9: admin.listen: \":8081\" is reachable from other hosts, and admin.tls is not set: the admin key and every admin request would cross the network in clear; listen on 127.0.0.1 or ::1 (reach it with ssh -L), or set admin.tls"},
		{"admin on a private address", "admin: {listen: \"10.1.2.3:8081\"}\n",
			"$F:1:9: admin.listen: \"10.1.2.3:8081\" is reachable from other hosts, and admin.tls is not set: the admin key and every admin request would cross the network in clear; listen on 127.0.0.1 or ::1 (reach it with ssh -L), or set admin.tls"},
		{"admin.tls half set", "admin:\n  tls: {cert_file: a.pem}\n", "$F:2:3: admin.tls: needs both cert_file and key_file"},
		{"admin.tls unknown key", "admin:\n  tls: {cert: a.pem}\n", "$F:2:9: admin.tls.cert: unknown key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := write(t, c.yaml)
			_, err := Load(p)
			if err == nil {
				t.Fatal("accepted")
			}
			want := strings.ReplaceAll(c.want, "$F", p)
			if prefix, ok := strings.CutSuffix(want, "…"); ok {
				if !strings.HasPrefix(err.Error(), prefix) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("got  %q\nwant %q…", err, prefix)
				}
				return
			}
			if err.Error() != want {
				t.Fatalf("got  %q\nwant %q", err, want)
			}
		})
	}
}

// What must stay valid: loopback pairs on one port but distinct
// addresses, port 0 on loopback (tests), a trailing document marker.
func TestCheckAcceptsListeners(t *testing.T) {
	for _, y := range []string{
		"listen: \"127.0.0.1:0\"\nadmin: {listen: \"127.0.0.1:0\"}\n",
		"listen: \"127.0.0.2:9000\"\nadmin: {listen: \"127.0.0.1:9000\"}\n",
		"listen: \"[::1]:9000\"\nadmin: {listen: \"127.0.0.1:9000\"}\n",
		"listen: \"localhost:8080\"\nadmin: {listen: \"[::1]:8081\"}\n",
		"admin: {listen: \"localhost:8081\"}\n",
		"listen: \":8080\"\n---\n",
	} {
		if _, err := Load(write(t, y)); err != nil {
			t.Errorf("%q refused: %v", y, err)
		}
	}
}

// admin.tls: both files must exist, the key be private, and the two load
// as a pair; a good pair is accepted, also on an admin.listen other hosts
// can reach (the admin API then serves HTTPS).
func TestAdminTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePair(t, dir, "a")
	otherCert, _ := writePair(t, dir, "b")
	loose := filepath.Join(dir, "loose.key")
	raw, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(loose, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, listen := range []string{"127.0.0.1:8081", "0.0.0.0:8443"} {
		p := write(t, "admin:\n  listen: \""+listen+"\"\n  tls:\n    cert_file: "+cert+"\n    key_file: "+key+"\n")
		if _, err := Load(p); err != nil {
			t.Errorf("a good admin.tls pair on %s refused: %v", listen, err)
		}
	}
	cases := []struct {
		name, cert, key string
		want            []string
	}{
		{"missing files", filepath.Join(dir, "none.pem"), filepath.Join(dir, "none.key"), []string{
			"$F:3:5: admin.tls.cert_file: stat " + filepath.Join(dir, "none.pem") + ": no such file or directory",
			"$F:4:5: admin.tls.key_file: stat " + filepath.Join(dir, "none.key") + ": no such file or directory"}},
		{"key readable by others", cert, loose, []string{
			"$F:4:5: admin.tls.key_file: " + loose + " is readable by group or others (mode 0644): chmod 600 " + loose}},
		{"not a pair", otherCert, key, []string{
			"$F:2:3: admin.tls: cert_file " + otherCert + " and key_file " + key +
				" do not load as a certificate and its key: tls: private key does not match public key"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := write(t, "admin:\n  tls:\n    cert_file: "+c.cert+"\n    key_file: "+c.key+"\n")
			_, err := Load(p)
			want := strings.ReplaceAll(strings.Join(c.want, "\n"), "$F", p)
			if err == nil || err.Error() != want {
				t.Fatalf("got  %v\nwant %s", err, want)
			}
		})
	}
}

// Where places a key, its nearest enclosing key, or the defaults.
func TestWhere(t *testing.T) {
	p := write(t, "bans:\n  block_files: [a.txt]\ntopics:\n  - match: a\n    subscribe: public\n")
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"bans.block_files":      p + ":2:3",
		"bans.block_files[0]":   p + ":2:3",
		"topics[0].subscribe":   p + ":5:5",
		"topics[0].data_schema": p + ":3:1",
		"tokens.jwt":            p + " (default)",
	} {
		if got := c.Where(key); got != want {
			t.Errorf("Where(%q) = %q, want %q", key, got, want)
		}
	}
	if got := Default().Where("listen"); got != "(defaults)" {
		t.Errorf("Default().Where = %q", got)
	}
}

// writePair writes a self-signed ECDSA certificate valid for another hour
// and its key (0600).
func writePair(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	return writeExpiringPair(t, dir, name, time.Now().Add(time.Hour))
}
