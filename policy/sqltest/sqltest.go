// Package sqltest starts throw-away database servers for tests: MariaDB
// (or MySQL) and PostgreSQL, each on a free loopback port, with its own
// data directory in a temporary directory, stopped (and the directory
// removed) when the test ends. A stopped server can be started again on
// the same port and data, to test a database that goes away and comes
// back. Without the server's binaries the test is skipped with an install
// hint, unless CI is set: then it fails.
//
// PostgreSQL refuses to run as root; as root the server runs as the
// unprivileged user nobody (setpriv), in a directory it owns.
//
// sqltest imports nothing from the project.
package sqltest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver "mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// Kind is which server: "mysql" (MariaDB or MySQL) or "postgres", the
// driver names of tokens.sql.driver.
type Kind string

// The servers.
const (
	MariaDB  Kind = "mysql"
	Postgres Kind = "postgres"
)

// Database is the name of the database every server is started with.
const Database = "portcullis"

// Install hints.
const (
	hintMariaDB  = "apt-get install mariadb-server"
	hintPostgres = "apt-get install postgresql"
)

// Server is a running database server.
type Server struct {
	Kind Kind
	Addr string // 127.0.0.1:port
	// DSN connects to Database as the superuser, in the format of
	// tokens.sql (and of the kind's database/sql driver, driverName).
	DSN string

	dir  string // everything of the server; removed at cleanup
	bin  string
	args []string
	uid  int // run as this user (-1: as we are)
	cmd  *exec.Cmd
	done chan struct{}
	log  string // the server's output

	pools []*sql.DB // opened by Open: their idle connections die with a Stop
}

// need returns the first of paths that exists, skipping (or, under CI,
// failing) t when none does.
func need(t testing.TB, what, hint string, paths ...string) string {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		if !strings.Contains(p, "/") {
			if lp, err := exec.LookPath(p); err == nil {
				return lp
			}
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing (CI is set): %s", what, hint)
	}
	t.Skipf("%s not found: %s", what, hint)
	return ""
}

// freePort asks the kernel for a free loopback port.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// Start starts a server of kind k for t.
func Start(t testing.TB, k Kind) *Server {
	t.Helper()
	if k == Postgres {
		return StartPostgres(t)
	}
	return StartMariaDB(t)
}

// StartMariaDB runs a MariaDB (or MySQL) server for t and creates
// Database; root connects without a password over TCP.
func StartMariaDB(t testing.TB) *Server {
	t.Helper()
	bin := need(t, "mariadbd (MariaDB server)", hintMariaDB, "/usr/sbin/mariadbd", "/usr/sbin/mysqld", "mariadbd", "mysqld")
	install := need(t, "mariadb-install-db", hintMariaDB, "/usr/bin/mariadb-install-db", "/usr/bin/mysql_install_db", "mariadb-install-db")
	s := newServer(t, MariaDB, -1)
	port := freePort(t)
	data := filepath.Join(s.dir, "data")
	out, err := exec.Command(install, "--no-defaults", "--datadir="+data, "--user="+currentUser(),
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput()
	if err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	s.bin = bin
	s.args = []string{"--no-defaults", "--user=" + currentUser(), "--datadir=" + data,
		"--skip-networking=0", "--bind-address=127.0.0.1", "--port=" + strconv.Itoa(port),
		"--socket=" + filepath.Join(s.dir, "mysqld.sock"), "--pid-file=" + filepath.Join(s.dir, "mysqld.pid"),
		"--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M", "--skip-log-bin", "--performance-schema=0",
		// Like PostgreSQL's synchronous_commit=off below: a throw-away
		// server need not flush the log at every commit.
		"--innodb-flush-log-at-trx-commit=2"}
	s.Addr = "127.0.0.1:" + strconv.Itoa(port)
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	admin := "root@tcp(" + s.Addr + ")/"
	if err := execOn(MariaDB, admin, "CREATE DATABASE "+Database); err != nil {
		t.Fatalf("create database: %v", err)
	}
	s.DSN = admin + Database + "?parseTime=true"
	return s
}

// StartPostgres runs a PostgreSQL server for t (trust authentication on
// loopback) and creates Database; the superuser is postgres.
func StartPostgres(t testing.TB) *Server {
	t.Helper()
	bindir := postgresBinDir()
	initdb := need(t, "initdb (PostgreSQL server)", hintPostgres, filepath.Join(bindir, "initdb"), "initdb")
	bin := need(t, "postgres (PostgreSQL server)", hintPostgres, filepath.Join(bindir, "postgres"), "postgres")
	uid := -1
	if os.Geteuid() == 0 {
		uid = 65534 // nobody: initdb and postgres refuse root
	}
	s := newServer(t, Postgres, uid)
	port := freePort(t)
	data := filepath.Join(s.dir, "data")
	cmd := exec.Command(initdb, "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
	s.as(cmd)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	s.bin = bin
	s.args = []string{"-D", data, "-p", strconv.Itoa(port), "-k", s.dir, "-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200"}
	s.Addr = "127.0.0.1:" + strconv.Itoa(port)
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	base := "postgres://postgres@" + s.Addr + "/"
	if err := execOn(Postgres, base+"postgres?sslmode=disable", "CREATE DATABASE "+Database); err != nil {
		t.Fatalf("create database: %v", err)
	}
	s.DSN = base + Database + "?sslmode=disable"
	return s
}

// postgresBinDir is the newest /usr/lib/postgresql/<version>/bin.
func postgresBinDir() string {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestV := "", -1
	for _, d := range m {
		v, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if err == nil && v > bestV {
			best, bestV = d, v
		}
	}
	return best
}

func currentUser() string {
	if os.Geteuid() == 0 {
		return "root"
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return strconv.Itoa(os.Geteuid())
}

// newServer makes the server's directory, owned by uid when it is not -1,
// and registers its cleanup.
func newServer(t testing.TB, k Kind, uid int) *Server {
	t.Helper()
	dir, err := os.MkdirTemp("", "sqltest-"+string(k)+"-")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Kind: k, dir: dir, uid: uid}
	t.Cleanup(func() {
		s.Kill() // its data is thrown away: no clean shutdown needed
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("remove %s: %v", dir, err)
		}
	})
	if uid >= 0 {
		if err := os.Chown(dir, uid, uid); err != nil {
			t.Fatalf("give %s to uid %d: %v", dir, uid, err)
		}
	}
	return s
}

// as makes cmd run as s.uid, when set.
func (s *Server) as(cmd *exec.Cmd) {
	cmd.Dir = s.dir
	if s.uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.uid)}}
	}
}

