package sqltokens

import (
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/sqltest"
	"github.com/portcullis-gw/portcullis/policy/tokens"
)

// kinds are the two servers every database test runs against.
var kinds = []sqltest.Kind{sqltest.MariaDB, sqltest.Postgres}

// fixture is a database with the documented table and a source on it.
type fixture struct {
	t   testing.TB
	srv *sqltest.Server
	db  *sql.DB
	src *Source

	mu     sync.Mutex
	states []State
}

func newFixture(t testing.TB, k sqltest.Kind, o Options) *fixture {
	t.Helper()
	f := &fixture{t: t, srv: sqltest.Start(t, k)}
	f.srv.Exec(t, sqltest.DocSchema(t, k, "../../../docs/TOKENS-SQL.md")...)
	f.db = f.srv.Open(t)
	f.src = f.source(o)
	return f
}

// source opens another source (another node) on the fixture's database.
func (f *fixture) source(o Options) *Source {
	f.t.Helper()
	o.Driver, o.DSN = Driver(f.srv.Kind), f.srv.DSN
	if o.OnState == nil {
		o.OnState = func(s State) { f.mu.Lock(); f.states = append(f.states, s); f.mu.Unlock() }
	}
	src, err := New(o)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = src.Close() })
	return src
}

func (f *fixture) transitions() []State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]State(nil), f.states...)
}

// insert writes a row for a new token and returns the token. hashed:
// the row holds its digest.
func (f *fixture) insert(user, topics string, expires time.Time, hashed bool) string {
	f.t.Helper()
	var raw [tokens.TokenBytes]byte
	_, _ = rand.Read(raw[:])
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	key := tok
	if hashed {
		sum := sha256.Sum256([]byte(tok))
		key = hex.EncodeToString(sum[:])
	}
	var top any
	if topics != "" {
		top = topics
	}
	q := "INSERT INTO portcullis_tokens (token_sha256, user_id, topics, expires_at) VALUES (?, ?, ?, ?)"
	if f.srv.Kind == sqltest.Postgres {
		q = "INSERT INTO portcullis_tokens (token_sha256, user_id, topics, expires_at) VALUES ($1, $2, $3, $4)"
	}
	if _, err := f.db.Exec(q, key, user, top, expires.UTC().Format("2006-01-02 15:04:05")); err != nil {
		f.t.Fatalf("insert a token row: %v", err)
	}
	return tok
}

func presenter(conn uint64, addr, user string) tokens.Presenter {
	return tokens.Presenter{Conn: conn, Addr: netip.MustParseAddr(addr), UserID: user}
}

