package feed

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-gw/portcullis/policy/lease"
	"github.com/portcullis-gw/portcullis/policy/redistest"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// Two nodes with subscribers of one feed topic: one polls; when its topic
// goes idle there, the other takes over.
func TestOnePollerPerTopicInACluster(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { _ = c.Close() })
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"n":1}`))
	}))
	defer up.Close()
	rules, err := topics.Compile([]topics.Rule{{Match: "feed.x", Subscribe: topics.Public,
		Feed: &topics.Feed{URL: up.URL, Every: time.Second}}}, topics.Deny)
	if err != nil {
		t.Fatal(err)
	}
	var pubs [2]atomic.Int64
	var runners [2]*Runner
	for i, node := range []string{"a", "b"} {
		runners[i] = New(Options{Rules: rules, LeaseTTL: 300 * time.Millisecond,
			Lease:   &lease.Redis{Client: c, Prefix: "pc:", Node: node},
			Publish: func(string, []byte) (int, error) { pubs[i].Add(1); return 1, nil }})
		t.Cleanup(runners[i].Close)
	}
	runners[0].Active("feed.x")
	waitUntil(t, "a polls", func() bool { return pubs[0].Load() >= 1 })
	runners[1].Active("feed.x")
	// While a holds the lease, b never polls: a keeps publishing.
	before := pubs[0].Load()
	waitUntil(t, "a polls on", func() bool { return pubs[0].Load() >= before+2 })
	if n := pubs[1].Load(); n != 0 {
		t.Fatalf("b polled %d times while a held the lease", n)
	}
	// a's last subscriber leaves: it gives the lease up, b takes over.
	runners[0].Idle("feed.x")
	waitUntil(t, "b takes over", func() bool { return pubs[1].Load() >= 1 })
	after := pubs[0].Load()
	waitUntil(t, "b polls on", func() bool { return pubs[1].Load() >= 2 })
	if n := pubs[0].Load(); n != after {
		t.Fatalf("a polled after going idle: %d, was %d", n, after)
	}
}

// A holder that dies (stops renewing without releasing) is replaced once
// its lease runs out.
func TestPollerTakeoverAfterHolderDies(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { _ = c.Close() })
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`1`))
	}))
	defer up.Close()
	rules, err := topics.Compile([]topics.Rule{{Match: "feed.x", Subscribe: topics.Public,
		Feed: &topics.Feed{URL: up.URL, Every: time.Second}}}, topics.Deny)
	if err != nil {
		t.Fatal(err)
	}
	// The dead holder: a lease taken by node "dead" that nobody renews.
	dead := &lease.Redis{Client: c, Prefix: "pc:", Node: "dead"}
	if held, _, err := dead.Hold(t.Context(), "feed:feed.x", 300*time.Millisecond); err != nil || !held {
		t.Fatalf("dead holder: %v %v", held, err)
	}
	var pubs atomic.Int64
	r := New(Options{Rules: rules, LeaseTTL: 300 * time.Millisecond,
		Lease:   &lease.Redis{Client: c, Prefix: "pc:", Node: "b"},
		Publish: func(string, []byte) (int, error) { pubs.Add(1); return 1, nil }})
	t.Cleanup(r.Close)
	r.Active("feed.x")
	waitUntil(t, "b takes over", func() bool { return pubs.Load() >= 1 })
	if _, holder, _ := dead.Hold(t.Context(), "feed:feed.x", time.Second); holder != "b" {
		t.Fatalf("holder %q, want b", holder)
	}
}

func waitUntil(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
