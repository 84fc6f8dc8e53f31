package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/tokens"
)

type recSink struct {
	mu  sync.Mutex
	evs []audit.Event
}

func (s *recSink) Emit(e audit.Event) { s.mu.Lock(); s.evs = append(s.evs, e); s.mu.Unlock() }

// A userId is one topic segment: "alice.smith" is refused with a 400 that
// names the rule, and audited like every admin refusal; "alice" mints.
func TestMintUserIDIsOneTopicSegment(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	sink := &recSink{}
	api := New(Options{Key: "k", Tokens: tokens.NewStore(tokens.Options{}), Audit: sink, Now: func() time.Time { return now }})
	mint := func(body string) (int, map[string]string) {
		req := httptest.NewRequest("POST", "/v1/tokens", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer k")
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		var out map[string]string
		_ = json.Unmarshal(rec.Body.Bytes(), &out)
		return rec.Code, out
	}
	for _, bad := range []string{`"alice.smith"`, `"."`, `"a b"`, `""`, `"` + strings.Repeat("u", 129) + `"`} {
		code, out := mint(`{"userId":` + bad + `}`)
		if code != http.StatusBadRequest || out["error"] != "bad_request" || out["message"] != UserIDRule {
			t.Errorf("userId %s: %d %v", bad, code, out)
		}
	}
	if len(sink.evs) != 5 {
		t.Fatalf("%d audit events for 5 refusals", len(sink.evs))
	}
	for _, e := range sink.evs {
		if e.Event != audit.KindAdmin || e.Reason != reason.BadRequest || e.Code != 400 || e.Stage != audit.StageAdmin ||
			!strings.Contains(e.Detail, "one topic segment") || e.TokenFP != "" {
			t.Errorf("audit %+v", e)
		}
	}
	for _, ok := range []string{`"alice"`, `42`, `"tenant:acme@x_y-z"`} {
		code, out := mint(`{"userId":` + ok + `,"topics":["user.{userId}.**"]}`)
		if code != http.StatusCreated || out["token"] == "" {
			t.Errorf("userId %s: %d %v", ok, code, out)
		}
	}
}
