package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeMetrics GETs /metrics on the admin listener from loopback without
// a key and parses the text format.
func scrapeMetrics(t *testing.T, s *server) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.adminURL+"/metrics", nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics from loopback without a key: %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: not the text format: %v", err)
	}
	return fams
}

// metricValue is the value of the series of family name whose labels
// include the given name, value pairs (a histogram's sample count).
func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, error) {
	f := fams[name]
	if f == nil {
		return 0, fmt.Errorf("no family %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), nil
		case m.Gauge != nil:
			return m.Gauge.GetValue(), nil
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), nil
		}
	}
	return 0, fmt.Errorf("no series %s%v", name, labels)
}

// TestMetricsEndpoint: what clients do shows in GET /metrics, served to a
// loopback scraper without the key, with the docs/AUDIT.md spellings as
// labels.
func TestMetricsEndpoint(t *testing.T) {
	s := startServer(t, "")
	rc := upgradeFrom(t, s, "127.0.0.2")
	rc.sendText([]byte(`{"op":`), 0) // not JSON: message_rejected bad_json
	if m := rc.readMsg(); m["op"] != "error" || m["code"] != "bad_request" {
		t.Fatalf("reply to bad JSON: %v", m)
	}
	rc.sendText([]byte(`{"op":"ping","id":7}`), 0)
	if m := rc.readMsg(); m["op"] != "pong" {
		t.Fatalf("reply to ping: %v", m)
	}
	if rep := refusedFrom(t, s, "127.0.0.3", "Origin: https://evil.example"); rep.status != http.StatusForbidden {
		t.Fatalf("bad origin: HTTP %d, want 403", rep.status)
	}
	s.publish("news", `{"n":1}`)

	want := []struct {
		name   string
		labels []string
		value  float64
	}{
		{"portcullis_connections", []string{"protocol", "portcullis.v1"}, 1},
		{"portcullis_connections_total", []string{"protocol", "portcullis.v1"}, 1},
		{"portcullis_refusals_total", []string{"stage", "message", "reason", "bad_json"}, 1},
		{"portcullis_refusals_total", []string{"stage", "handshake", "reason", "bad_origin"}, 1},
		{"portcullis_audit_events_total", []string{"event", "conn_open"}, 1},
		{"portcullis_messages_total", []string{"protocol", "portcullis.v1", "op", "invalid"}, 1},
		{"portcullis_messages_total", []string{"protocol", "portcullis.v1", "op", "ping"}, 1},
		{"portcullis_publish_duration_seconds", nil, 1},
		{"portcullis_publications_total", nil, 1},
		{"portcullis_bans", nil, 0},
		{"portcullis_audit_dropped_total", nil, 0},
	}
	checkFor(t, 10*time.Second, func() error {
		fams := scrapeMetrics(t, s)
		var bad []string
		for _, w := range want {
			got, err := metricValue(fams, w.name, w.labels...)
			if err != nil {
				bad = append(bad, err.Error())
			} else if got != w.value {
				bad = append(bad, fmt.Sprintf("%s%v = %v, want %v", w.name, w.labels, got, w.value))
			}
		}
		for _, name := range []string{"portcullis_sockets", "portcullis_loop_stall_max_seconds", "go_goroutines",
			"process_open_fds"} {
			if fams[name] == nil {
				bad = append(bad, "no family "+name)
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%s", strings.Join(bad, "; "))
		}
		return nil
	})
}
