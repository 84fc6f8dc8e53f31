package metrics

import (
	"net/http"
	"net/netip"
)

// Access returns h behind the access rule of GET /metrics: a request from
// a loopback peer needs no key; with public (admin.metrics_public) no
// request needs one; every other request goes through keyed, the admin
// API's bearer check, which answers 401 with its JSON error and audits the
// refusal.
//
// The peer is the socket's (r.RemoteAddr as net/http sets it), never a
// forwarding header: a proxy on the same host makes every request look
// local, so put the admin listener behind none, or leave public off and
// scrape with the key.
func Access(h http.Handler, public bool, keyed func(http.Handler) http.Handler) http.Handler {
	if public {
		return h
	}
	withKey := keyed(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if loopbackPeer(r) {
			h.ServeHTTP(w, r)
			return
		}
		withKey.ServeHTTP(w, r)
	})
}

// loopbackPeer reports whether r came from a loopback socket address
// (127.0.0.0/8, ::1, or ::ffff:127.0.0.0/104). A RemoteAddr that is no
// address and port is not loopback.
func loopbackPeer(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	return ap.Addr().Unmap().IsLoopback()
}
