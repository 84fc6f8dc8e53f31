package gateway

import (
	"bufio"
	"bytes"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	jsclient "github.com/portcullis-gw/portcullis/clients/js"
)

// fetch sends one plain HTTP request (extra header lines end in CRLF) and
// returns the response with its body read.
func fetch(t *testing.T, s *Server, method, path, header string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: gw.example\r\n%s\r\n", method, path, header)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp, body
}

// The public listener serves the browser client at /portcullis.js: GET
// and HEAD, cacheable, revalidated by its ETag (304), never sniffed, from
// any origin; the body is the embedded file and hashes to the integrity
// string `portcullis version --client-sri` prints. Like a health probe it
// leaves no audit line, strikes nothing and takes nothing from the
// address's connection rate (5 attempts here, 30 fetches).
func TestClientJSServed(t *testing.T) {
	g := &rateGuard{maxAttempts: 5, attempts: map[netip.Addr]int{}}
	s, rec, _ := startProbeServer(t, g, nil)
	src := jsclient.Source()
	sum := sha512.Sum384(src)
	sri := "sha384-" + base64.StdEncoding.EncodeToString(sum[:])
	if jsclient.Integrity() != sri {
		t.Fatalf("Integrity() = %q, the file hashes to %q", jsclient.Integrity(), sri)
	}
	etag := `"` + sri + `"`
	wantHeaders := map[string]string{
		"Content-Type":                "text/javascript; charset=utf-8",
		"Cache-Control":               "public, max-age=3600",
		"Etag":                        etag,
		"X-Content-Type-Options":      "nosniff",
		"Access-Control-Allow-Origin": "*",
	}
	check := func(what string, resp *http.Response, status int, body []byte, wantBody []byte) {
		t.Helper()
		if resp.StatusCode != status {
			t.Fatalf("%s: status %d, want %d", what, resp.StatusCode, status)
		}
		for k, v := range wantHeaders {
			if k == "Content-Type" && status == http.StatusNotModified {
				continue
			}
			if got := resp.Header.Get(k); got != v {
				t.Fatalf("%s: %s %q, want %q", what, k, got, v)
			}
		}
		if !resp.Close {
			t.Fatalf("%s: no Connection: close", what)
		}
		if !bytes.Equal(body, wantBody) {
			t.Fatalf("%s: body of %d bytes, want %d", what, len(body), len(wantBody))
		}
	}

	for i := range 10 {
		resp, body := fetch(t, s, "GET", "/portcullis.js", "")
		check(fmt.Sprintf("GET %d", i), resp, 200, body, src)
		if resp.ContentLength != int64(len(src)) {
			t.Fatalf("Content-Length %d, want %d", resp.ContentLength, len(src))
		}
		got := sha512.Sum384(body)
		if "sha384-"+base64.StdEncoding.EncodeToString(got[:]) != jsclient.Integrity() {
			t.Fatal("the served body does not match the integrity string")
		}
	}
	resp, body := fetch(t, s, "GET", "/portcullis.js?v=2", "")
	check("GET with a query", resp, 200, body, src)
	resp, body = fetch(t, s, "HEAD", "/portcullis.js", "")
	check("HEAD", resp, 200, body, nil)
	if resp.Header.Get("Content-Length") != fmt.Sprint(len(src)) {
		t.Fatalf("HEAD Content-Length %q, want %d", resp.Header.Get("Content-Length"), len(src))
	}
	for i, h := range []string{
		"If-None-Match: " + etag + "\r\n",
		"if-none-match: W/" + etag + "\r\n",
		`If-None-Match: "other", ` + etag + "\r\n",
		"If-None-Match: \"a\"\r\nIf-None-Match: " + etag + "\r\n",
		"If-None-Match: *\r\n",
	} {
		resp, body = fetch(t, s, "GET", "/portcullis.js", h)
		check(fmt.Sprintf("revalidation %d", i), resp, http.StatusNotModified, body, nil)
		resp, body = fetch(t, s, "HEAD", "/portcullis.js", h)
		check(fmt.Sprintf("HEAD revalidation %d", i), resp, http.StatusNotModified, body, nil)
	}
	for i, h := range []string{`If-None-Match: "sha384-old"` + "\r\n", "If-Match: " + etag + "\r\n", "X-If-None-Match: " + etag + "\r\n"} {
		resp, body = fetch(t, s, "GET", "/portcullis.js", h)
		check(fmt.Sprintf("stale tag %d", i), resp, 200, body, src)
	}
	checkFor(t, func() bool { return s.Stats().Connections == 0 })
	if evs := rec.all(); len(evs) != 0 {
		t.Fatalf("serving the client left %d audit events: %+v", len(evs), evs)
	}
	g.mu.Lock()
	strikes, attempts := g.strikes, g.attempts[netip.MustParseAddr("127.0.0.1")]
	g.mu.Unlock()
	if strikes != 0 || attempts != 0 {
		t.Fatalf("30 fetches struck %d times and kept %d attempts", strikes, attempts)
	}

	// Nothing else under that name: other methods and paths are upgrade
	// requests like any other, refused, audited and struck.
	for _, r := range []struct{ method, path string }{
		{"POST", "/portcullis.js"}, {"GET", "/portcullis.d.ts"}, {"GET", "/portcullis.js/x"},
		{"GET", "/clients/js/portcullis.js"}, {"HEAD", "/healthz"},
	} {
		resp, body := fetch(t, s, r.method, r.path, "")
		if resp.StatusCode < 400 || resp.StatusCode >= 500 || resp.Header.Get("ETag") != "" {
			t.Fatalf("%s %s: %d %q, want the handshake refusal", r.method, r.path, resp.StatusCode, body)
		}
		if r.method != "HEAD" && !bytes.Contains(body, []byte(`"error"`)) {
			t.Fatalf("%s %s: body %q, want a JSON error", r.method, r.path, body)
		}
	}
	checkFor(t, func() bool { return len(rec.all()) == 5 })
	for _, e := range rec.all() {
		if e.Event != audit.KindConnRejected || (e.Reason != reason.BadPath && e.Reason != reason.BadHandshake) {
			t.Fatalf("refusal audited as %v %v", e.Event, e.Reason)
		}
	}
	g.mu.Lock()
	strikes = g.strikes
	g.mu.Unlock()
	if strikes != 5 {
		t.Fatalf("%d strikes for 5 refused requests", strikes)
	}
}

