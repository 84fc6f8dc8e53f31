package gateway

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/portcullis-gw/portcullis/policy/origin"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

func startTestServer(t testing.TB) (*Server, *tokens.Store) { return startServerWith(t, Options{}) }

// startServerWith starts a server on a free loopback port with o's loops
// and audit sink and what every test server shares: any origin, the token
// topic rule, a fresh token store, the default schema limits.
func startServerWith(t testing.TB, o Options) (*Server, *tokens.Store) {
	t.Helper()
	chk, _ := origin.NewChecker(nil, true)
	set, err := topics.Compile(nil, topics.Token)
	if err != nil {
		t.Fatal(err)
	}
	store := tokens.NewStore(tokens.Options{})
	val, err := schema.New(schema.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	o.Listen, o.Origins, o.Topics, o.Tokens, o.Schema, o.Version = "127.0.0.1:0", chk, set, store, val, "test"
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	return s, store
}

// dialSubscribed opens a native connection and subscribes it to topic.
func dialSubscribed(t testing.TB, s *Server, store *tokens.Store, user, topic string) net.Conn {
	t.Helper()
	tok, _, err := store.Mint(user, []string{topic}, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	u, _ := url.Parse("ws://" + s.Addr().String() + "/ws")
	br, _, err := (ws.Dialer{Protocols: []string{"portcullis.v1"}}).Upgrade(c, u)
	if err != nil {
		t.Fatal(err)
	}
	var rd io.Reader = c
	if br != nil {
		rd = io.MultiReader(br, c) // the welcome may have come with the response
	}
	r := struct {
		io.Reader
		io.Writer
	}{rd, c}
	if b, err := wsutil.ReadServerText(r); err != nil || !strings.Contains(string(b), "welcome") {
		t.Fatalf("welcome: %q %v", b, err)
	}
	msg := fmt.Sprintf(`{"op":"subscribe","id":1,"topic":%q,"userId":%q,"token":%q}`, topic, user, tok)
	if err := wsutil.WriteClientText(c, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if b, err := wsutil.ReadServerText(r); err != nil || !strings.Contains(string(b), "subscribed") {
		t.Fatalf("subscribe: %q %v", b, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

// Idle connections cost no goroutine, and their heap cost is bounded: this
// is the property the reactor exists for.
func TestIdleConnectionCost(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 2,000 connections")
	}
	prof := os.Getenv("PORTCULLIS_HEAPPROFILE") // inspect what idle connections hold
	if prof != "" {
		runtime.MemProfileRate = 1
	}
	s, store := startTestServer(t)
	defer s.Shutdown(t.Context())
	const n = 2000
	warm := dialSubscribed(t, s, store, "warm", "news")
	defer warm.Close()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		conns = append(conns, dialSubscribed(t, s, store, fmt.Sprint("u", i), "news"))
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	runtime.GC()
	runtime.ReadMemStats(&after)
	// The client side of each connection lives in this process too and
	// costs no goroutine (plain net.Conn); the server side must not either.
	if g1 := runtime.NumGoroutine(); g1 > g0+5 {
		t.Fatalf("goroutines %d → %d for %d idle connections", g0, g1, n)
	}
	if prof != "" {
		f, err := os.Create(prof)
		if err != nil {
			t.Fatal(err)
		}
		_ = pprof.WriteHeapProfile(f)
		f.Close()
	}
	perConn := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("heap per idle subscribed connection, both ends and its token: %.0f bytes", perConn)
	if st := s.Stats(); st.WebSockets != n+1 || st.Subscriptions != n+1 {
		t.Fatalf("stats %+v", st)
	}
}
