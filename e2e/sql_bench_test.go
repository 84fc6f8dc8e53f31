package e2e

import (
	"bufio"
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/policy/sqltest"
)

// The scenario of BenchmarkSQLRedeem.
const (
	sqlBenchRate       = 500                   // redemptions a second in the load phase
	sqlBenchLoad       = 10 * time.Second      // the load phase
	sqlBenchBaseline   = 5 * time.Second       // bystanders only
	sqlBenchWarmup     = time.Second           // bystanders pinging, not recorded
	sqlBenchBystanders = 100                   // connections pinging throughout
	sqlBenchPingEvery  = 10 * time.Millisecond // each bystander's ping interval
	sqlBenchIOTimeout  = 10 * time.Second      // bound of any one client read or write
	sqlBenchTopic      = "news"                // every connection subscribes to it
	sqlBenchRowTTL     = 10 * time.Minute      // rows outlive the scenario
	sqlBenchInsertRows = 500                   // rows per INSERT statement
	sqlBenchPingBytes  = 9                     // ping payload: phase byte, send time
	sqlBenchPhaseNone  = sqlBenchPhase(0)      // warm-up and tail: not recorded
	sqlBenchPhaseBase  = sqlBenchPhase(1)      // baseline
	sqlBenchPhaseLoad  = sqlBenchPhase(2)      // under the redemption stream
	sqlBenchConfigTmpl = "tokens:\n  source: sql\n  sql:\n    driver: %s\n    dsn_file: %s\n" +
		"topics:\n  - match: " + sqlBenchTopic + "\n    subscribe: token\n" +
		// One source address opens 500 connections a second and holds the
		// 100 bystanders, each pinging 100 times a second (pings count
		// against msg_rate); nothing on loopback is banned.
		"limits:\n  conn_rate: {rate: 100000, burst: 100000}\n  per_ip_connections: 10000\n" +
		"  msg_rate: {rate: 1000, burst: 2000}\n" +
		"bans: {allow: [\"127.0.0.0/8\"]}\n"
)

// sqlBenchPhase tags a bystander's ping with the phase it was sent in.
type sqlBenchPhase byte

// BenchmarkSQLRedeem measures redemption against tokens.source: sql end to
// end, through the built gateway, against a throw-away MariaDB and
// PostgreSQL (policy/sqltest's settings: no flush at commit). Each
// iteration inserts its rows (the table of docs/TOKENS-SQL.md), starts the
// gateway, and opens sqlBenchBystanders connections subscribed with a
// token that ping every sqlBenchPingEvery and time each pong. After a
// warm-up, the baseline phase has only the bystanders; the load phase
// then opens sqlBenchRate new connections a second (an open-loop
// schedule: a late client does not delay the next), each subscribing
// with its own fresh row's token and closing after the answer.
//
// Reported: the subscribe→ack latency (redeem-p50-ms, redeem-p99-ms), the
// bystanders' ping→pong p99 in both phases and their ratio, the achieved
// redemptions a second, and from GET /v1/stats the longest event-loop
// turn since start (max-loop-stall-ms) and, when the gateway reports
// "loop_turns", the p99 and count of the turns during the load phase.
// Subscribes answered with an error (the database too slow: fail closed)
// are counted in redeem-refused, their answer times in the percentiles;
// the bar wants none. Any other failure fails the benchmark, as does a
// row left unused by a granted redemption.
//
//	cd e2e && go test -run '^$' -bench BenchmarkSQLRedeem -benchtime 1x .
func BenchmarkSQLRedeem(b *testing.B) {
	for _, k := range []sqltest.Kind{sqltest.MariaDB, sqltest.Postgres} {
		b.Run(string(k), func(b *testing.B) { benchSQLRedeem(b, k) })
	}
}

// sqlBenchResult is what the iterations measured, summed.
type sqlBenchResult struct {
	redeem        []time.Duration // subscribe sent → its answer, each redemption
	pingBase      []time.Duration // bystander ping → pong, baseline phase
	pingLoad      []time.Duration // the same, load phase
	redemptions   int             // subscribes answered "subscribed"
	refused       int             // subscribes answered with an error
	firstRefusal  error
	loadTime      time.Duration // from the first connection to the last one closed
	maxLoopStall  time.Duration
	turnP99       time.Duration // load phase; -1: not reported
	turnCount     uint64
	turnsReported bool
}

