package origin

import (
	"testing"

	"github.com/portcullis-gw/portcullis/policy/reason"
)

func TestAllowList(t *testing.T) {
	c, err := NewChecker([]string{"https://app.example.com", "http://localhost:3000"}, false)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		origin string
		ok     bool
	}{
		{"https://app.example.com", true},
		{"https://APP.example.com", true},
		{"https://app.example.com:443", true},
		{"http://localhost:3000", true},
		{"http://app.example.com", false},
		{"https://app.example.com.evil.example", false},
		{"https://evil-app.example.com", false},
		{"https://app.example.com@evil.example", false},
		{"https://app.example.com.", false},
		{"https://app.example.com/path", false},
		{"https://app.example.com:8443", false},
		{"null", false},
		{"", false},
		{"http://localhost:30000", false},
	}
	for _, tc := range cases {
		got := c.Check(tc.origin, true, "gw.example.com", false) == reason.None
		if got != tc.ok {
			t.Errorf("%q: allowed=%v, want %v", tc.origin, got, tc.ok)
		}
	}
	if c.Check("", false, "x", false) != reason.BadOrigin {
		t.Error("missing origin allowed with allowMissing=false")
	}
}

func TestSameHost(t *testing.T) {
	c, _ := NewChecker(nil, true)
	cases := []struct {
		origin, host string
		ok           bool
	}{
		{"http://localhost:8080", "localhost:8080", true},
		{"http://LOCALHOST:8080", "localhost:8080", true},
		{"http://localhost:8081", "localhost:8080", false},
		{"http://evil.example", "localhost:8080", false},
		{"https://gw.example.com", "gw.example.com", true},
		{"http://gw.example.com", "gw.example.com", true},
		{"http://gw.example.com.evil", "gw.example.com", false},
	}
	for _, tc := range cases {
		got := c.Check(tc.origin, true, tc.host, false) == reason.None
		if got != tc.ok {
			t.Errorf("%q vs host %q: allowed=%v, want %v", tc.origin, tc.host, got, tc.ok)
		}
	}
	if c.Check("", false, "x", false) != reason.None {
		t.Error("missing origin refused with allowMissing=true")
	}
}

func TestBadConfig(t *testing.T) {
	for _, bad := range []string{"app.example.com", "https://*.example.com", "https://a.example.com/", "ftp://x", "https://a.example.com/p"} {
		if _, err := NewChecker([]string{bad}, false); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