func TestRedeem(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			f := newFixture(t, k, Options{Hashed: true})
			now := time.Now()
			hour := now.Add(time.Hour)

			tok := f.insert("42", `["news","user.42.**"]`, hour, true)
			res := f.src.Redeem(tok, presenter(1, "198.51.100.7", "42"), now)
			if res.Reason != reason.None || res.Grant == nil {
				t.Fatalf("first redemption: %+v", res)
			}
			g := res.Grant
			sum := sha256.Sum256([]byte(tok))
			if g.UserID() != "42" || g.FP() != hex.EncodeToString(sum[:4]) || !g.Allows("news", "42") ||
				!g.Allows("user.42.inbox", "42") || g.Allows("other", "42") {
				t.Fatalf("grant: user %q fp %q, allows news %v", g.UserID(), g.FP(), g.Allows("news", "42"))
			}
			if d := time.Unix(0, g.Expires).Sub(hour); d < -time.Second || d > time.Second {
				t.Fatalf("grant expires %v, want %v", time.Unix(0, g.Expires), hour)
			}
			var used sql.NullTime
			q := "SELECT used_at FROM portcullis_tokens WHERE token_sha256 = ?"
			if k == sqltest.Postgres {
				q = "SELECT used_at FROM portcullis_tokens WHERE token_sha256 = $1"
			}
			if err := f.db.QueryRow(q, hex.EncodeToString(sum[:])).Scan(&used); err != nil || !used.Valid {
				t.Fatalf("used_at after the redemption: %v %v", used, err)
			}

			// The same connection again (a second topic): granted.
			if r := f.src.Redeem(tok, presenter(1, "198.51.100.7", "42"), now); r.Grant != g {
				t.Fatalf("same connection again: %+v", r)
			}
			// Another connection, same address and user: a reconnect.
			r := f.src.Redeem(tok, presenter(2, "198.51.100.7", "42"), now)
			if r.Reason != reason.TokenReplayed || r.Detail != tokens.DetailReconnect ||
				r.Spent.By != netip.MustParseAddr("198.51.100.7") {
				t.Fatalf("replay from the same address: %+v", r)
			}
			// Another address: theft.
			if r := f.src.Redeem(tok, presenter(3, "203.0.113.9", "42"), now); r.Reason != reason.TokenTheft || r.Detail != tokens.DetailOtherAddress {
				t.Fatalf("replay from another address: %+v", r)
			}
			// Another node (or this one after a restart): spent, redeemer unknown.
			other := f.source(Options{Hashed: true})
			if r := other.Redeem(tok, presenter(1, "198.51.100.7", "42"), now); r.Reason != reason.TokenReplayed ||
				r.Detail != tokens.DetailUnknownSide || r.Spent.At.IsZero() {
				t.Fatalf("replay through another node: %+v", r)
			}

			// Wrong user: the token is spent and its grant names its user,
			// which the gateway compares with the claimed one.
			tok2 := f.insert("42", "", hour, true)
			r = f.src.Redeem(tok2, presenter(4, "198.51.100.7", "43"), now)
			if r.Grant == nil || r.Grant.UserID() != "42" || r.Grant.Bound() {
				t.Fatalf("presented as another user: %+v", r)
			}
			if r := f.src.Redeem(tok2, presenter(5, "198.51.100.7", "42"), now); r.Reason != reason.TokenReplayed {
				t.Fatalf("after a presentation as another user: %+v", r)
			}

			// Expired, unknown, missing.
			old := f.insert("42", "", now.Add(-time.Minute), true)
			if r := f.src.Redeem(old, presenter(6, "198.51.100.7", "42"), now); r.Reason != reason.TokenExpired {
				t.Fatalf("expired row: %+v", r)
			}
			if r := f.src.Redeem("no-such-token-at-all-0123456789ab", presenter(6, "198.51.100.7", "42"), now); r.Reason != reason.TokenUnknown {
				t.Fatalf("unknown token: %+v", r)
			}
			if r := f.src.Redeem("", presenter(6, "198.51.100.7", "42"), now); r.Reason != reason.TokenMissing {
				t.Fatalf("no token: %+v", r)
			}
			// An expired remembered token is expired, not granted.
			if r := f.src.Redeem(tok, presenter(1, "198.51.100.7", "42"), hour.Add(time.Second)); r.Reason != reason.TokenExpired {
				t.Fatalf("remembered token after its expiry: %+v", r)
			}
			if n := f.src.Sweep(hour.Add(time.Second)); n != 2 || f.src.Remembered() != 0 {
				t.Fatalf("sweep forgot %d, %d left; want 2, 0", n, f.src.Remembered())
			}

			// Rows the site wrote wrong: refused as token_invalid.
			for _, bad := range []struct{ user, topics string }{{"42", "news"}, {"42", "[]"}, {"42", `["a..b"]`}, {"a.b", ""}} {
				tk := f.insert(bad.user, bad.topics, hour, true)
				if r := f.src.Redeem(tk, presenter(7, "198.51.100.7", "42"), now); r.Reason != reason.TokenInvalid || r.Detail == "" {
					t.Fatalf("row user %q topics %q: %+v", bad.user, bad.topics, r)
				}
			}
			if s := f.transitions(); len(s) != 0 {
				t.Fatalf("state transitions without a failure: %+v", s)
			}
		})
	}
}

func TestRedeemUnhashed(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			f := newFixture(t, k, Options{Hashed: false})
			now := time.Now()
			tok := f.insert("7", "", now.Add(time.Hour), false)
			if r := f.src.Redeem(tok, presenter(1, "198.51.100.7", "7"), now); r.Grant == nil {
				t.Fatalf("unhashed token: %+v", r)
			}
			// The collation is binary: another case is another token.
			tok2 := f.insert("7", "", now.Add(time.Hour), false)
			if r := f.src.Redeem(strings.ToUpper(tok2), presenter(2, "198.51.100.7", "7"), now); r.Reason != reason.TokenUnknown {
				t.Fatalf("upper-cased unhashed token: %+v", r)
			}
			// A hashed source does not take the token itself for its digest.
			hashed := f.source(Options{Hashed: true})
			if r := hashed.Redeem(tok2, presenter(3, "198.51.100.7", "7"), now); r.Reason != reason.TokenUnknown {
				t.Fatalf("unhashed row through a hashed source: %+v", r)
			}
		})
	}
}

