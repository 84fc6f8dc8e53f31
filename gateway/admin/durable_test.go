package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/bans"
	"github.com/portcullis-gw/portcullis/policy/guard"
	"github.com/portcullis-gw/portcullis/policy/ratelimit"
	"github.com/portcullis-gw/portcullis/policy/tokens"
)

// The recording sinks of the other tests are durable: they keep every
// event at once.
func (s *recSink) EmitDurable(_ context.Context, e audit.Event) error { s.Emit(e); return nil }
func (s *sjSink) EmitDurable(_ context.Context, e audit.Event) error  { s.Emit(e); return nil }

// trailSink is an audit.Durable whose disk can fail: durable lists the
// events it confirmed, all every event it was given.
type trailSink struct {
	mu      sync.Mutex
	all     []audit.Event
	durable []audit.Event
	failing bool
}

func (s *trailSink) Emit(e audit.Event) { s.mu.Lock(); s.all = append(s.all, e); s.mu.Unlock() }

func (s *trailSink) EmitDurable(_ context.Context, e audit.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, e)
	if s.failing {
		return fmt.Errorf("%w: fsync: input/output error", audit.ErrNotDurable)
	}
	s.durable = append(s.durable, e)
	return nil
}

func (s *trailSink) setFailing(f bool) { s.mu.Lock(); s.failing = f; s.mu.Unlock() }

// last returns the last event of kind k.
func (s *trailSink) last(k audit.Kind) (audit.Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.all) - 1; i >= 0; i-- {
		if s.all[i].Event == k {
			return s.all[i], true
		}
	}
	return audit.Event{}, false
}

func (s *trailSink) durableKinds() []audit.Kind {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []audit.Kind
	for _, e := range s.durable {
		out = append(out, e.Event)
	}
	return out
}

func durableAPI(t *testing.T) (*API, *trailSink) {
	t.Helper()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	sink := &trailSink{}
	table, err := ratelimit.NewTable(ratelimit.Config{})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := bans.Open("", bans.Config{}, now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mgr.Close() })
	g, err := guard.New(guard.Options{Limits: table, Bans: mgr, Audit: sink})
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{Key: "k", Tokens: tokens.NewStore(tokens.Options{}), Bans: g, Audit: sink,
		Now: func() time.Time { return now }}), sink
}

func call(api *API, method, path, body string) (int, map[string]any) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer k")
	req.RemoteAddr = "127.0.0.1:4000"
	rw := httptest.NewRecorder()
	api.ServeHTTP(rw, req)
	var out map[string]any
	_ = json.Unmarshal(rw.Body.Bytes(), &out)
	return rw.Code, out
}

// A manual ban, an unban and a mint are answered only once their line is
// durable; when the trail cannot confirm it the answer is 503
// audit_unavailable (and that refusal is audited too), never success.
func TestAdminActionsDurable(t *testing.T) {
	api, sink := durableAPI(t)

	code, out := call(api, "POST", "/v1/bans", `{"prefix":"203.0.113.7","for":"1h","reason":"abuse report #12","actor":"cli:alice"}`)
	if code != http.StatusCreated || out["reason"] != "manual" || out["note"] != "abuse report #12" {
		t.Fatalf("ban add: %d %v", code, out)
	}
	ban, _ := sink.last(audit.KindBan)
	if ban.IP != netip.MustParseAddr("203.0.113.7") || ban.CountedPrefix != netip.MustParsePrefix("203.0.113.7/32") ||
		ban.Reason != reason.Manual || ban.Actor != "cli:alice via api@127.0.0.1" || !strings.Contains(ban.Detail, "abuse report #12") {
		t.Fatalf("ban line %+v", ban)
	}
	if code, out := call(api, "GET", "/v1/bans", ""); code != http.StatusOK || !strings.Contains(fmt.Sprint(out), "note:abuse report #12") {
		t.Fatalf("ban list: %d %v", code, out)
	}
	if code, out := call(api, "DELETE", "/v1/bans/203.0.113.7?actor=cli:alice", ""); code != http.StatusOK {
		t.Fatalf("ban rm: %d %v", code, out)
	}
	if code, out := call(api, "POST", "/v1/tokens", `{"userId":"alice","topics":["news"]}`); code != http.StatusCreated || out["token"] == nil {
		t.Fatalf("mint: %d %v", code, out)
	}
	if got := sink.durableKinds(); fmt.Sprint(got) != "[ban unban admin]" {
		t.Fatalf("durable lines %v, want ban, unban and the mint's admin line", got)
	}

	sink.setFailing(true)
	for _, c := range []struct{ method, path, body, what string }{
		{"POST", "/v1/bans", `{"prefix":"198.51.100.0/24"}`, "198.51.100.0/24 is banned"},
		{"DELETE", "/v1/bans/198.51.100.0%2F24", "", "198.51.100.0/24 is unbanned"},
		{"POST", "/v1/tokens", `{"userId":"bob"}`, "token minted and withheld"},
	} {
		code, out := call(api, c.method, c.path, c.body)
		msg, _ := out["message"].(string)
		if code != http.StatusServiceUnavailable || out["error"] != "audit_unavailable" || !strings.HasPrefix(msg, c.what) || out["token"] != nil {
			t.Errorf("%s %s with a failing trail: %d %v, want 503 audit_unavailable", c.method, c.path, code, out)
		}
		refusal, _ := sink.last(audit.KindAdmin)
		if refusal.Reason != reason.AuditUnavailable || refusal.Code != http.StatusServiceUnavailable {
			t.Errorf("%s %s: refusal line %+v", c.method, c.path, refusal)
		}
	}
}

// Removing a ban that does not exist is a refusal like any other: 404
// not_banned, and an admin line.
func TestUnbanNotBannedAudited(t *testing.T) {
	api, sink := durableAPI(t)
	code, out := call(api, "DELETE", "/v1/bans/192.0.2.9", "")
	if code != http.StatusNotFound || out["error"] != "not_banned" {
		t.Fatalf("unban of nothing: %d %v", code, out)
	}
	if e, ok := sink.last(audit.KindAdmin); !ok || e.Reason != reason.NotBanned || e.Code != http.StatusNotFound {
		t.Fatalf("refusal line %+v", e)
	}
}
