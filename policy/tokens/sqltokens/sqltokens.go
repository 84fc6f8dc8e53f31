// Package sqltokens is the `sql` token source: one-use tokens the site's
// backend writes into a table of its own database (MySQL, MariaDB or
// PostgreSQL), one row per page view, and the gateway redeems once.
//
// A row holds the token (the hex SHA-256 of the token by default, see
// Options.Hashed), the user it was issued to, the topics it is bound to (a
// JSON array as text; NULL: any topic the rules let a token holder
// subscribe to), its expiry (UTC) and the time it was used (NULL until
// redeemed). Redemption is atomic in the database: PostgreSQL marks the
// row used by one `UPDATE … WHERE used IS NULL AND expires > now RETURNING
// …`, MySQL by the same UPDATE followed by a SELECT in one transaction, so
// that of any number of gateways and connections presenting a token at
// once exactly one redeems it. When the UPDATE matches nothing, a read of
// the row tells an unknown token from an expired or a spent one.
//
// The database keeps no record of who redeemed a token. The source keeps
// one, in memory and bounded, for the redemptions this node made (until
// the token expires): a connection that presents its token again (for a
// second topic) is granted it again without a database round trip, and a
// spent token presented by another connection is judged by
// tokens.Redemption.Again, naming the redeemer's address. A token spent
// through another node (or before a restart) is refused as
// token_replayed with the redeemer unknown.
//
// Every call is bounded by Options.Timeout and uses at most
// Options.MaxOpen database connections; an error or a timeout refuses the
// token with reason.TokenSourceUnavailable (fail closed), and the first
// failure of an episode, and the first success after it, are reported to
// Options.OnState once each. The DSN, which may hold a password, is
// never part of an error or a detail this package returns. The gateway
// calls Redeem off its event loops (Source.RedeemsRemotely).
//
// It imports nothing from gateway, audit or alerting.
package sqltokens

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// Driver names the database: its Go driver and its SQL dialect.
type Driver string

// The supported drivers.
const (
	MySQL    Driver = "mysql"    // MySQL and MariaDB, github.com/go-sql-driver/mysql
	Postgres Driver = "postgres" // PostgreSQL, github.com/jackc/pgx/v5
)

// ParseDriver parses a tokens.sql.driver value.
func ParseDriver(s string) (Driver, error) {
	switch d := Driver(s); d {
	case MySQL, Postgres:
		return d, nil
	}
	return "", fmt.Errorf("driver %q: supported are mysql (MySQL, MariaDB) and postgres", s)
}

// Columns are the names of the table's columns.
type Columns struct {
	Token   string // the token's hex SHA-256 (or the token, unhashed)
	User    string // the user id the token was issued to
	Topics  string // a JSON array of topics or patterns; NULL: any
	Expires string // expiry, UTC
	Used    string // when it was redeemed; NULL until then
}

// DefaultColumns are the column names of docs/TOKENS-SQL.md.
var DefaultColumns = Columns{Token: "token_sha256", User: "user_id", Topics: "topics", Expires: "expires_at", Used: "used_at"}

// Defaults of Options.
const (
	DefaultTable         = "portcullis_tokens"
	DefaultTimeout       = 500 * time.Millisecond
	DefaultMaxOpen       = 16
	DefaultMaxRemembered = 1_000_000
	// maxIdentLen is the longest identifier both dialects accept
	// (PostgreSQL's NAMEDATALEN-1 is 63, MySQL's 64).
	maxIdentLen = 63
)

// Options configure a Source.
type Options struct {
	Driver  Driver
	DSN     string // the connection string; never logged, never in an error
	Table   string // the table, optionally schema-qualified (schema.table)
	Columns Columns
	// Hashed: the token column holds the lower-case hex SHA-256 of the
	// token (recommended: a leak of the table leaks no usable token);
	// false: the token itself.
	Hashed  bool
	Timeout time.Duration // bound of each redemption, waiting for a connection included
	MaxOpen int           // database connections at most
	// MaxRemembered bounds the memory of this node's redemptions (about
	// 150 bytes each, until the token expires).
	MaxRemembered int
	// OnState is told of the transitions between a working and a failing
	// database: once when a call fails after a success (or at the
	// first call), once when one succeeds after failures. Nil: nobody.
	OnState func(State)
}

