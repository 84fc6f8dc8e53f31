package feed

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// A good response the broker could not publish is a failed poll: audited
// feed_failed with reason feed_publish and the broker's error, counted as
// a failure.
func TestPublishFailureAudited(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"a":1}`))
	}))
	defer up.Close()
	rules, err := topics.Compile([]topics.Rule{{Match: "t", Subscribe: topics.Public,
		Feed: &topics.Feed{URL: up.URL, Every: time.Second}}}, topics.Deny)
	if err != nil {
		t.Fatal(err)
	}
	ev := &events{}
	calls := 0
	r := New(Options{Rules: rules, Audit: ev, Publish: func(topic string, data []byte) (int, error) {
		calls++
		return 0, errors.New("publish to " + topic + ": broker: peer unreachable")
	}})
	r.once(context.Background(), "t", up.URL, time.Second)
	if calls != 1 || len(ev.ev) != 1 || ev.ev[0].Event != audit.KindFeedFailed || ev.ev[0].Reason.String() != "feed_publish" ||
		ev.ev[0].Topic != "t" || !strings.Contains(ev.ev[0].Detail, "peer unreachable") {
		t.Fatalf("calls %d, events %+v", calls, ev.ev)
	}
	if st := r.Stats(); st.Polls != 1 || st.Failures != 1 {
		t.Fatalf("stats %+v", st)
	}
}
