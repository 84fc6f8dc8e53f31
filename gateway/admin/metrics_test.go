package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/metrics"
)

// metricsTrail records the events the admin API emits.
type metricsTrail struct {
	mu sync.Mutex
	ev []audit.Event
}

func (s *metricsTrail) Emit(e audit.Event) {
	s.mu.Lock()
	s.ev = append(s.ev, e)
	s.mu.Unlock()
}

func (s *metricsTrail) events() []audit.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]audit.Event(nil), s.ev...)
}

const metricsKey = "metrics-test-key-0123456789"

// metricsAPI is an admin API serving GET /metrics, its audit sink counted
// by the same metrics, as the assembler wires it.
func metricsAPI(t *testing.T, public bool) (*API, *metricsTrail) {
	t.Helper()
	m, err := metrics.New(metrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	trail := &metricsTrail{}
	return New(Options{Key: metricsKey, Audit: m.Wrap(trail), Metrics: m.Handler(), MetricsPublic: public}), trail
}

func getMetrics(a *API, peer, auth string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.RemoteAddr = peer
	req.Header.Set("Accept", "text/plain")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, req)
	return rec
}

func TestMetricsAccess(t *testing.T) {
	for _, c := range []struct {
		name   string
		public bool
		peer   string
		auth   string
		want   int
		reason reason.Reason // of the auth_failed line; None: no line
	}{
		{name: "loopback, no key", peer: "127.0.0.1:50000", want: 200},
		{name: "loopback v6, no key", peer: "[::1]:50000", want: 200},
		{name: "remote, no key", peer: "192.0.2.7:50000", want: 401, reason: reason.AdminKeyMissing},
		{name: "remote, wrong key", peer: "192.0.2.7:50000", auth: "Bearer nope", want: 401, reason: reason.AdminKeyWrong},
		{name: "remote, key", peer: "192.0.2.7:50000", auth: "Bearer " + metricsKey, want: 200},
		{name: "public, remote, no key", public: true, peer: "192.0.2.7:50000", want: 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, trail := metricsAPI(t, c.public)
			rec := getMetrics(a, c.peer, c.auth)
			if rec.Code != c.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.want, rec.Body.String())
			}
			ev := trail.events()
			if c.want == 200 {
				if !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") ||
					!strings.Contains(rec.Body.String(), "# TYPE portcullis_audit_events_total counter") {
					t.Errorf("not the text format: %s %.200q", rec.Header().Get("Content-Type"), rec.Body.String())
				}
				if len(ev) != 0 {
					t.Errorf("an allowed scrape was audited: %+v", ev)
				}
				return
			}
			var body map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body["error"] != "unauthorized" {
				t.Errorf("body %q, want the JSON error unauthorized", rec.Body.String())
			}
			if rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("no WWW-Authenticate header")
			}
			if len(ev) != 1 {
				t.Fatalf("audit %+v, want one auth_failed line", ev)
			}
			e := ev[0]
			if e.Event != audit.KindAuthFailed || e.Stage != audit.StageAdmin || e.Reason != c.reason ||
				e.IP != netip.MustParseAddr("192.0.2.7") || e.Detail != "GET /metrics" {
				t.Errorf("audit %+v, want auth_failed, stage admin, reason %s, ip 192.0.2.7, detail GET /metrics", e, c.reason)
			}
			// The refusal is itself counted: the next scrape (from
			// loopback) shows it under its stage and reason.
			again := getMetrics(a, "127.0.0.1:50001", "")
			want := `portcullis_refusals_total{reason="` + c.reason.String() + `",stage="admin"} 1`
			if !strings.Contains(again.Body.String(), want) {
				t.Errorf("scrape after the refusal lacks %s", want)
			}
		})
	}
}

func TestMetricsLeftOutWithoutHandler(t *testing.T) {
	a := New(Options{Key: metricsKey, Audit: &metricsTrail{}})
	rec := getMetrics(a, "127.0.0.1:50000", "")
	if rec.Code != http.StatusNotFound {
		t.Fatalf("GET /metrics without a metrics handler: status %d, want 404", rec.Code)
	}
}
