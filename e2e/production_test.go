package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Production scenarios: what an operator sees when a deployment goes the
// way deployments go (a developer's page on localhost, a proxy left out of
// trusted_proxies, a restart with tokens in flight, a Prometheus scrape).
// Each ends with the trail verified by `portcullis audit verify`, exit 0.

// prodVerify stops s and checks its trail with `portcullis audit verify`.
func prodVerify(t *testing.T, s *server) {
	t.Helper()
	s.stop()
	if out, code := audVerify(t, s.data); code != 0 || !strings.Contains(out, "intact: ") {
		t.Fatalf("audit verify: exit %d, want 0:\n%s", code, out)
	}
}

// A quickstart page served from http://localhost:3000 while the config
// still names other origins: every attempt from 127.0.0.1 is refused 403
// bad_origin and audited, six times over, and the host is never banned,
// since the default bans.allow holds all of loopback (five strikes would
// otherwise ban it).
func TestProductionLoopbackAllowListedByDefault(t *testing.T) {
	// "bans: {}" keeps every default of bans.* (the harness would
	// otherwise allow-list 127.0.0.1 alone).
	s := startServer(t, "bans: {}\n")
	const page = "http://localhost:3000"
	for i := 0; i < 6; i++ {
		rep := refusedFrom(t, s, "127.0.0.1", "Origin: "+page)
		if rep.status != http.StatusForbidden || rep.body["error"] != "bad_origin" {
			t.Fatalf("attempt %d from the page at %s: HTTP %d %s, want 403 bad_origin", i+1, page, rep.status, rep.raw)
		}
	}
	s.waitTotal(map[string]any{"event": "conn_rejected", "reason": "bad_origin", "ip": "127.0.0.1", "code": 403}, 6)
	// The first lines name the page (beyond five a second they fold).
	s.waitAudit(map[string]any{"event": "conn_rejected", "reason": "bad_origin", "ip": "127.0.0.1",
		"detail": fmt.Sprintf("origin %q", page), "stage": "handshake"})
	if b := s.bans(); len(b) != 0 {
		t.Fatalf("bans after six refusals from loopback: %v", b)
	}
	if n := s.auditCount(map[string]any{"event": "ban"}); n != 0 {
		t.Fatalf("%d ban lines for the allow-listed loopback", n)
	}
	if n := s.strikes(); n != 0 {
		t.Fatalf("%d strikes against the allow-listed loopback", n)
	}
	// The developer fixes the page: the host still gets in.
	upgradeFrom(t, s, "127.0.0.1").c.Close()
	prodVerify(t, s)
}