func benchSQLRedeem(b *testing.B, k sqltest.Kind) {
	b.StopTimer()
	db := sqltest.Start(b, k)
	db.Exec(b, sqlSchema(b, k)...)
	dsn := filepath.Join(b.TempDir(), "tokens.dsn")
	if err := os.WriteFile(dsn, []byte(db.DSN+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg := fmt.Sprintf(sqlBenchConfigTmpl, k, dsn)
	n := int(sqlBenchLoad.Seconds() * sqlBenchRate)
	var res sqlBenchResult
	for it := range b.N {
		byst := sqlBenchRows(b, db, sqlBenchBystanders, fmt.Sprintf("b%d", it))
		load := sqlBenchRows(b, db, n, fmt.Sprintf("r%d", it))
		s := startServer(b, cfg)
		refusedBefore := res.refused
		b.StartTimer()
		sqlBenchIteration(b, s, byst, load, &res)
		b.StopTimer()
		s.stop()
		var used int
		q := "SELECT COUNT(*) FROM portcullis_tokens WHERE user_id LIKE ? AND used_at IS NOT NULL"
		if k == sqltest.Postgres {
			q = strings.Replace(q, "?", "$1", 1)
		}
		if err := db.Open(b).QueryRow(q, fmt.Sprintf("r%d-%%", it)).Scan(&used); err != nil {
			b.Fatalf("count the redeemed rows: %v", err)
		}
		// A redemption refused for the timeout may have committed all the
		// same: the token is then spent, as the docs tell sites.
		if refused := res.refused - refusedBefore; used < n-refused || used > n {
			b.Fatalf("%d of the %d rows of the load phase are marked used, %d subscribes were refused", used, n, refused)
		}
	}
	if res.refused > 0 {
		b.Logf("%d of %d redemptions refused (the bar wants none); the first: %v", res.refused, res.refused+res.redemptions, res.firstRefusal)
	}

	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	base, load := sqlBenchQuantile(res.pingBase, 0.99), sqlBenchQuantile(res.pingLoad, 0.99)
	b.ReportMetric(ms(sqlBenchQuantile(res.redeem, 0.50)), "redeem-p50-ms")
	b.ReportMetric(ms(sqlBenchQuantile(res.redeem, 0.99)), "redeem-p99-ms")
	b.ReportMetric(ms(sqlBenchQuantile(res.redeem, 1)), "redeem-max-ms")
	b.ReportMetric(ms(base), "bystander-p99-base-ms")
	b.ReportMetric(ms(load), "bystander-p99-load-ms")
	if base > 0 {
		b.ReportMetric(float64(load)/float64(base), "bystander-p99-ratio")
	}
	b.ReportMetric(float64(res.redemptions)/res.loadTime.Seconds(), "redemptions/s")
	b.ReportMetric(float64(res.refused), "redeem-refused")
	b.ReportMetric(ms(res.maxLoopStall), "max-loop-stall-ms")
	if res.turnsReported {
		b.ReportMetric(ms(res.turnP99), "load-loop-turn-p99-ms")
		b.ReportMetric(float64(res.turnCount), "load-loop-turns")
	}
	b.ReportMetric(0, "ns/op") // the scenario's wall time says nothing
}

// sqlBenchIteration runs the phases once against s and adds what they
// measured to res.
func sqlBenchIteration(b *testing.B, s *server, bystanderTokens, loadTokens []sqlBenchRow, res *sqlBenchResult) {
	var phase atomic.Uint32 // a sqlBenchPhase
	epoch := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	bys := make([]*sqlBenchBystander, len(bystanderTokens))
	for i, row := range bystanderTokens {
		c, _, err := sqlBenchSubscribe(s, row)
		if err != nil {
			b.Fatalf("bystander %d: %v", i, err)
		}
		bys[i] = &sqlBenchBystander{c: c}
		wg.Add(2)
		go func() { defer wg.Done(); bys[i].pings(&phase, epoch, stop) }()
		go func() { defer wg.Done(); bys[i].pongs(epoch) }()
	}
	var once sync.Once
	stopBystanders := func() {
		once.Do(func() {
			close(stop)
			for _, by := range bys {
				if by != nil {
					_ = by.c.c.Close()
				}
			}
			wg.Wait()
		})
	}
	defer stopBystanders()

	time.Sleep(sqlBenchWarmup)
	phase.Store(uint32(sqlBenchPhaseBase))
	time.Sleep(sqlBenchBaseline)

	before, beforeOK := sqlBenchTurns(s)
	phase.Store(uint32(sqlBenchPhaseLoad))
	lat := make([]time.Duration, len(loadTokens))
	errs := make([]error, len(loadTokens))
	var lw sync.WaitGroup
	start := time.Now()
	every := time.Second / sqlBenchRate
	for i, row := range loadTokens {
		if d := time.Until(start.Add(time.Duration(i) * every)); d > 0 {
			time.Sleep(d)
		}
		lw.Go(func() {
			c, l, err := sqlBenchSubscribe(s, row)
			lat[i] = l
			if err != nil {
				errs[i] = err
				return
			}
			sqlBenchClose(c)
		})
	}
	lw.Wait()
	took := time.Since(start) // the last connection closed
	phase.Store(uint32(sqlBenchPhaseNone))
	after, afterOK := sqlBenchTurns(s)
	stopBystanders()

	for _, err := range errs {
		var refused sqlBenchRefusal
		switch {
		case err == nil:
			res.redemptions++
		case errors.As(err, &refused):
			res.refused++
			res.firstRefusal = cmp.Or(res.firstRefusal, err)
		default:
			b.Fatalf("a redemption of the load phase: %v", err)
		}
	}
	res.redeem = append(res.redeem, lat...)
	res.loadTime += took
	for _, by := range bys {
		if by.err != nil && !errors.Is(by.err, net.ErrClosed) {
			b.Fatalf("bystander: %v", by.err)
		}
		res.pingBase = append(res.pingBase, by.rtt[sqlBenchPhaseBase]...)
		res.pingLoad = append(res.pingLoad, by.rtt[sqlBenchPhaseLoad]...)
	}
	if len(res.pingBase) == 0 || len(res.pingLoad) == 0 {
		b.Fatalf("bystanders recorded %d baseline and %d load pongs", len(res.pingBase), len(res.pingLoad))
	}
	res.maxLoopStall = max(res.maxLoopStall, after.maxStall)
	if beforeOK && afterOK {
		p99, count, err := after.since(before)
		if err != nil {
			b.Fatalf("GET /v1/stats loop_turns: %v", err)
		}
		res.turnsReported = true
		res.turnP99 = max(res.turnP99, p99)
		res.turnCount += count
	}
}

// sqlBenchRow is one inserted token row.
type sqlBenchRow struct{ token, user string }

// sqlBenchRows inserts n rows for the topic, users prefix-0 … prefix-(n-1),
// sqlBenchInsertRows to a statement, and returns them. The token column
// holds the hex SHA-256 of the token, as the docs recommend.
func sqlBenchRows(b *testing.B, db *sqltest.Server, n int, prefix string) []sqlBenchRow {
	b.Helper()
	rows := make([]sqlBenchRow, n)
	exp := time.Now().UTC().Add(sqlBenchRowTTL).Format(time.DateTime)
	topics := `["` + sqlBenchTopic + `"]`
	conn := db.Open(b)
	for from := 0; from < n; from += sqlBenchInsertRows {
		to := min(from+sqlBenchInsertRows, n)
		var q strings.Builder
		q.WriteString("INSERT INTO portcullis_tokens (token_sha256, user_id, topics, expires_at) VALUES ")
		for i := from; i < to; i++ {
			var raw [24]byte
			_, _ = rand.Read(raw[:])
			rows[i] = sqlBenchRow{token: base64.RawURLEncoding.EncodeToString(raw[:]), user: prefix + "-" + strconv.Itoa(i)}
			sum := sha256.Sum256([]byte(rows[i].token))
			if i > from {
				q.WriteString(", ")
			}
			fmt.Fprintf(&q, "('%s', '%s', '%s', '%s')", hex.EncodeToString(sum[:]), rows[i].user, topics, exp)
		}
		if _, err := conn.Exec(q.String()); err != nil {
			b.Fatalf("insert rows %d-%d: %v", from, to, err)
		}
	}
	return rows
}

// sqlBenchSubscribe opens a portcullis.v1 connection, subscribes to the
// topic with row's token and returns the connection and the time from
// the subscribe written to the answer read. An error answer is a
// sqlBenchRefusal, with the time; anything else but "subscribed" is
// another error.
func sqlBenchSubscribe(s *server, row sqlBenchRow) (*rawConn, time.Duration, error) {
	c, err := net.DialTimeout("tcp", s.wsAddr, sqlBenchIOTimeout)
	if err != nil {
		return nil, 0, fmt.Errorf("dial: %w", err)
	}
	_ = c.SetDeadline(time.Now().Add(sqlBenchIOTimeout))
	fail := func(err error) (*rawConn, time.Duration, error) { _ = c.Close(); return nil, 0, err }
	if _, err := io.WriteString(c, upgradeRequest(s)); err != nil {
		return fail(fmt.Errorf("write the upgrade: %w", err))
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fail(fmt.Errorf("read the upgrade answer: %w", err))
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fail(fmt.Errorf("upgrade: HTTP %d", resp.StatusCode))
	}
	rc := &rawConn{c: c, r: br}
	if op, p, err := rc.next(); err != nil || op != 1 || !strings.Contains(string(p), `"welcome"`) {
		return fail(fmt.Errorf("welcome: op %d %q %v", op, p, err))
	}
	msg, _ := json.Marshal(map[string]any{"op": "subscribe", "id": 1, "topic": sqlBenchTopic, "userId": row.user, "token": row.token})
	sent := time.Now()
	if _, err := c.Write(maskedFrame(true, 1, msg)); err != nil {
		return fail(fmt.Errorf("write the subscribe: %w", err))
	}
	for {
		op, p, err := rc.next()
		if err != nil {
			return fail(fmt.Errorf("read the subscribe's answer: %w", err))
		}
		if op != 1 {
			continue // a ping or pong
		}
		took := time.Since(sent)
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil || m["op"] != "subscribed" && m["op"] != "error" {
			return fail(fmt.Errorf("subscribe as %s: answered %s", row.user, p))
		}
		if m["op"] == "error" {
			_, _, err := fail(sqlBenchRefusal{user: row.user, answer: string(p)})
			return nil, took, err
		}
		_ = c.SetDeadline(time.Time{})
		return rc, took, nil
	}
}

// sqlBenchRefusal is a subscribe answered with an error.
type sqlBenchRefusal struct{ user, answer string }

func (r sqlBenchRefusal) Error() string {
	return fmt.Sprintf("subscribe as %s: answered %s", r.user, r.answer)
}

// sqlBenchClose closes c cleanly: a close frame, then the server's close
// frame or the end of the stream.
func sqlBenchClose(c *rawConn) {
	_ = c.c.SetDeadline(time.Now().Add(sqlBenchIOTimeout))
	if _, err := c.c.Write(maskedFrame(true, 8, []byte{0x03, 0xe8})); err == nil {
		_, _ = io.Copy(io.Discard, c.r)
	}
	_ = c.c.Close()
}

// sqlBenchBystander is a subscribed connection that pings and times the
// pongs: pings writes, pongs reads; writes are serialised by mu.
type sqlBenchBystander struct {
	c   *rawConn
	mu  sync.Mutex
	rtt [3][]time.Duration // by sqlBenchPhase
	err error              // what ended pongs
}

// write writes one frame.
func (by *sqlBenchBystander) write(frame []byte) error {
	by.mu.Lock()
	defer by.mu.Unlock()
	_ = by.c.c.SetWriteDeadline(time.Now().Add(sqlBenchIOTimeout))
	_, err := by.c.c.Write(frame)
	return err
}

// pings sends a ping every sqlBenchPingEvery until stop, its payload the
// current phase and the send time (ns since epoch).
func (by *sqlBenchBystander) pings(phase *atomic.Uint32, epoch time.Time, stop <-chan struct{}) {
	tick := time.NewTicker(sqlBenchPingEvery)
	defer tick.Stop()
	var p [sqlBenchPingBytes]byte
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		p[0] = byte(phase.Load())
		binary.BigEndian.PutUint64(p[1:], uint64(time.Since(epoch)))
		if by.write(maskedFrame(true, 9, p[:])) != nil {
			return // pongs sees the error
		}
	}
}

// pongs reads until the connection closes, recording the round trip of
// each pong to a ping of a recorded phase, answering the server's pings.
func (by *sqlBenchBystander) pongs(epoch time.Time) {
	for {
		op, p, err := by.c.next()
		if err != nil {
			by.err = err
			return
		}
		switch op {
		case 9:
			if err := by.write(maskedFrame(true, 10, p)); err != nil {
				by.err = err
				return
			}
		case 10:
			if len(p) != sqlBenchPingBytes {
				by.err = fmt.Errorf("pong of %d bytes, want the ping's %d", len(p), sqlBenchPingBytes)
				return
			}
			ph := sqlBenchPhase(p[0])
			if ph == sqlBenchPhaseBase || ph == sqlBenchPhaseLoad {
				sent := time.Duration(binary.BigEndian.Uint64(p[1:]))
				by.rtt[ph] = append(by.rtt[ph], time.Since(epoch)-sent)
			}
		case 8:
			by.err = fmt.Errorf("closed by the gateway: %d", closeCodeOf(p))
			return
		}
	}
}

// sqlBenchQuantile is quantile q (0 < q ≤ 1) of ds, which it sorts; 0
// for none.
func sqlBenchQuantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := min(int(float64(len(ds))*q), len(ds)-1)
	return ds[i]
}