// start runs the server and waits until it answers (30 s at most).
func (s *Server) start() error {
	logf, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	if s.uid >= 0 {
		_ = logf.Chown(s.uid, s.uid)
	}
	s.log = logf.Name()
	s.cmd = exec.Command(s.bin, s.args...)
	s.as(s.cmd)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = withPdeathsig(s.cmd.SysProcAttr)
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	s.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(s.cmd, s.done)
	dsn := "root@tcp(" + s.Addr + ")/"
	if s.Kind == Postgres {
		dsn = "postgres://postgres@" + s.Addr + "/postgres?sslmode=disable"
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := ping(s.Kind, dsn)
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			out, _ := os.ReadFile(s.log)
			s.cmd = nil
			return fmt.Errorf("%s exited at start; its log:\n%s", s.bin, out)
		default:
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(s.log)
			s.Stop()
			return fmt.Errorf("%s on %s did not answer within 30 s (%v); its log:\n%s", s.bin, s.Addr, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// withPdeathsig kills the server when the test binary dies.
func withPdeathsig(a *syscall.SysProcAttr) *syscall.SysProcAttr {
	if a == nil {
		a = &syscall.SysProcAttr{}
	}
	a.Pdeathsig = syscall.SIGKILL
	return a
}

// driverName is the database/sql driver of kind k's DSNs.
func driverName(k Kind) string {
	if k == Postgres {
		return "pgx"
	}
	return "mysql"
}

func open(k Kind, dsn string) (*sql.DB, error) { return sql.Open(driverName(k), dsn) }

func ping(k Kind, dsn string) error {
	db, err := open(k, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

func execOn(k Kind, dsn, stmt string) error {
	db, err := open(k, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = db.ExecContext(ctx, stmt)
	return err
}

// Open opens s's database for the test's own statements (inserting rows,
// reading them back); it is closed at t's cleanup.
func (s *Server) Open(t testing.TB) *sql.DB {
	t.Helper()
	db, err := open(s.Kind, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s.pools = append(s.pools, db)
	return db
}

// Exec runs statements on s's database, failing t on an error.
func (s *Server) Exec(t testing.TB, stmts ...string) {
	t.Helper()
	for _, st := range stmts {
		if err := execOn(s.Kind, s.DSN, st); err != nil {
			t.Fatalf("%s: %v", st, err)
		}
	}
}

// Stop shuts the server down (SIGTERM for MariaDB, SIGINT, the fast
// shutdown that closes the sessions, for PostgreSQL; SIGKILL after 10 s)
// and waits for it; its data stays for Restart.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	sig := syscall.SIGTERM
	if s.Kind == Postgres {
		sig = syscall.SIGINT
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Kill kills the server at once (SIGKILL), like a crash.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again, on the same port and data, after Stop
// or Kill.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	// The test's own pools would hand out their idle connections, dead
	// since the stop (PostgreSQL answers the first use of one with 57P01):
	// drop them, as a pool does with connections it finds bad.
	for _, db := range s.pools {
		db.SetMaxIdleConns(0)
		db.SetMaxIdleConns(2)
	}
	if s.Kind == Postgres {
		// A killed postmaster leaves its pid file; the new one checks
		// that the pid is gone, which it is.
		_ = os.Remove(filepath.Join(s.dir, "data", "postmaster.pid"))
	}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
}

// Pause stops the server's process (SIGSTOP) without closing its
// sockets: connections are accepted by the kernel and never answered, a
// hung database. Resume continues it.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	if s.cmd == nil || s.cmd.Process == nil {
		t.Fatal("sqltest: Pause of a stopped server")
	}
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("sqltest: pause: %v", err)
	}
}

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume(t testing.TB) {
	t.Helper()
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("sqltest: resume: %v", err)
	}
}

// DocSchema returns the statements of the first ```sql block after the
// heading for k ("### MariaDB and MySQL" or "### PostgreSQL") in the
// document at path (docs/TOKENS-SQL.md, relative to the test's package):
// the tests create the table the docs give, so the docs cannot drift from
// what works.
func DocSchema(t testing.TB, k Kind, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	heading := "### MariaDB and MySQL"
	if k == Postgres {
		heading = "### PostgreSQL"
	}
	_, rest, ok := strings.Cut(string(b), heading)
	if !ok {
		t.Fatalf("%s has no %q", path, heading)
	}
	m := regexp.MustCompile("(?s)```sql\n(.*?)```").FindStringSubmatch(rest)
	if m == nil {
		t.Fatalf("%s: no sql block after %q", path, heading)
	}
	var out []string
	for st := range strings.SplitSeq(m[1], ";") {
		if st = strings.TrimSpace(st); st != "" {
			out = append(out, st)
		}
	}
	return out
}