// A proxy left out of trusted_proxies (peer 127.0.0.9, which bans.allow: []
// lets the limits count) forwarding 60 users with X-Forwarded-For: the
// operator sees one warning in the log and one untrusted_forwarding line,
// and the 60 users are one address to the gateway, as docs/DEPLOY.md
// says. The first limits.per_ip_connections (50) are served under the
// proxy's address; each further one is refused 429 per_ip_connections, a
// strike against the proxy; the fifth strike (bans.maxretry) bans the
// proxy's address, which closes the 50 served users with 1008 and resets
// every later one at accept. conn_rate is raised so that the users may
// arrive at once (with the default rate, users beyond its burst of 20 are
// refused 429 conn_rate in the same way).
func TestProductionForgottenProxy(t *testing.T) {
	const proxy = "127.0.0.9"
	s := startServer(t, "bans: {allow: []}\nlimits: {conn_rate: {rate: 1000, burst: 1000}}\n")
	const users, served, refused = 60, 50, 5
	var live []*rawConn
	for i := 0; i < served+refused; i++ {
		user := fmt.Sprintf("198.51.100.%d", i+1)
		rep, rc := handshakeOn(t, dialFrom(t, s, proxy), "", upgradeRequest(s, "X-Forwarded-For: "+user))
		switch {
		case i < served && rc == nil:
			t.Fatalf("user %d (%s): HTTP %d %s, want served", i+1, user, rep.status, rep.raw)
		case i < served:
			live = append(live, rc)
		case rc != nil:
			t.Fatalf("user %d (%s) served beyond per_ip_connections", i+1, user)
		case rep.status != http.StatusTooManyRequests || rep.body["error"] != "per_ip_connections":
			t.Fatalf("user %d (%s): HTTP %d %s, want 429 per_ip_connections", i+1, user, rep.status, rep.raw)
		}
	}
	// The fifth refusal banned the proxy: its users are cut off.
	for i, rc := range live {
		if _, code := rc.drain(); code != 1008 {
			t.Fatalf("served user %d after the proxy's ban: close %d, want 1008", i+1, code)
		}
	}
	for i := served + refused; i < users; i++ {
		resetFrom(t, s, proxy)
	}

	s.waitTotal(map[string]any{"event": "conn_open", "ip": proxy, "peer_ip": proxy}, served)
	s.waitTotal(map[string]any{"event": "conn_rejected", "reason": "per_ip_connections", "ip": proxy}, refused)
	s.waitTotal(map[string]any{"event": "conn_close", "reason": "banned", "ip": proxy}, served)
	s.waitTotal(map[string]any{"event": "conn_rejected", "reason": "banned", "ip": proxy}, users-served-refused)
	ban := s.waitAudit(map[string]any{"event": "ban", "counted_prefix": proxy + "/32"})
	if ban["actor"] != "auto" || ban["reason"] != "per_ip_connections" {
		t.Fatalf("ban %v", ban)
	}
	for i := 0; i < users; i++ {
		if n := s.auditCount(map[string]any{"ip": fmt.Sprintf("198.51.100.%d", i+1)}); n != 0 {
			t.Fatalf("user %d's forwarded address was believed: %d lines", i+1, n)
		}
	}
	// What the operator sees: one warning line, one audit line.
	e := s.waitAudit(map[string]any{"event": "untrusted_forwarding", "peer_ip": proxy})
	if e["severity"] != "warning" || !strings.Contains(fmt.Sprint(e["detail"]), "X-Forwarded-For") {
		t.Fatalf("untrusted_forwarding %v", e)
	}
	if n := s.auditTotal(map[string]any{"event": "untrusted_forwarding"}); n != 1 {
		t.Fatalf("%d untrusted_forwarding lines for %d users, want 1", n, users)
	}
	if n := strings.Count(s.stderr.String(), "outside trusted_proxies ignored"); n != 1 {
		t.Fatalf("%d log warnings for %d users, want 1:\n%s", n, users, s.stderr.String())
	}
	prodVerify(t, s)
}

// prodMint mints a token through the admin API on c (safe on any
// goroutine: it returns its error).
func prodMint(c *http.Client, s *server, user, topic string) (string, error) {
	b, _ := json.Marshal(map[string]any{"userId": user, "topics": []string{topic}, "ttl": "10m"})
	req, err := http.NewRequest(http.MethodPost, s.adminURL+"/v1/tokens", bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+s.key)
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("mint for %s: %w", user, err)
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated || out.Token == "" {
		return "", fmt.Errorf("mint for %s: HTTP %d, %v", user, resp.StatusCode, err)
	}
	return out.Token, nil
}