// TestRedeemConcurrent: 50 connections (on 5 nodes) present one token at
// once; exactly one redeems it.
func TestRedeemConcurrent(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			f := newFixture(t, k, Options{Hashed: true, MaxOpen: 8, Timeout: 5 * time.Second})
			nodes := []*Source{f.src}
			for range 4 {
				nodes = append(nodes, f.source(Options{Hashed: true, MaxOpen: 8, Timeout: 5 * time.Second}))
			}
			now := time.Now()
			for round := range 3 {
				tok := f.insert("42", "", now.Add(time.Hour), true)
				var wg sync.WaitGroup
				results := make([]tokens.Result, 50)
				start := make(chan struct{})
				for i := range results {
					wg.Go(func() {
						<-start
						results[i] = nodes[i%len(nodes)].Redeem(tok, presenter(uint64(100+i), "198.51.100.7", "42"), now)
					})
				}
				close(start)
				wg.Wait()
				won := 0
				for i, r := range results {
					switch r.Reason {
					case reason.None:
						won++
					case reason.TokenReplayed:
					default:
						t.Fatalf("round %d, presentation %d: %+v", round, i, r)
					}
				}
				if won != 1 {
					t.Fatalf("round %d: %d of 50 concurrent presentations redeemed the token, want exactly 1", round, won)
				}
			}
		})
	}
}

// TestDatabaseDown: a stopped database refuses tokens within the
// timeout (fail closed), reported once as down; restarted, tokens work
// again and the recovery is reported once.
func TestDatabaseDown(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			const timeout = 300 * time.Millisecond
			f := newFixture(t, k, Options{Hashed: true, Timeout: timeout})
			now := time.Now()
			tok := f.insert("42", "", now.Add(time.Hour), true)
			if r := f.src.Redeem(f.insert("42", "", now.Add(time.Hour), true), presenter(1, "198.51.100.7", "42"), now); r.Grant == nil {
				t.Fatalf("before the stop: %+v", r)
			}
			f.srv.Stop()
			for i := range 5 {
				r := f.src.Redeem(tok, presenter(uint64(10+i), "198.51.100.7", "42"), time.Now())
				if r.Reason != reason.TokenSourceUnavailable || r.Grant != nil {
					t.Fatalf("redemption %d with the database stopped: %+v", i, r)
				}
				if strings.Contains(r.Detail, f.srv.DSN) {
					t.Fatalf("detail holds the DSN: %q", r.Detail)
				}
			}
			if !f.src.Down() {
				t.Fatal("the source does not know the database is down")
			}
			s := f.transitions()
			if len(s) != 1 || !s[0].Down || s[0].Err == "" || strings.Contains(s[0].Err, f.srv.DSN) {
				t.Fatalf("transitions while down: %+v, want one Down with the error", s)
			}
			f.srv.Restart(t)
			if r := f.src.Redeem(tok, presenter(20, "198.51.100.7", "42"), time.Now()); r.Grant == nil {
				t.Fatalf("after the restart: %+v", r)
			}
			s = f.transitions()
			if len(s) != 2 || s[1].Down || s[1].Refused != 5 || s[1].Since.IsZero() {
				t.Fatalf("transitions after the restart: %+v, want Down then recovered with 5 refused", s)
			}
			if r := f.src.Redeem(f.insert("42", "", now.Add(time.Hour), true), presenter(21, "198.51.100.7", "42"), time.Now()); r.Grant == nil {
				t.Fatalf("second redemption after the restart: %+v", r)
			}
			if len(f.transitions()) != 2 {
				t.Fatalf("transitions: %+v", f.transitions())
			}
		})
	}
}

// TestDatabaseHung: a database that accepts connections but never
// answers refuses tokens within the timeout.
func TestDatabaseHung(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			srv := sqltest.Start(t, k)
			srv.Exec(t, sqltest.DocSchema(t, k, "../../../docs/TOKENS-SQL.md")...)
			var (
				mu     sync.Mutex
				states []State
			)
			src, err := New(Options{Driver: Driver(k), DSN: srv.DSN, Hashed: true, Timeout: 200 * time.Millisecond,
				OnState: func(s State) { mu.Lock(); states = append(states, s); mu.Unlock() }})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			srv.Pause(t)
			defer srv.Resume(t)
			var wg sync.WaitGroup
			for i := range 20 {
				wg.Go(func() {
					r := src.Redeem("hung-token-0123456789abcdefghijkl", presenter(uint64(i+1), "198.51.100.7", "42"), time.Now())
					if r.Reason != reason.TokenSourceUnavailable {
						t.Errorf("redemption %d against a hung database: %+v", i, r)
					}
				})
			}
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			if len(states) != 1 || !states[0].Down || !strings.Contains(states[0].Err, "timeout") {
				t.Fatalf("transitions: %+v, want one Down naming the timeout", states)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			f := newFixture(t, k, Options{Hashed: true})
			if err := f.src.Check(t.Context()); err != nil {
				t.Fatalf("check of the documented table: %v", err)
			}
			cols := DefaultColumns
			cols.Used = "redeemed_at"
			cols.User = "uid"
			bad := f.source(Options{Columns: cols})
			err := bad.Check(t.Context())
			if err == nil || !strings.Contains(err.Error(), "no column uid (tokens.sql.columns.user), no column redeemed_at (tokens.sql.columns.used)") {
				t.Fatalf("check with two wrong columns: %v", err)
			}
			err = f.source(Options{Table: "site_tokens"}).Check(t.Context())
			if err == nil || !strings.Contains(err.Error(), "table site_tokens does not exist") {
				t.Fatalf("check of a missing table: %v", err)
			}
		})
	}
}

