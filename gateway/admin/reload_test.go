package admin

import (
	"errors"
	"strings"
	"testing"
)

// POST /v1/reload answers the changed keys, or the refusal with its code,
// HTTP status and the key at fault; the actor is the caller's address.
func TestReloadAnswers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		changed []string
		err     error
		body    string
		code    int
		want    string
	}{
		{"applied", []string{"topics", "limits.msg_rate.rate"}, nil, "", 200, `{"changed":["topics","limits.msg_rate.rate"]}`},
		{"nothing changed", nil, nil, "{}", 200, `{"changed":[]}`},
		{"needs a restart", nil, &ReloadError{Code: ReloadNeedsRestart, Key: "listen",
			Err: errors.New(`listen (":8080" to ":9090") changed, which needs a restart`)}, "", 409,
			`{"error":"needs_restart","message":"listen (\":8080\" to \":9090\") changed, which needs a restart","key":"listen"}`},
		{"bad file", nil, &ReloadError{Code: ReloadConfigInvalid, Key: "limits.msg_rate.rate",
			Err: errors.New("c.yaml:3:5: limits.msg_rate.rate: must be positive")}, "", 422,
			`{"error":"config_invalid","message":"c.yaml:3:5: limits.msg_rate.rate: must be positive","key":"limits.msg_rate.rate"}`},
		{"apply failed", nil, errors.New("gateway: reload: boom"), "", 500,
			`{"error":"reload_failed","message":"gateway: reload: boom"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var actor string
			a := New(Options{Key: "k", Audit: &sjSink{}, Reload: func(by string) ([]string, error) {
				actor = by
				return tc.changed, tc.err
			}})
			code, _, raw := sjDo(a, "/v1/reload", tc.body)
			if code != tc.code || strings.TrimSpace(raw) != tc.want {
				t.Fatalf("%d %s\nwant %d %s", code, raw, tc.code, tc.want)
			}
			if actor != "api@192.0.2.1" {
				t.Fatalf("actor %q", actor)
			}
		})
	}
}

// A body other than an empty object is refused before anything reloads.
func TestReloadRefusesABody(t *testing.T) {
	called := false
	a := New(Options{Key: "k", Audit: &sjSink{}, Reload: func(string) ([]string, error) { called = true; return nil, nil }})
	code, out, _ := sjDo(a, "/v1/reload", `{"force":true}`)
	if code != 400 || out["error"] != "bad_request" || called {
		t.Fatalf("%d %v (reload called: %v)", code, out, called)
	}
}