// A restart with 1,000 minted tokens not yet redeemed: after it each
// redeems exactly once (a second presentation is token_replayed), and a
// token redeemed before the restart is token_replayed after it.
func TestProductionRestartWithTokensInFlight(t *testing.T) {
	const n, perConn = 1000, 100
	cfg := "limits: {msg_rate: {rate: 1000, burst: 1000}}\n"
	data := t.TempDir() + "/d"
	s := startServerIn(t, cfg, data)

	toks := make([]string, n+1) // toks[n] is redeemed before the restart
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}, Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	next := make(chan int)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				tok, err := prodMint(hc, s, fmt.Sprintf("u%d", i), fmt.Sprintf("feed.%d", i))
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					continue
				}
				toks[i] = tok
			}
		}()
	}
	for i := 0; i <= n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	rc := dialRaw(t, s)
	rc.sendJSON(subMsg(1, fmt.Sprintf("feed.%d", n), fmt.Sprintf("u%d", n), toks[n]))
	if m := rc.readMsg(); m["op"] != "subscribed" {
		t.Fatalf("redeem before the restart: %v", m)
	}
	rc.c.Close()
	// The transport may hold connections it dialled and never used;
	// http.Server.Shutdown waits up to 5 s for such a connection, longer
	// than the admin API gives its close, and serve would exit 1.
	hc.CloseIdleConnections()
	s.stop()

	s = startServerIn(t, cfg, data)
	for c := 0; c < n/perConn; c++ {
		rc := dialRaw(t, s)
		for i := c * perConn; i < (c+1)*perConn; i++ {
			rc.sendJSON(subMsg(i, fmt.Sprintf("feed.%d", i), fmt.Sprintf("u%d", i), toks[i]))
		}
		for k := 0; k < perConn; k++ {
			m := rc.readMsg()
			if m["op"] != "subscribed" {
				t.Fatalf("token minted before the restart, redeemed after it: %v", m)
			}
		}
	}
	// Once each: the first token again, and the one spent before the
	// restart, are replays.
	rc = dialRaw(t, s)
	for _, i := range []int{0, n} {
		rc.sendJSON(subMsg(i, fmt.Sprintf("feed.%d", i), fmt.Sprintf("u%d", i), toks[i]))
		if m := rc.readMsg(); m["op"] != "error" || m["code"] != "auth_failed" || m["id"] != float64(i) {
			t.Fatalf("token %d presented again after the restart: %v, want auth_failed", i, m)
		}
	}
	s.waitAll(
		map[string]any{"event": "auth_failed", "reason": "token_replayed", "userId": "u0", "topic": "feed.0"},
		map[string]any{"event": "auth_failed", "reason": "token_replayed", "userId": fmt.Sprintf("u%d", n)},
	)
	s.waitTotal(map[string]any{"event": "auth_ok"}, n+1)
	if got := s.auditTotal(map[string]any{"event": "auth_failed"}); got != 2 {
		t.Fatalf("%d auth_failed events, want the 2 replays", got)
	}
	prodVerify(t, s)
}

// prodSeries is one series of GET /metrics: a family and label pairs.
type prodSeries struct {
	name   string
	labels []string
}

func (p prodSeries) key() string {
	if len(p.labels) == 0 {
		return p.name
	}
	return fmt.Sprintf("%s{%s=%s}", p.name, p.labels[0], p.labels[1])
}

// prodCounters are the series TestProductionMetricsMoveWithLoad watches.
var prodCounters = []prodSeries{
	{"portcullis_connections_total", []string{"protocol", "portcullis.v1"}},
	{"portcullis_audit_events_total", []string{"event", "conn_open"}},
	{"portcullis_publications_total", nil},
	{"portcullis_deliveries_total", nil},
	{"portcullis_publish_duration_seconds", nil}, // the histogram's count
}

