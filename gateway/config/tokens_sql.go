package config

import (
	"strings"
	"time"
)

// TokensSQL configures the sql token source (docs/TOKENS-SQL.md): one-use
// tokens the site's backend writes into a table of its own database.
type TokensSQL struct {
	Driver  string     `yaml:"driver"`   // mysql (MySQL, MariaDB) | postgres
	DSNFile string     `yaml:"dsn_file"` // file (0600) holding the DSN; never logged
	Table   string     `yaml:"table"`    // the table, optionally schema.table
	Columns SQLColumns `yaml:"columns"`
	// Hashed: the token column holds the lower-case hex SHA-256 of the
	// token; false: the token itself.
	Hashed  bool          `yaml:"hashed"`
	Timeout time.Duration `yaml:"timeout"`  // bound of one redemption
	MaxOpen int           `yaml:"max_open"` // database connections at most
}

// SQLColumns name the columns of the sql token source's table.
type SQLColumns struct {
	Token   string `yaml:"token"`
	User    string `yaml:"user"`
	Topics  string `yaml:"topics"`
	Expires string `yaml:"expires"`
	Used    string `yaml:"used"`
}

// Bounds of tokens.sql.
const (
	maxSQLIdentLen = 63  // PostgreSQL's identifier limit (MySQL's is 64)
	maxSQLOpen     = 512 // connections; a database rarely takes more from one client
)

// validSQLIdent reports whether s may name a table or a column: 1 to 63
// of [A-Za-z0-9_], not starting with a digit (the names are written into
// the statements).
func validSQLIdent(s string) bool {
	if s == "" || len(s) > maxSQLIdentLen || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// validateTokensSQL checks tokens.sql when tokens.source is sql.
func (d *decoder) validateTokensSQL() {
	s := d.c.Tokens.SQL
	switch s.Driver {
	case "mysql", "postgres":
	default:
		d.bad("tokens.sql.driver", "%q must be mysql (MySQL, MariaDB) or postgres", s.Driver)
	}
	if s.DSNFile == "" {
		d.bad("tokens.sql.dsn_file", "is required with tokens.source sql: a file (mode 0600) whose first line is the DSN (never in this YAML)")
	} else if _, err := ReadSecretFile(s.DSNFile); err != nil {
		d.bad("tokens.sql.dsn_file", "%v", err)
	}
	sch, tab, qualified := strings.Cut(s.Table, ".")
	if !validSQLIdent(sch) || qualified && !validSQLIdent(tab) {
		d.bad("tokens.sql.table", "%q must be an identifier or schema.table: 1 to %d of A-Z a-z 0-9 _, not starting with a digit", s.Table, maxSQLIdentLen)
	}
	for _, c := range [...]struct{ key, v string }{
		{"token", s.Columns.Token}, {"user", s.Columns.User}, {"topics", s.Columns.Topics},
		{"expires", s.Columns.Expires}, {"used", s.Columns.Used},
	} {
		if !validSQLIdent(c.v) {
			d.bad("tokens.sql.columns."+c.key, "%q must be an identifier: 1 to %d of A-Z a-z 0-9 _, not starting with a digit", c.v, maxSQLIdentLen)
		}
	}
	if s.Timeout <= 0 {
		d.bad("tokens.sql.timeout", "must be a positive duration")
	} else if s.Timeout > time.Minute {
		d.bad("tokens.sql.timeout", "%s is above 1m: a client would wait that long for its subscription", s.Timeout)
	}
	if s.MaxOpen <= 0 || s.MaxOpen > maxSQLOpen {
		d.bad("tokens.sql.max_open", "%d must be 1 to %d", s.MaxOpen, maxSQLOpen)
	}
}
