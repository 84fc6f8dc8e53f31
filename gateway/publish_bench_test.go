package gateway

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/gateway/admin"
)

// BenchmarkPublishLatency5000 measures POST /v1/publish (the admin API's
// HTTP round trip, on loopback) to a topic with 5,000 subscribed native
// connections, one publication every 50 ms: the loops are done writing one
// before the next arrives, as in the bench command's fanout (5/s by
// default). The clients do not read: their kernel receive buffers hold
// every event (at most a few hundred frames of ~90 bytes), so 5,000
// reading goroutines in this process do not compete with the one
// measuring. It reports the round trip's p50 and p99 in microseconds (the
// bar is p99 ≤ 2 ms), and the p99 of its three parts: in (the request
// written → the handler running: the wait for the network poller and a
// processor), handler (decode, Server.Publish, the answer flushed) and out
// (the answer flushed → the client has it). Opens 10,000 sockets: run it alone, e.g.
//
//	go test -run '^$' -bench PublishLatency5000 -benchtime 200x ./gateway/
func BenchmarkPublishLatency5000(b *testing.B) {
	const (
		subscribers = 5000
		interval    = 50 * time.Millisecond // between publications
	)
	s, store := startTestServer(b)
	defer s.Shutdown(b.Context())
	conns := make([]net.Conn, 0, subscribers)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < subscribers; i++ {
		c := dialSubscribed(b, s, store, "u"+strconv.Itoa(i), "news")
		conns = append(conns, c)
	}
	// The handler's start and end, to split the round trip into the way in
	// (request written → handler running), the handler (decode, publish,
	// answer) and the way back (answer written → client has it).
	var hStart, hEnd atomic.Int64 // Unix ns
	adm := admin.New(admin.Options{Key: "k", Publisher: s})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hStart.Store(time.Now().UnixNano())
		adm.ServeHTTP(w, r)
		w.(http.Flusher).Flush()
		hEnd.Store(time.Now().UnixNano())
	}))
	defer api.Close()
	client := api.Client()
	body := []byte(`{"topic":"news","data":{"price":101.25,"sym":"ACME"}}`)
	publish := func() {
		req, _ := http.NewRequest("POST", api.URL+"/v1/publish", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer k")
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(bytes.TrimSpace(out)) != `{"delivered":5000}` {
			b.Fatalf("publish: %d %s", resp.StatusCode, out)
		}
	}
	publish() // warm the connection and the frame encoders
	time.Sleep(100 * time.Millisecond)
	if b.N > 250 {
		b.Fatal("at most 250 iterations (-benchtime 200x): the clients do not read")
	}
	// Each iteration publishes twice: through the API (the bar), and by
	// calling Server.Publish (the server's own share of it).
	viaAPI, call := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	in, handler, out := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		publish()
		t1 := time.Now()
		viaAPI = append(viaAPI, t1.Sub(t0))
		hs, he := time.Unix(0, hStart.Load()), time.Unix(0, hEnd.Load())
		in, handler, out = append(in, hs.Sub(t0)), append(handler, he.Sub(hs)), append(out, t1.Sub(he))
		b.StopTimer()
		time.Sleep(interval)
		b.StartTimer()
		t0 = time.Now()
		if n, err := s.Publish("news", body); err != nil || n != subscribers {
			b.Fatalf("Publish = %d, %v", n, err)
		}
		call = append(call, time.Since(t0))
		b.StopTimer()
		time.Sleep(interval)
		b.StartTimer()
	}
	b.StopTimer()
	pct := func(lat []time.Duration, p float64) float64 {
		slices.Sort(lat)
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds())
	}
	b.ReportMetric(pct(viaAPI, 0.50), "api-p50-µs")
	b.ReportMetric(pct(viaAPI, 0.99), "api-p99-µs")
	b.ReportMetric(pct(call, 0.50), "call-p50-µs")
	b.ReportMetric(pct(call, 0.99), "call-p99-µs")
	b.ReportMetric(pct(in, 0.99), "in-p99-µs")
	b.ReportMetric(pct(handler, 0.99), "handler-p99-µs")
	b.ReportMetric(pct(out, 0.99), "out-p99-µs")
	b.ReportMetric(0, "ns/op")
	waitFor(b, func() bool { return s.Stats().Delivered == uint64(subscribers*(2*b.N+1)) })
	if d := s.Stats().SlowConsumers; d != 0 {
		b.Fatalf("%d subscribers were closed as slow consumers", d)
	}
}
