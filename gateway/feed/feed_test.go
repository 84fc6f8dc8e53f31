package feed

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

type events struct {
	mu sync.Mutex
	ev []audit.Event
}

func (e *events) Emit(x audit.Event) { e.mu.Lock(); e.ev = append(e.ev, x); e.mu.Unlock() }

func TestFetchOutcomes(t *testing.T) {
	body, status := "", 200
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	defer up.Close()
	rules, err := topics.Compile([]topics.Rule{{Match: "t", Subscribe: topics.Public,
		Feed: &topics.Feed{URL: up.URL, Every: time.Second}}}, topics.Deny)
	if err != nil {
		t.Fatal(err)
	}
	var published []string
	ev := &events{}
	r := New(Options{Rules: rules, Audit: ev, MaxBytes: 80,
		Publish: func(topic string, data []byte) (int, error) {
			published = append(published, string(data))
			return 1, nil
		}})
	cases := []struct {
		name, body string
		status     int
		want       string // published data, or "" with the audit reason below
		reason     string
	}{
		{"good", ` {"a":1} `, 200, `{"a":1}`, ""},
		{"server error", `{"a":1}`, 500, "", "feed_status"},
		{"not JSON", `<html>`, 200, "", "feed_bad_json"},
		{"too large", `"` + strings.Repeat("x", 100) + `"`, 200, "", "feed_too_large"},
		{"0xff in a string", "{\"a\":\"\xff\"}", 200, "", "feed_bad_utf8"},
		{"surrogate in UTF-8", "\"\xed\xa0\x80\"", 200, "", "feed_bad_utf8"},
		{"too deep", strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), 200, "", "feed_too_deep"},
		{"UTF-8 text", `"é€"`, 200, `"é€"`, ""},
	}
	for _, c := range cases {
		published, ev.ev = nil, nil
		body, status = c.body, c.status
		r.once(context.Background(), "t", up.URL, time.Second)
		if c.want != "" {
			if len(published) != 1 || published[0] != c.want || len(ev.ev) != 0 {
				t.Fatalf("%s: published %q, events %v", c.name, published, ev.ev)
			}
			continue
		}
		if len(published) != 0 || len(ev.ev) != 1 || ev.ev[0].Reason.String() != c.reason || ev.ev[0].Event != audit.KindFeedFailed {
			t.Fatalf("%s: published %q, events %+v", c.name, published, ev.ev)
		}
	}
	if st := r.Stats(); st.Polls != 8 || st.Failures != 6 {
		t.Fatalf("stats %+v", st)
	}
}

func TestActiveIdleOnePoller(t *testing.T) {
	rules, _ := topics.Compile([]topics.Rule{{Match: "t", Subscribe: topics.Public,
		Feed: &topics.Feed{URL: "http://127.0.0.1:1/", Every: time.Hour}}, {Match: "plain", Subscribe: topics.Public}}, topics.Deny)
	r := New(Options{Rules: rules, Publish: func(string, []byte) (int, error) { return 0, nil }})
	r.Active("t")
	r.Active("t")
	r.Active("plain") // no feed: nothing to run
	if n := r.Stats().Active; n != 1 {
		t.Fatalf("%d pollers, want 1", n)
	}
	r.Idle("t")
	if n := r.Stats().Active; n != 0 {
		t.Fatalf("%d pollers after Idle", n)
	}
	r.Active("t")
	r.Close()
	if n := r.Stats().Active; n != 0 {
		t.Fatalf("%d pollers after Close", n)
	}
}