// GET /metrics parses as the Prometheus text format, and its counters move
// by exactly the load put on the gateway: connections opened, publications
// and the frames they delivered.
func TestProductionMetricsMoveWithLoad(t *testing.T) {
	s := startServer(t, audChurnConfig)
	const conns, subs, pubs = 40, 3, 5
	before := scrapeMetrics(t, s)
	base := map[string]float64{}
	for _, k := range prodCounters {
		v, err := metricValue(before, k.name, k.labels...)
		if err != nil {
			t.Fatal(err)
		}
		base[k.key()] = v
	}
	for i := 0; i < subs; i++ {
		rc := dialRaw(t, s)
		rc.sendJSON(subMsg(i, "news", "reader", s.token("reader", "news")))
		if m := rc.readMsg(); m["op"] != "subscribed" {
			t.Fatalf("subscribe: %v", m)
		}
	}
	if ok, err := audChurn(s, conns, 4, nil); ok != conns {
		t.Fatalf("%d of %d connections: %v", ok, conns, err)
	}
	for i := 0; i < pubs; i++ {
		if got := s.publish("news", fmt.Sprintf(`{"n":%d}`, i)); got != subs {
			t.Fatalf("publication %d delivered to %d, want %d", i, got, subs)
		}
	}
	want := map[string]float64{
		"portcullis_connections_total{protocol=portcullis.v1}": conns + subs,
		"portcullis_audit_events_total{event=conn_open}":       conns + subs,
		"portcullis_publications_total":                        pubs,
		"portcullis_deliveries_total":                          pubs * subs,
		"portcullis_publish_duration_seconds":                  pubs,
	}
	checkFor(t, 10*time.Second, func() error {
		after := scrapeMetrics(t, s)
		var bad []string
		for _, k := range prodCounters {
			v, err := metricValue(after, k.name, k.labels...)
			if err != nil {
				return err
			}
			if d := v - base[k.key()]; d != want[k.key()] {
				bad = append(bad, fmt.Sprintf("%s moved by %v, want %v", k.key(), d, want[k.key()]))
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%s", strings.Join(bad, "; "))
		}
		return nil
	})
	prodVerify(t, s)
}

// A client behind a trusted proxy whose upgrade request is refused before
// its address is admitted (a bad Origin, a bad path) is the one audited
// and struck: the third strike (bans.maxretry) bans the client, while the
// proxy, which every other client behind it shares, stays unbanned and
// its other clients get in.
func TestProductionProxiedRefusalStrikesClient(t *testing.T) {
	const proxy, client, other = "127.0.0.30", "203.0.113.40", "203.0.113.41"
	s := startServer(t, fmt.Sprintf("trusted_proxies: [%q]\nbans: {allow: [], maxretry: 3}\n", proxy))
	xff := "X-Forwarded-For: " + client
	for i := 0; i < 2; i++ {
		if rep := refusedFrom(t, s, proxy, xff, "Origin: https://evil.example"); rep.status != http.StatusForbidden || rep.body["error"] != "bad_origin" {
			t.Fatalf("bad Origin via the proxy: HTTP %d %s", rep.status, rep.raw)
		}
	}
	badPath := strings.Replace(upgradeRequest(s, xff), "GET /ws ", "GET /nope ", 1)
	if rep, rc := handshakeOn(t, dialFrom(t, s, proxy), "", badPath); rc != nil || rep.status != http.StatusNotFound || rep.body["error"] != "bad_path" {
		t.Fatalf("bad path via the proxy: %+v", rep)
	}
	got := s.waitAll(
		map[string]any{"event": "conn_rejected", "reason": "bad_origin", "ip": client, "peer_ip": proxy},
		map[string]any{"event": "conn_rejected", "reason": "bad_path", "ip": client, "peer_ip": proxy},
		map[string]any{"event": "ban", "counted_prefix": client + "/32"},
	)
	if e := got[0]; e["counted_prefix"] != client+"/32" {
		t.Fatalf("bad_origin via the proxy: %v", e)
	}
	if e := got[2]; e["ip"] != client || e["reason"] != "bad_path" || e["strikes"] != 3.0 {
		t.Fatalf("ban %v", e)
	}
	if b := s.bans(); len(b) != 1 {
		t.Fatalf("bans %v, want the client's alone (not the proxy's)", b)
	}
	if rep := refusedFrom(t, s, proxy, xff); rep.status != http.StatusForbidden || rep.body["error"] != "banned" {
		t.Fatalf("the banned client via the proxy: HTTP %d %s", rep.status, rep.raw)
	}
	upgradeFrom(t, s, proxy, "X-Forwarded-For: "+other).c.Close()
	s.waitAudit(map[string]any{"event": "conn_open", "ip": other, "peer_ip": proxy})
	prodVerify(t, s)
}