// State is a transition of the database's health, as Options.OnState
// receives it.
type State struct {
	Down bool      // true: calls began to fail; false: they work again
	At   time.Time // when the transition was seen
	// Err is the failure that began the episode (scrubbed of the DSN);
	// empty on recovery.
	Err string
	// Since is when the episode began (on recovery), Refused how many
	// redemptions it refused.
	Since   time.Time
	Refused int64
}

// ValidIdent reports whether s may name a table or a column: 1 to 63 of
// [A-Za-z0-9_], not starting with a digit. The names are written into
// the statements (quoted), so nothing else is accepted.
func ValidIdent(s string) bool {
	if s == "" || len(s) > maxIdentLen || s[0] >= '0' && s[0] <= '9' {
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

// ValidTable reports whether s may name the table: an identifier, or
// schema.table.
func ValidTable(s string) bool {
	sch, tab, qualified := strings.Cut(s, ".")
	if !qualified {
		return ValidIdent(s)
	}
	return ValidIdent(sch) && ValidIdent(tab)
}

// Source redeems the tokens of a site's table. It is safe for concurrent
// use.
type Source struct {
	opts    Options
	db      *sql.DB
	secrets []string // what scrub removes from error texts: the DSN and its password
	q       queries

	mu   sync.Mutex
	mine map[[sha256.Size]byte]redeemed // this node's redemptions, until their tokens expire; guarded by mu

	down      atomic.Bool
	downSince atomic.Int64 // Unix nanoseconds; 0 while up
	refused   atomic.Int64 // redemptions refused in the current episode
	stateMu   sync.Mutex   // serialises the transitions and their reports
}

// redeemed is one of this node's redemptions.
type redeemed struct {
	grant *tokens.Grant
	by    tokens.Redemption
}

// New opens the database of o (without connecting: the first redemption,
// or Check, does). The driver's options that the statements rely on are
// set whatever the DSN says: UTC for every time value, and (MySQL) times
// parsed into time.Time.
func New(o Options) (*Source, error) {
	if _, err := ParseDriver(string(o.Driver)); err != nil {
		return nil, fmt.Errorf("sqltokens: %w", err)
	}
	if o.Table == "" {
		o.Table = DefaultTable
	}
	if o.Columns == (Columns{}) {
		o.Columns = DefaultColumns
	}
	if !ValidTable(o.Table) {
		return nil, fmt.Errorf("sqltokens: table %q: not an identifier (1-%d of A-Z a-z 0-9 _, optionally schema.table)", o.Table, maxIdentLen)
	}
	for _, c := range o.Columns.list() {
		if !ValidIdent(c.name) {
			return nil, fmt.Errorf("sqltokens: column %s %q: not an identifier (1-%d of A-Z a-z 0-9 _)", c.role, c.name, maxIdentLen)
		}
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxOpen <= 0 {
		o.MaxOpen = DefaultMaxOpen
	}
	if o.MaxRemembered <= 0 {
		o.MaxRemembered = DefaultMaxRemembered
	}
	if strings.TrimSpace(o.DSN) == "" {
		return nil, errors.New("sqltokens: empty DSN")
	}
	s := &Source{opts: o, secrets: []string{o.DSN}, mine: make(map[[sha256.Size]byte]redeemed)}
	var err error
	switch o.Driver {
	case MySQL:
		s.db, err = s.openMySQL()
	case Postgres:
		s.db, err = s.openPostgres()
	}
	if err != nil {
		return nil, err
	}
	s.db.SetMaxOpenConns(o.MaxOpen)
	s.db.SetMaxIdleConns(o.MaxOpen)
	s.db.SetConnMaxIdleTime(5 * time.Minute)
	s.q = buildQueries(o.Driver, o.Table, o.Columns)
	return s, nil
}

func (s *Source) openMySQL() (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(s.opts.DSN)
	if err != nil {
		// The parser's errors quote no part of the DSN; scrub anyway.
		return nil, fmt.Errorf("sqltokens: the DSN is not a MySQL DSN (user:password@tcp(host:port)/database): %s", s.scrub(err))
	}
	if cfg.Passwd != "" {
		s.secrets = append(s.secrets, cfg.Passwd)
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["time_zone"] = "'+00:00'" // TIMESTAMP columns read and written in UTC
	cfg.Timeout = s.opts.Timeout         // dialing
	// The driver's own log lines (a stale pooled connection dropped) are
	// noise: every failure that matters reaches Redeem as an error.
	cfg.Logger = &mysql.NopLogger{}
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("sqltokens: MySQL DSN: %s", s.scrub(err))
	}
	return sql.OpenDB(c), nil
}

func (s *Source) openPostgres() (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(s.opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("sqltokens: the DSN is not a PostgreSQL DSN (postgres://user:password@host:port/database): %s", s.scrub(err))
	}
	if cfg.Password != "" {
		s.secrets = append(s.secrets, cfg.Password)
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["timezone"] = "UTC" // timestamptz columns read in UTC
	cfg.ConnectTimeout = s.opts.Timeout
	return stdlib.OpenDB(*cfg), nil
}

// Close closes the database's connections.
func (s *Source) Close() error { return s.db.Close() }

// RedeemsRemotely marks a token source whose Redeem waits for the network:
// the gateway calls it off its event loops.
func (s *Source) RedeemsRemotely() bool { return true }

// MaxConcurrent is how many redemptions the source serves at once (its
// pool, Options.MaxOpen): the gateway keeps no more in flight, so no
// goroutine waits for a database connection.
func (s *Source) MaxConcurrent() int { return s.opts.MaxOpen }

// QueueTimeout is how long a redemption may wait for its turn in the
// gateway before it is refused unstarted: the bound of one call
// (Options.Timeout), so a client's wait stays near that bound in a burst.
func (s *Source) QueueTimeout() time.Duration { return s.opts.Timeout }

// Warm opens up to n of the pool's connections (at most MaxOpen) before
// the first redemption needs them, so the first burst of page views does
// not pay for connecting; each attempt is bounded by Options.Timeout. It
// returns how many connections it opened; a database that is down is
// not an error here (redemptions then fail closed and report it).
func (s *Source) Warm(ctx context.Context, n int) int {
	n = min(n, s.opts.MaxOpen)
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	conns := make([]*sql.Conn, 0, n)
	for range n {
		c, err := s.db.Conn(ctx)
		if err != nil {
			break
		}
		if err := c.PingContext(ctx); err != nil {
			_ = c.Close()
			break
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		_ = c.Close() // back to the pool, which keeps MaxOpen idle
	}
	return len(conns)
}

// Remembered is how many of this node's redemptions the source holds.
func (s *Source) Remembered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mine)
}

// Down reports whether the database is failing (the last call failed).
func (s *Source) Down() bool { return s.down.Load() }

// Sweep forgets the redemptions whose tokens expired before now and
// returns how many it forgot.
func (s *Source) Sweep(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sweepLocked(now)
}

func (s *Source) sweepLocked(now time.Time) int {
	n := 0
	for k, r := range s.mine {
		if !r.grant.ValidAt(now) {
			delete(s.mine, k)
			n++
		}
	}
	return n
}

// remember records this node's redemption of the token with digest sum.
// A full memory is swept first; still full, the redemption is not
// remembered (the connection then gets token_replayed for a second topic
// with that token, never a grant it should not have).
func (s *Source) remember(sum *[sha256.Size]byte, g *tokens.Grant, by tokens.Redemption, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.mine) >= s.opts.MaxRemembered && s.sweepLocked(now) == 0 {
		return
	}
	s.mine[*sum] = redeemed{grant: g, by: by}
}

// Redeem presents token for the connection p describes, with the
// semantics of tokens.Store.Redeem: the first connection anywhere redeems
// it; later presentations on that connection succeed again; elsewhere the
// token is spent (tokens.Redemption.Again). A database error or timeout
// refuses it with reason.TokenSourceUnavailable.
func (s *Source) Redeem(token string, p tokens.Presenter, now time.Time) tokens.Result {
	if token == "" {
		return tokens.Result{Reason: reason.TokenMissing, Detail: "no token"}
	}
	sum := sha256.Sum256([]byte(token))
	s.mu.Lock()
	r, ok := s.mine[sum]
	s.mu.Unlock()
	if ok {
		if !r.grant.ValidAt(now) {
			return tokens.Result{Reason: reason.TokenExpired, Detail: "token expired"}
		}
		if res := r.by.Again(p, r.grant.UserID()); res.Reason != reason.None {
			return res
		}
		return tokens.Result{Grant: r.grant}
	}
	key := token
	if s.opts.Hashed {
		key = hex.EncodeToString(sum[:])
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	row, err := s.redeem(ctx, key, now.UTC())
	if err != nil {
		return s.unavailable(err, now)
	}
	s.up(now)
	fp := hex.EncodeToString(sum[:4])
	switch row.state {
	case stateUnknown:
		return tokens.Result{Reason: reason.TokenUnknown, Detail: "no row of the token table holds this token"}
	case stateExpired:
		return tokens.Result{Reason: reason.TokenExpired, Detail: "token expired"}
	case stateSpent:
		// Redeemed by a connection of another node, or of this one before
		// a restart or beyond MaxRemembered: the redeemer is unknown.
		red := tokens.RestoredRedemption(netip.Addr{}, row.used)
		return red.Again(p, row.user)
	}
	g, detail := grantOf(row, fp)
	if g == nil {
		return tokens.Result{Reason: reason.TokenInvalid, Detail: detail}
	}
	s.remember(&sum, g, tokens.NewRedemption(p, now), now)
	return tokens.Result{Grant: g}
}

// grantOf checks a redeemed row's user and topics and returns its grant,
// or nil and why the row is unusable (a fault of the site's backend: the
// token is spent and refused).
func grantOf(r row, fp string) (*tokens.Grant, string) {
	if !topics.ValidUserID(r.user) {
		return nil, fmt.Sprintf("the row's user column is not a userId (1-%d of [A-Za-z0-9_:@-], no \".\")", topics.MaxUserIDLen)
	}
	var bound []string
	if r.topics.Valid {
		if err := json.Unmarshal([]byte(r.topics.String), &bound); err != nil {
			return nil, "the row's topics column is not a JSON array of strings (NULL for any topic)"
		}
		if len(bound) == 0 {
			return nil, "the row's topics column is an empty array: it would bind the token to nothing (NULL for any topic)"
		}
		for _, t := range bound {
			if !topics.ValidPattern(t) {
				return nil, fmt.Sprintf("the row's topics column holds %.40q, not a topic or pattern", t)
			}
		}
	}
	return tokens.NewGrant(r.user, bound, r.expires, fp), ""
}

// unavailable is the fail-closed answer to a failed call; the first
// failure of an episode is reported.
func (s *Source) unavailable(err error, now time.Time) tokens.Result {
	msg := s.scrub(err)
	if errors.Is(err, context.DeadlineExceeded) {
		msg = fmt.Sprintf("no answer within tokens.sql.timeout %s (%s)", s.opts.Timeout, msg)
	}
	s.refused.Add(1)
	if !s.down.Load() {
		s.stateMu.Lock()
		if !s.down.Load() {
			s.downSince.Store(now.UnixNano())
			s.refused.Store(1)
			s.down.Store(true)
			if s.opts.OnState != nil {
				s.opts.OnState(State{Down: true, At: now, Err: msg})
			}
		}
		s.stateMu.Unlock()
	}
	d := "token database (" + string(s.opts.Driver) + ") unavailable: " + msg
	if len(d) > 200 {
		d = d[:200]
	}
	return tokens.Result{Reason: reason.TokenSourceUnavailable, Detail: d}
}

// up ends a failing episode, if any.
func (s *Source) up(now time.Time) {
	if !s.down.Load() {
		return
	}
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	if !s.down.Load() {
		return
	}
	since := time.Unix(0, s.downSince.Swap(0))
	s.down.Store(false)
	if s.opts.OnState != nil {
		s.opts.OnState(State{At: now, Since: since, Refused: s.refused.Swap(0)})
	}
}

// scrub returns err's text without the DSN or its password.
func (s *Source) scrub(err error) string {
	msg := err.Error()
	for _, sec := range s.secrets {
		if sec != "" {
			msg = strings.ReplaceAll(msg, sec, "[redacted]")
		}
	}
	return msg
}

// States of a row presented for redemption.
const (
	stateRedeemed = iota // by this call
	stateUnknown
	stateExpired
	stateSpent
)

// row is what a redemption read of the token's row.
type row struct {
	state   int
	user    string
	topics  sql.NullString
	expires time.Time
	used    time.Time
}

// redeem runs the redemption for key (the token column's value) at now
// (UTC) and reads what it found.
func (s *Source) redeem(ctx context.Context, key string, now time.Time) (row, error) {
	var r row
	if s.opts.Driver == Postgres {
		err := s.db.QueryRowContext(ctx, s.q.redeem, key, now).Scan(&r.user, &r.topics, &r.expires)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return r, fmt.Errorf("redeem: %w", err)
		}
		return s.why(ctx, s.db, key, now)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return r, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // after Commit: a no-op
	res, err := tx.ExecContext(ctx, s.q.redeem, now, key, now)
	if err != nil {
		return r, fmt.Errorf("redeem: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return r, fmt.Errorf("redeem: rows affected: %w", err)
	}
	if n == 0 {
		r, err = s.why(ctx, tx, key, now)
		if err != nil {
			return r, err
		}
		return r, tx.Commit()
	}
	if err := tx.QueryRowContext(ctx, s.q.read, key).Scan(&r.user, &r.topics, &r.expires); err != nil {
		return r, fmt.Errorf("read the redeemed row: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return r, fmt.Errorf("commit: %w", err)
	}
	return r, nil
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// why reads the row of key that the redemption did not match: absent,
// expired, or spent.
func (s *Source) why(ctx context.Context, q querier, key string, now time.Time) (row, error) {
	var (
		r    row
		used sql.NullTime
	)
	err := q.QueryRowContext(ctx, s.q.status, key).Scan(&r.user, &r.expires, &used)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		r.state = stateUnknown
		return r, nil
	case err != nil:
		return r, fmt.Errorf("read the token's row: %w", err)
	}
	switch {
	case !r.expires.After(now):
		r.state = stateExpired
	case used.Valid:
		r.state, r.used = stateSpent, used.Time
	default:
		// Unused and live, yet the update matched nothing: only a row
		// written between the two statements; say so rather than guess.
		return r, errors.New("the token's row changed during the redemption")
	}
	return r, nil
}

// queries are the statements of one dialect.
type queries struct {
	redeem string // PostgreSQL: UPDATE … RETURNING; MySQL: the UPDATE
	read   string // MySQL: the redeemed row's user, topics, expiry
	status string // user, expiry, used of a row
	probe  string // every column, no row (Check)
}

// buildQueries writes the statements for table and cols (validated
// identifiers), quoted in the dialect of d.
func buildQueries(d Driver, table string, cols Columns) queries {
	quote := func(id string) string {
		if d == MySQL {
			return "`" + id + "`"
		}
		return `"` + id + `"`
	}
	t := quote(table)
	if sch, tab, ok := strings.Cut(table, "."); ok {
		t = quote(sch) + "." + quote(tab)
	}
	tok, usr, tps, exp, used := quote(cols.Token), quote(cols.User), quote(cols.Topics), quote(cols.Expires), quote(cols.Used)
	q := queries{
		probe: "SELECT " + tok + ", " + usr + ", " + tps + ", " + exp + ", " + used + " FROM " + t + " WHERE 1 = 0",
	}
	if d == Postgres {
		q.redeem = "UPDATE " + t + " SET " + used + " = $2 WHERE " + tok + " = $1 AND " + used + " IS NULL AND " + exp + " > $2 RETURNING " +
			usr + ", " + tps + ", " + exp
		q.status = "SELECT " + usr + ", " + exp + ", " + used + " FROM " + t + " WHERE " + tok + " = $1"
		return q
	}
	q.redeem = "UPDATE " + t + " SET " + used + " = ? WHERE " + tok + " = ? AND " + used + " IS NULL AND " + exp + " > ?"
	q.read = "SELECT " + usr + ", " + tps + ", " + exp + " FROM " + t + " WHERE " + tok + " = ?"
	q.status = "SELECT " + usr + ", " + exp + ", " + used + " FROM " + t + " WHERE " + tok + " = ?"
	return q
}

// column is a column's role (its config key) and name.
type column struct{ role, name string }

func (c Columns) list() []column {
	return []column{{"token", c.Token}, {"user", c.User}, {"topics", c.Topics}, {"expires", c.Expires}, {"used", c.Used}}
}

// Check connects to the database and verifies that the table and every
// column exist, naming what is missing: what `config check --connect`
// runs. It does not count as a redemption (no state transition).
func (s *Source) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(s.opts.Timeout, 5*time.Second))
	defer cancel()
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("connect to the %s database: %s", s.opts.Driver, s.scrub(err))
	}
	rows, err := s.db.QueryContext(ctx, s.q.probe)
	if err == nil {
		return rows.Close()
	}
	// Say which name is wrong: the table, or which columns.
	present, lerr := s.columnsOf(ctx)
	if lerr != nil {
		return fmt.Errorf("table %s: %s (listing its columns: %s)", s.opts.Table, s.scrub(err), s.scrub(lerr))
	}
	if len(present) == 0 {
		return fmt.Errorf("table %s does not exist in the database the DSN names (or this user cannot see it)", s.opts.Table)
	}
	var missing []string
	for _, c := range s.opts.Columns.list() {
		if !present[strings.ToLower(c.name)] {
			missing = append(missing, fmt.Sprintf("%s (tokens.sql.columns.%s)", c.name, c.role))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("table %s has no column %s", s.opts.Table, strings.Join(missing, ", no column "))
	}
	return fmt.Errorf("table %s: %s", s.opts.Table, s.scrub(err))
}

// columnsOf lists the table's columns (lower-cased) from
// information_schema; none: no such table.
func (s *Source) columnsOf(ctx context.Context) (map[string]bool, error) {
	sch, tab, qualified := strings.Cut(s.opts.Table, ".")
	if !qualified {
		tab = sch
	}
	var q string
	args := []any{tab}
	switch {
	case s.opts.Driver == MySQL && qualified:
		q, args = "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?", []any{sch, tab}
	case s.opts.Driver == MySQL:
		q = "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?"
	case qualified:
		q, args = "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2", []any{sch, tab}
	default:
		q = "SELECT column_name FROM information_schema.columns WHERE table_schema = ANY(current_schemas(false)) AND table_name = $1"
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		out[strings.ToLower(c)] = true
	}
	return out, rows.Err()
}
