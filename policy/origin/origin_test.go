package origin

import (
	"fmt"
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

func TestAllowList(t *testing.T) {
	c, err := NewChecker([]string{
		"https://app.example.com",
		"http://localhost:3000",
		"HTTPS://Admin.Example.COM:443",
		"https://[2001:db8::1]:8443",
		"http://192.0.2.7",
		"wss://ws.example.com",
		"https://xn--bcher-kva.example",
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		origin string
		ok     bool
	}{
		{"exact", "https://app.example.com", true},
		{"explicit default port", "https://app.example.com:443", true},
		{"ASCII case ignored", "https://APP.example.com", true},
		{"scheme case ignored", "HTTPS://app.example.com", true},
		{"config normalised", "https://admin.example.com", true},
		{"with port", "http://localhost:3000", true},
		{"IPv6 literal", "https://[2001:db8::1]:8443", true},
		{"IPv6 literal, other spelling", "https://[2001:DB8:0::1]:8443", true},
		{"IPv4 literal", "http://192.0.2.7", true},
		{"IPv4 literal, port 80", "http://192.0.2.7:80", true},
		{"wss entry", "wss://ws.example.com:443", true},
		{"punycode entry", "https://xn--bcher-kva.example", true},
		{"OWS trimmed", " https://app.example.com\t", true},

		{"suffix attack", "https://app.example.com.evil.example", false},
		{"prefix attack", "https://evil-app.example.com", false},
		{"sub-domain", "https://x.app.example.com", false},
		{"parent domain", "https://example.com", false},
		{"user info", "https://app.example.com@evil.example", false},
		{"user info before", "https://evil.example@app.example.com", false},
		{"trailing dot", "https://app.example.com.", false},
		{"path", "https://app.example.com/", false},
		{"path 2", "https://app.example.com/path", false},
		{"query", "https://app.example.com?x", false},
		{"fragment", "https://app.example.com#x", false},
		{"backslash", `https://app.example.com\@evil.example`, false},
		{"scheme downgrade", "http://app.example.com", false},
		{"other scheme same host", "wss://app.example.com", false},
		{"ftp", "ftp://app.example.com", false},
		{"other port", "https://app.example.com:8443", false},
		{"empty port", "https://app.example.com:", false},
		{"leading-zero port", "https://app.example.com:0443", false},
		{"port overflow", "http://localhost:3000" + "0", false},
		{"port 65536+", "http://localhost:68536", false},
		{"null", "null", false},
		{"empty", "", false},
		{"no scheme", "app.example.com", false},
		{"scheme-relative", "//app.example.com", false},
		{"space inside", "https://app .example.com", false},
		{"CRLF", "https://app.example.com\r\nX: y", false},
		{"NUL", "https://app.example.com\x00.evil", false},
		{"percent-encoded", "https://app%2eexample.com", false},
		{"wildcard", "https://*.example.com", false},
		{"Kelvin sign K", "https://admin.example.\u212Aom", false},
		{"dotted capital I", "https://\u0130pp.example.com", false},
		{"Cyrillic a", "https://\u0430pp.example.com", false},
		{"full-width dot", "https://app\uff0eexample.com", false},
		{"raw IDN of the punycode entry", "https://b\u00fccher.example", false},
		{"IPv6 zone", "https://[2001:db8::1%25eth0]:8443", false},
		{"IPv4 in brackets", "http://[192.0.2.7]", false},
		{"short IPv4", "http://192.0.7", false},
		{"IPv4 leading zero", "http://192.0.2.07", false},
		{"mapped IPv6 for the IPv4 entry", "http://[::ffff:192.0.2.7]", false},
		{"double scheme", "https://https://app.example.com", false},
		{"empty host", "https://", false},
		{"empty label", "https://app..example.com", false},
	}
	for _, tc := range cases {
		got := c.Check(tc.origin, true, "gw.example.com", true)
		if (got == reason.None) != tc.ok || (got != reason.None && got != reason.BadOrigin) {
			t.Errorf("%s: Check(%q) = %v, want allowed=%v", tc.name, tc.origin, got, tc.ok)
		}
	}
	// Same-host is not consulted when a list is configured.
	if c.Check("https://gw.example.com", true, "gw.example.com", true) != reason.BadOrigin {
		t.Error("the request's own host allowed although not in the list")
	}
}

func TestSameHost(t *testing.T) {
	c, err := NewChecker(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name         string
		origin, host string
		tls          bool
		ok           bool
	}{
		{"browser on a dev port", "http://localhost:8080", "localhost:8080", false, true},
		{"case of origin", "http://LOCALHOST:8080", "localhost:8080", false, true},
		{"case of Host", "http://localhost:8080", "LocalHost:8080", false, true},
		{"other port", "http://localhost:8081", "localhost:8080", false, false},
		{"default port missing in Origin", "http://localhost", "localhost:8080", false, false},
		{"other host", "http://evil.example", "localhost:8080", false, false},
		{"https page, TLS at the gateway", "https://gw.example.com", "gw.example.com", true, true},
		{"https page behind a TLS proxy", "https://gw.example.com", "gw.example.com", false, true},
		{"http page, plain", "http://gw.example.com", "gw.example.com", false, true},
		{"http page may not drive a TLS socket", "http://gw.example.com", "gw.example.com", true, false},
		{"explicit default port in Host", "https://gw.example.com", "gw.example.com:443", true, true},
		{"explicit port in Origin, none in Host", "https://gw.example.com:443", "gw.example.com", true, true},
		{"non-default Origin port, none in Host", "https://gw.example.com:8443", "gw.example.com", true, false},
		{"https default port vs Host :80", "https://gw.example.com", "gw.example.com:80", false, false},
		{"suffix attack", "http://gw.example.com.evil", "gw.example.com", false, false},
		{"prefix attack", "http://evil-gw.example.com", "gw.example.com", false, false},
		{"parent", "http://example.com", "gw.example.com", false, false},
		{"user info", "http://gw.example.com@evil", "gw.example.com", false, false},
		{"trailing dot in Origin", "http://gw.example.com.", "gw.example.com", false, false},
		{"trailing dot in Host", "http://gw.example.com", "gw.example.com.", false, false},
		{"null", "null", "gw.example.com", false, false},
		{"ws scheme", "ws://gw.example.com", "gw.example.com", false, false},
		{"IPv6", "http://[::1]:8080", "[::1]:8080", false, true},
		{"IPv6 other spelling", "http://[0:0::1]:8080", "[::1]:8080", false, true},
		{"IPv6 vs name", "http://[::1]:8080", "localhost:8080", false, false},
		{"IPv4", "http://127.0.0.1:8080", "127.0.0.1:8080", false, true},
		{"IPv4 vs mapped", "http://[::ffff:127.0.0.1]:8080", "127.0.0.1:8080", false, false},
		{"empty Host", "http://gw.example.com", "", false, false},
		{"garbage Host", "http://gw.example.com", "gw.example.com/x", false, false},
		{"Host with user info", "http://evil", "gw@evil", false, false},
		{"Kelvin sign in Origin", "http://\u212Aey.example", "key.example", false, false},
		{"IDN in both", "http://b\u00fccher.example", "b\u00fccher.example", false, false},
	}
	for _, tc := range cases {
		got := c.Check(tc.origin, true, tc.host, tc.tls)
		if (got == reason.None) != tc.ok {
			t.Errorf("%s: Check(%q, host %q, tls=%v) = %v, want allowed=%v", tc.name, tc.origin, tc.host, tc.tls, got, tc.ok)
		}
	}
}

func TestMissingOrigin(t *testing.T) {
	for _, list := range [][]string{nil, {"https://app.example.com"}} {
		allow, _ := NewChecker(list, true)
		deny, _ := NewChecker(list, false)
		if r := allow.Check("", false, "gw.example.com", false); r != reason.None {
			t.Errorf("list %v, allowMissing: %v", list, r)
		}
		if r := deny.Check("", false, "gw.example.com", false); r != reason.BadOrigin {
			t.Errorf("list %v, !allowMissing: %v", list, r)
		}
		// Present but empty is never "missing".
		if r := allow.Check("", true, "gw.example.com", false); r != reason.BadOrigin {
			t.Errorf("list %v: empty Origin header allowed", list)
		}
		if !allow.AllowMissing() || deny.AllowMissing() {
			t.Error("AllowMissing")
		}
	}
	if !DefaultAllowMissing {
		t.Error("the documented default is to allow non-browser clients")
	}
}

func TestBadConfig(t *testing.T) {
	for _, bad := range []string{
		"app.example.com",
		"https://*.example.com",
		"https://a.example.com/",
		"https://a.example.com/p",
		"ftp://x",
		"null",
		"",
		"https://a.example.com.",
		"https://user@a.example.com",
		"https://a.example.com:",
		"https://a.example.com:0",
		"https://a.example.com:99999",
		"https://[fe80::1%25eth0]",
	} {
		if _, err := NewChecker([]string{bad}, false); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	_, err := NewChecker([]string{"https://ok.example", "https://bücher.example", "https://x/"}, false)
	if err == nil || !strings.Contains(err.Error(), "origins[1]") || !strings.Contains(err.Error(), "xn--") ||
		!strings.Contains(err.Error(), "origins[2]") || strings.Contains(err.Error(), "origins[0]") {
		t.Errorf("errors not precise: %v", err)
	}
}

func TestAllowedNormalised(t *testing.T) {
	c, err := NewChecker([]string{"HTTPS://App.Example.com", "https://app.example.com:443", "http://[2001:DB8::1]"}, false)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(c.Allowed())
	if want := "[https://app.example.com:443 http://[2001:db8::1]:80]"; got != want {
		t.Errorf("Allowed() = %s, want %s", got, want)
	}
}

func TestCheckNoAllocs(t *testing.T) {
	list, _ := NewChecker([]string{"https://app.example.com", "https://[2001:db8::1]"}, false)
	same, _ := NewChecker(nil, false)
	n := testing.AllocsPerRun(200, func() {
		if list.Check("https://APP.example.com", true, "gw", true) != reason.None ||
			list.Check("https://[2001:db8::1]:443", true, "gw", true) != reason.None ||
			list.Check("https://app.example.com.evil.example", true, "gw", true) != reason.BadOrigin ||
			same.Check("https://gw.example.com", true, "GW.example.com:443", true) != reason.None {
			t.Fatal("wrong verdict")
		}
	})
	if n != 0 {
		t.Fatalf("Check: %v allocs per run", n)
	}
}

func ExampleChecker_Check() {
	c, _ := NewChecker([]string{"https://app.example.com"}, DefaultAllowMissing)
	fmt.Println(c.Check("https://app.example.com", true, "gw.example.com", true))
	fmt.Println(c.Check("https://app.example.com.evil.example", true, "gw.example.com", true))
	fmt.Println(c.Check("", false, "gw.example.com", true))
	// Output:
	// none
	// bad_origin
	// none
}

func BenchmarkCheck(b *testing.B) {
	c, _ := NewChecker([]string{"https://app.example.com", "http://localhost:3000"}, false)
	b.ReportAllocs()
	for b.Loop() {
		c.Check("https://app.example.com", true, "gw.example.com", true)
	}
}
