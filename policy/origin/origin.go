// Package origin decides whether a WebSocket handshake's Origin header is
// acceptable: an exact scheme://host[:port] allow-list, or, with none
// configured, an Origin that names the same host the request was sent to.
// It imports only policy/reason from the project.
package origin

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/portcullis-gw/portcullis/policy/reason"
)

// Checker is immutable and safe for concurrent use.
type Checker struct {
	allowed      map[string]bool // normalised scheme://host:port
	allowMissing bool
}

// NewChecker builds a checker from exact origins ("https://app.example.com",
// "http://localhost:3000"). allowMissing admits requests with no Origin
// header: browsers always send one on WebSocket handshakes, so its absence
// means a non-browser client, which cannot be the victim of cross-site
// WebSocket hijacking.
func NewChecker(allowed []string, allowMissing bool) (*Checker, error) {
	c := &Checker{allowed: make(map[string]bool), allowMissing: allowMissing}
	for i, a := range allowed {
		n, ok := normalise(a)
		if !ok {
			return nil, fmt.Errorf("origins[%d]: %q is not an exact scheme://host[:port] (no path, no wildcard)", i, a)
		}
		c.allowed[n] = true
	}
	return c, nil
}

// normalise lowercases scheme and host and makes the port explicit; it
// refuses anything but scheme://host[:port].
func normalise(o string) (string, bool) {
	u, err := url.Parse(o)
	if err != nil || u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" ||
		u.Path != "" || u.Host == "" || strings.ContainsAny(u.Host, "*%") {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	switch scheme {
	case "http", "ws":
		if port == "" {
			port = "80"
		}
	case "https", "wss":
		if port == "" {
			port = "443"
		}
	default:
		return "", false
	}
	host := strings.ToLower(u.Hostname())
	if host == "" || strings.HasSuffix(host, ".") {
		return "", false
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host + ":" + port, true
}

// Check decides on a handshake. origin is the header value (present says
// whether the header was sent at all), host the request's Host header. tls
// says whether the request arrived over TLS (then a bare Host means :443).
func (c *Checker) Check(origin string, present bool, host string, tls bool) reason.Reason {
	if !present {
		if c.allowMissing {
			return reason.None
		}
		return reason.BadOrigin
	}
	n, ok := normalise(origin)
	if !ok {
		return reason.BadOrigin
	}
	if len(c.allowed) > 0 {
		if c.allowed[n] {
			return reason.None
		}
		return reason.BadOrigin
	}
	// No list: the Origin must name the host the request was sent to.
	scheme := "http"
	if tls {
		scheme = "https"
	}
	want, ok := normalise(scheme + "://" + host)
	if !ok {
		return reason.BadOrigin
	}
	// Compare host and port; the page may be https behind a TLS proxy while
	// the gateway sees plain HTTP, so the scheme is not compared here.
	if hostPort(n) == hostPort(want) || (!tls && hostPort(n) == hostPort(strings.Replace(want, ":80", ":443", 1))) && defaultPortHost(host) {
		return reason.None
	}
	return reason.BadOrigin
}

func hostPort(n string) string {
	i := strings.Index(n, "://")
	return n[i+3:]
}

// defaultPortHost reports whether host carries no explicit port.
func defaultPortHost(host string) bool {
	if strings.HasPrefix(host, "[") {
		return strings.HasSuffix(host, "]")
	}
	return !strings.Contains(host, ":")
}
