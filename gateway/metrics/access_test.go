package metrics_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portcullis-gw/portcullis/gateway/metrics"
)

// keyCheck stands in for the admin API's bearer check: it lets through a
// request carrying "Bearer k", answers 401 to any other, and counts what
// it saw.
type keyCheck struct{ asked, refused int }

func (k *keyCheck) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k.asked++
		if r.Header.Get("Authorization") != "Bearer k" {
			k.refused++
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func TestAccessRule(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	for _, c := range []struct {
		name     string
		public   bool
		peer     string
		header   map[string]string
		want     int
		keyAsked bool
	}{
		{name: "loopback v4", peer: "127.0.0.1:40000", want: 200},
		{name: "loopback v4 range", peer: "127.8.9.10:40000", want: 200},
		{name: "loopback v6", peer: "[::1]:40000", want: 200},
		{name: "loopback v4-mapped v6", peer: "[::ffff:127.0.0.1]:40000", want: 200},
		{name: "remote without key", peer: "192.0.2.7:40000", want: 401, keyAsked: true},
		{name: "remote with key", peer: "192.0.2.7:40000", header: map[string]string{"Authorization": "Bearer k"},
			want: 200, keyAsked: true},
		{name: "remote claiming loopback in forwarding headers", peer: "192.0.2.7:40000",
			header: map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1", "Host": "localhost"},
			want:   401, keyAsked: true},
		{name: "unspecified address is not loopback", peer: "0.0.0.0:40000", want: 401, keyAsked: true},
		{name: "no address", peer: "@", want: 401, keyAsked: true},
		{name: "public, remote without key", public: true, peer: "192.0.2.7:40000", want: 200},
		{name: "public, loopback", public: true, peer: "127.0.0.1:40000", want: 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			var k keyCheck
			h := metrics.Access(ok, c.public, k.wrap)
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			req.RemoteAddr = c.peer
			for name, v := range c.header {
				req.Header.Set(name, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Errorf("status %d, want %d", rec.Code, c.want)
			}
			if (k.asked > 0) != c.keyAsked {
				t.Errorf("key check asked %d times, want asked: %v", k.asked, c.keyAsked)
			}
		})
	}
}
