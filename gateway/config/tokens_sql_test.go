package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The sql token source's keys: defaults, and each mistake named at its
// file, line and column.
func TestTokensSQL(t *testing.T) {
	dir := t.TempDir()
	dsn := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsn, []byte("site:pw@tcp(127.0.0.1:3306)/site\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, []byte("site:pw@tcp(127.0.0.1:3306)/site\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	c, err := Load(write(t, "tokens:\n  source: sql\n  sql:\n    dsn_file: "+dsn+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Tokens.SQL
	want := TokensSQL{Driver: "mysql", DSNFile: dsn, Table: "portcullis_tokens",
		Columns: SQLColumns{Token: "token_sha256", User: "user_id", Topics: "topics", Expires: "expires_at", Used: "used_at"},
		Hashed:  true, Timeout: 500 * time.Millisecond, MaxOpen: 16}
	if s != want {
		t.Fatalf("defaults:\n%+v\nwant\n%+v", s, want)
	}
	c, err = Load(write(t, "tokens:\n  source: sql\n  sql:\n    driver: postgres\n    dsn_file: "+dsn+
		"\n    table: site.tokens\n    columns: {token: tok}\n    hashed: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Tokens.SQL; s.Driver != "postgres" || s.Table != "site.tokens" || s.Columns.Token != "tok" || s.Columns.User != "user_id" || s.Hashed {
		t.Fatalf("overlay: %+v", s)
	}

	cases := []struct{ name, yaml, want string }{
		{"no dsn file", "tokens:\n  source: sql\n",
			"$F (default): tokens.sql.dsn_file: is required with tokens.source sql: a file (mode 0600) whose first line is the DSN (never in this YAML)"},
		{"dsn file readable by others", "tokens:\n  source: sql\n  sql:\n    dsn_file: " + loose + "\n",
			"$F:4:5: tokens.sql.dsn_file: " + loose + " is readable by group or others (mode 0644): chmod 600 " + loose},
		{"driver", "tokens:\n  source: sql\n  sql:\n    driver: sqlite\n    dsn_file: " + dsn + "\n",
			"$F:4:5: tokens.sql.driver: \"sqlite\" must be mysql (MySQL, MariaDB) or postgres"},
		{"table", "tokens:\n  source: sql\n  sql:\n    dsn_file: " + dsn + "\n    table: \"t; DROP TABLE users\"\n",
			"$F:5:5: tokens.sql.table: \"t; DROP TABLE users\" must be an identifier or schema.table: 1 to 63 of A-Z a-z 0-9 _, not starting with a digit"},
		{"column", "tokens:\n  source: sql\n  sql:\n    dsn_file: " + dsn + "\n    columns: {used: \"used-at\"}\n",
			"$F:5:15: tokens.sql.columns.used: \"used-at\" must be an identifier: 1 to 63 of A-Z a-z 0-9 _, not starting with a digit"},
		{"timeout", "tokens:\n  source: sql\n  sql:\n    dsn_file: " + dsn + "\n    timeout: 0s\n",
			"$F:5:5: tokens.sql.timeout: must be a positive duration"},
		{"max_open", "tokens:\n  source: sql\n  sql:\n    dsn_file: " + dsn + "\n    max_open: 0\n",
			"$F:5:5: tokens.sql.max_open: 0 must be 1 to 512"},
		{"source", "tokens:\n  source: mysql\n", "$F:2:3: tokens.source: \"mysql\" must be store, jwt or sql"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := write(t, c.yaml)
			_, err := Load(p)
			if w := strings.ReplaceAll(c.want, "$F", p); err == nil || err.Error() != w {
				t.Fatalf("got  %v\nwant %s", err, w)
			}
		})
	}
}