// TestDSNNeverShown: a wrong password is refused by the server; neither
// the DSN nor the password is in what the source says.
func TestDSNNeverShown(t *testing.T) {
	srv := sqltest.StartMariaDB(t)
	srv.Exec(t, "CREATE USER 'site'@'127.0.0.1' IDENTIFIED BY 'right-pass-4711'", "GRANT SELECT, UPDATE ON portcullis.* TO 'site'@'127.0.0.1'")
	dsn := "site:wrong-pass-0815@tcp(" + srv.Addr + ")/portcullis"
	src, err := New(Options{Driver: MySQL, DSN: dsn, Hashed: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r := src.Redeem("some-token-0123456789abcdefghijkl", presenter(1, "198.51.100.7", "42"), time.Now())
	if r.Reason != reason.TokenSourceUnavailable || !strings.Contains(r.Detail, "Access denied") {
		t.Fatalf("wrong password: %+v", r)
	}
	cerr := src.Check(t.Context())
	for _, s := range []string{r.Detail, cerr.Error()} {
		if strings.Contains(s, "wrong-pass-0815") || strings.Contains(s, dsn) {
			t.Fatalf("the password is shown: %q", s)
		}
	}
	if _, err := New(Options{Driver: Postgres, DSN: "postgres://u:secret-9@[bad", Hashed: true}); err == nil || strings.Contains(err.Error(), "secret-9") {
		t.Fatalf("bad postgres DSN: %v", err)
	}
}

func TestValidIdent(t *testing.T) {
	for _, s := range []string{"portcullis_tokens", "T1", "_x", strings.Repeat("a", 63)} {
		if !ValidIdent(s) {
			t.Errorf("ValidIdent(%q) = false", s)
		}
	}
	for _, s := range []string{"", "1t", "a-b", "a b", "a;DROP", "a`b", `a"b`, "ä", strings.Repeat("a", 64), "a.b"} {
		if ValidIdent(s) {
			t.Errorf("ValidIdent(%q) = true", s)
		}
	}
	if !ValidTable("site.tokens") || ValidTable("a.b.c") || ValidTable(".t") {
		t.Error("ValidTable of schema.table")
	}
	if _, err := New(Options{Driver: MySQL, DSN: "root@tcp(127.0.0.1:1)/x", Table: "t;x"}); err == nil {
		t.Error("New took a table name that is no identifier")
	}
	if _, err := New(Options{Driver: "sqlite", DSN: "x"}); err == nil {
		t.Error("New took driver sqlite")
	}
}

func TestStatements(t *testing.T) {
	pg := buildQueries(Postgres, "site.tokens", DefaultColumns)
	want := `UPDATE "site"."tokens" SET "used_at" = $2 WHERE "token_sha256" = $1 AND "used_at" IS NULL AND "expires_at" > $2 RETURNING "user_id", "topics", "expires_at"`
	if pg.redeem != want {
		t.Errorf("postgres redeem:\n%s\nwant\n%s", pg.redeem, want)
	}
	my := buildQueries(MySQL, "portcullis_tokens", DefaultColumns)
	want = "UPDATE `portcullis_tokens` SET `used_at` = ? WHERE `token_sha256` = ? AND `used_at` IS NULL AND `expires_at` > ?"
	if my.redeem != want {
		t.Errorf("mysql redeem:\n%s\nwant\n%s", my.redeem, want)
	}
}

// Warm opens pool connections ahead of the first redemption (the pool
// keeps them: MaxOpen idle), never more than MaxOpen, and opens none, with
// no error and no state report, while the database is down.
func TestWarm(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			f := newFixture(t, k, Options{Hashed: true, Timeout: 300 * time.Millisecond, MaxOpen: 3})
			if n := f.src.Warm(t.Context(), 5); n != 3 {
				t.Fatalf("Warm(5) with max_open 3 opened %d, want 3", n)
			}
			if st := f.src.db.Stats(); st.OpenConnections != 3 || st.Idle != 3 {
				t.Fatalf("after Warm: %d open, %d idle; want 3 and 3", st.OpenConnections, st.Idle)
			}
			f.srv.Stop()
			g := f.source(Options{Hashed: true, Timeout: 300 * time.Millisecond, MaxOpen: 3})
			if n := g.Warm(t.Context(), 2); n != 0 {
				t.Fatalf("Warm with the database down opened %d", n)
			}
			if g.Down() {
				t.Fatal("Warm reported the database down: only redemptions do")
			}
		})
	}
}
