package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// A feed topic is polled only while it has subscribers, by one poller
// however many subscribe, and a bad upstream answer publishes nothing.
func TestFeedPolledWhileSubscribed(t *testing.T) {
	var hits atomic.Int64
	var status atomic.Int64
	status.Store(200)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		w.WriteHeader(int(status.Load()))
		fmt.Fprintf(w, `{"tick":%d}`, n)
	}))
	defer up.Close()
	s := startServer(t, fmt.Sprintf(`topics:
  - match: ticker
    subscribe: public
    feed: {url: %q, every: 1s}
`, up.URL))

	time.Sleep(2500 * time.Millisecond)
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d upstream requests without subscribers", n)
	}

	var subs []*rawConn
	for i := 0; i < 3; i++ {
		rc := upgradeFrom(t, s, "127.0.0.1")
		rc.sendJSON(map[string]any{"op": "subscribe", "id": 1, "topic": "ticker"})
		if m := rc.readMsg(); m["op"] != "subscribed" {
			t.Fatalf("subscribe: %v", m)
		}
		subs = append(subs, rc)
	}
	start := hits.Load()
	// Every subscriber gets the polled data.
	for _, rc := range subs {
		m := rc.readMsg()
		if m["op"] != "event" || m["topic"] != "ticker" {
			t.Fatalf("want a ticker event, got %v", m)
		}
		if _, ok := m["data"].(map[string]any)["tick"]; !ok {
			t.Fatalf("event data %v", m["data"])
		}
	}
	time.Sleep(3 * time.Second)
	polled := hits.Load() - start
	// One poller at 1/s: about 3 requests in 3 s, never one per subscriber.
	if polled < 2 || polled > 5 {
		t.Fatalf("%d requests in 3 s with 3 subscribers, want about 3 (one poller)", polled)
	}

	// A failing upstream publishes nothing and is audited.
	status.Store(500)
	s.waitAudit(map[string]any{"event": "feed_failed", "topic": "ticker", "reason": "feed_status"})
	status.Store(200)

	for _, rc := range subs {
		rc.c.Close()
	}
	time.Sleep(1500 * time.Millisecond) // the last close stops the poller
	stopped := hits.Load()
	time.Sleep(2500 * time.Millisecond)
	if n := hits.Load() - stopped; n != 0 {
		t.Fatalf("%d requests after the last subscriber left", n)
	}
}