// sqlBenchStats is what GET /v1/stats says of the event loops' turns,
// read leniently: max_loop_stall, and loop_turns' cumulative buckets
// when the gateway reports them.
type sqlBenchStats struct {
	maxStall time.Duration
	bounds   []time.Duration // ascending; the last may be sqlBenchInf
	counts   []uint64        // cumulative
}

// sqlBenchInf stands for the "+Inf" bucket bound.
const sqlBenchInf = time.Duration(1<<63 - 1)

// sqlBenchTurns reads GET /v1/stats; ok is false when it has no usable
// loop_turns buckets.
func sqlBenchTurns(s *server) (st sqlBenchStats, ok bool) {
	var raw struct {
		MaxLoopStall string `json:"max_loop_stall"`
		LoopTurns    *struct {
			Buckets []struct {
				Le    string `json:"le"`
				Count uint64 `json:"count"`
			} `json:"buckets"`
		} `json:"loop_turns"`
	}
	b, err := json.Marshal(s.stats())
	if err != nil {
		s.t.Fatalf("GET /v1/stats: %v", err)
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		s.t.Fatalf("GET /v1/stats: %v", err)
	}
	if d, err := time.ParseDuration(raw.MaxLoopStall); err == nil {
		st.maxStall = d
	}
	if raw.LoopTurns == nil {
		return st, false
	}
	for _, bk := range raw.LoopTurns.Buckets {
		bound := sqlBenchInf
		if bk.Le != "+Inf" {
			if bound, err = time.ParseDuration(bk.Le); err != nil {
				return st, false
			}
		}
		st.bounds = append(st.bounds, bound)
		st.counts = append(st.counts, bk.Count)
	}
	return st, len(st.bounds) > 0
}

// since is the p99 bucket bound and the count of the turns counted after
// earlier (sqlBenchInf: beyond the last finite bound).
func (st sqlBenchStats) since(earlier sqlBenchStats) (p99 time.Duration, count uint64, err error) {
	if !slices.Equal(st.bounds, earlier.bounds) {
		return 0, 0, fmt.Errorf("the buckets changed between two reads: %v, then %v", earlier.bounds, st.bounds)
	}
	d := make([]uint64, len(st.counts))
	for i := range st.counts {
		if st.counts[i] < earlier.counts[i] {
			return 0, 0, fmt.Errorf("bucket %d went back from %d to %d", i, earlier.counts[i], st.counts[i])
		}
		d[i] = st.counts[i] - earlier.counts[i]
	}
	count = d[len(d)-1]
	if count == 0 {
		return 0, 0, nil
	}
	need := (count*99 + 99) / 100
	for i, c := range d {
		if c >= need {
			return st.bounds[i], count, nil
		}
	}
	return st.bounds[len(st.bounds)-1], count, nil
}