// The whole answer fits the socket's send buffer, into which it is
// written at once.
func TestClientJSFitsSendBuffer(t *testing.T) {
	if n := len(clientJSFull); n > DefaultSendBufferBytes/2 {
		t.Fatalf("the /portcullis.js answer is %d bytes; it must stay well below SO_SNDBUF (%d)", n, DefaultSendBufferBytes)
	}
}

func TestProbeOfClientJS(t *testing.T) {
	for req, want := range map[string]probe{
		"GET /portcullis.js HTTP/1.1\r\n\r\n":         probeClientJS,
		"GET /portcullis.js?v=3 HTTP/1.1\r\n\r\n":     probeClientJS,
		"HEAD /portcullis.js HTTP/1.1\r\n\r\n":        probeClientJSHead,
		"POST /portcullis.js HTTP/1.1\r\n\r\n":        probeNone,
		"GET /portcullis.jsx HTTP/1.1\r\n\r\n":        probeNone,
		"GET /Portcullis.js HTTP/1.1\r\n\r\n":         probeNone,
		"GET /portcullis.d.ts HTTP/1.1\r\n\r\n":       probeNone,
		"GET /ws/../portcullis.js HTTP/1.1\r\n\r\n":   probeNone,
		"HEAD /healthz HTTP/1.1\r\n\r\n":              probeNone,
		"HEAD /readyz HTTP/1.1\r\n\r\n":               probeNone,
		"head /portcullis.js HTTP/1.1\r\n\r\n":        probeNone,
		"GET http://a/portcullis.js HTTP/1.1\r\n\r\n": probeNone,
	} {
		if got := probeOf([]byte(req)); got != want {
			t.Errorf("probeOf(%q) = %d, want %d", req, got, want)
		}
	}
}

func TestIfNoneMatch(t *testing.T) {
	tag := []byte(`"sha384-abc"`)
	for req, want := range map[string]bool{
		"GET / HTTP/1.1\r\n\r\n":                                        false,
		"GET / HTTP/1.1\r\nIf-None-Match: \"sha384-abc\"\r\n\r\n":       true,
		"GET / HTTP/1.1\r\nIf-None-Match:\"sha384-abc\"\r\n\r\n":        true,
		"GET / HTTP/1.1\r\nIF-NONE-MATCH: W/\"sha384-abc\"\r\n\r\n":     true,
		"GET / HTTP/1.1\r\nIf-None-Match: \"x\",\"sha384-abc\"\r\n\r\n": true,
		"GET / HTTP/1.1\r\nIf-None-Match: \"sha384-ab\"\r\n\r\n":        false,
		"GET / HTTP/1.1\r\nIf-None-Match: sha384-abc\r\n\r\n":           false,
		"GET / HTTP/1.1\r\nIf-None-Match: \r\n\r\n":                     false,
		"GET / HTTP/1.1\r\nIf-None-Match: *\r\n\r\n":                    true,
		"GET / HTTP/1.1\r\nX: If-None-Match: *\r\n\r\n":                 false,
		// The request line is no field.
		"If-None-Match: * HTTP/1.1\r\n\r\n": false,
	} {
		if got := ifNoneMatch([]byte(req), tag); got != want {
			t.Errorf("ifNoneMatch(%q) = %v, want %v", req, got, want)
		}
	}
}

// FuzzIfNoneMatch: any request bytes, no panic, and a match only where
// the tag or * appears.
func FuzzIfNoneMatch(f *testing.F) {
	f.Add([]byte("GET /portcullis.js HTTP/1.1\r\nIf-None-Match: W/\"sha384-abc\", *\r\n\r\n"))
	f.Add([]byte("\r\n:\r\n,,,\r\n"))
	tag := []byte(`"sha384-abc"`)
	f.Fuzz(func(t *testing.T, req []byte) {
		if ifNoneMatch(req, tag) && !bytes.Contains(req, tag) && !bytes.Contains(req, []byte("*")) {
			t.Fatalf("match without the tag in %q", req)
		}
		_ = probeOf(req)
	})
}
