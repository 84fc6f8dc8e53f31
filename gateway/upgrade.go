package gateway

import (
	"bytes"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/gobwas/ws"

	"github.com/portcullis-gw/portcullis/gateway/native"
	"github.com/portcullis-gw/portcullis/policy/reason"
)

// subprotocols maps each name we speak to its protocol, in no particular
// order: the client's order of preference decides. WAMP v1 ("wamp") and v2
// ("wamp.2.json") plug in here.
var subprotocols = map[string]proto{
	native.Subprotocol: protoNative,
}

// upgrader runs gobwas/ws's zero-copy Upgrader over a complete request held
// in memory. One per loop: its callbacks write into the loop's current
// handshake, so no closure is allocated per connection.
type upgrader struct {
	ls *loopState
	u  ws.Upgrader

	// the handshake in progress (reset per request)
	path      []byte
	host      []byte
	origin    []byte
	hasOrigin bool
	offered   bool
	proto     proto
	chosen    bool
	rejectR   reason.Reason
	rejectS   int
	rejectM   string

	in  bytes.Reader
	out bytes.Buffer
}

type upgradeResult struct {
	reject   reason.Reason // None on success
	status   int
	message  string // for the client
	detail   string // for the audit trail
	proto    proto
	client   netip.Addr
	response []byte
}

var errRejected = ws.RejectConnectionError(ws.RejectionStatus(http.StatusBadRequest))

func (up *upgrader) init(ls *loopState) {
	up.ls = ls
	up.u = ws.Upgrader{
		OnRequest: func(uri []byte) error {
			path := uri
			if i := bytes.IndexByte(path, '?'); i >= 0 {
				path = path[:i]
			}
			if string(path) != ls.srv.opts.Path {
				return up.reject(reason.BadPath, http.StatusNotFound, "no WebSocket endpoint at this path")
			}
			return nil
		},
		OnHost: func(host []byte) error {
			up.host = append(up.host[:0], host...)
			return nil
		},
		OnHeader: func(key, value []byte) error {
			if bytes.EqualFold(key, []byte("Origin")) {
				if up.hasOrigin {
					return up.reject(reason.BadOrigin, http.StatusForbidden, "more than one Origin header")
				}
				up.hasOrigin = true
				up.origin = append(up.origin[:0], value...)
			}
			return nil
		},
		ProtocolCustom: func(v []byte) (string, bool) {
			up.offered = true
			for len(v) > 0 {
				var tok []byte
				if i := bytes.IndexByte(v, ','); i >= 0 {
					tok, v = v[:i], v[i+1:]
				} else {
					tok, v = v, nil
				}
				tok = bytes.TrimSpace(tok)
				if p, ok := subprotocols[string(tok)]; ok {
					up.proto, up.chosen = p, true
					return protoNames[p], true
				}
			}
			return "", true
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if up.offered && !up.chosen {
				return nil, up.reject(reason.BadSubprotocol, http.StatusBadRequest,
					"no supported subprotocol offered (portcullis.v1, or none)")
			}
			if r := ls.srv.opts.Origins.Check(string(up.origin), up.hasOrigin, string(up.host), false); r != reason.None {
				return nil, up.reject(r, http.StatusForbidden, "origin not allowed")
			}
			return nil, nil
		},
	}
}

func (up *upgrader) reject(r reason.Reason, status int, msg string) error {
	if up.rejectR == reason.None {
		up.rejectR, up.rejectS, up.rejectM = r, status, msg
	}
	return errRejected
}

// upgrade validates the request in req (complete, ending in a blank line)
// for c and returns the response to send or why it was refused.
func (up *upgrader) upgrade(c *conn, req []byte) upgradeResult {
	up.path, up.host, up.origin = up.path[:0], up.host[:0], up.origin[:0]
	up.hasOrigin, up.offered, up.chosen = false, false, false
	up.proto = protoNative
	up.rejectR, up.rejectS, up.rejectM = reason.None, 0, ""
	up.in.Reset(req)
	up.out.Reset()

	_, err := up.u.Upgrade(memConn{&up.in, &up.out})
	if up.rejectR != reason.None {
		detail := ""
		if up.rejectR == reason.BadOrigin && up.hasOrigin {
			detail = "origin " + strconv.Quote(capString(string(up.origin), 200))
		}
		return upgradeResult{reject: up.rejectR, status: up.rejectS, message: up.rejectM, detail: detail}
	}
	if err != nil {
		status := http.StatusBadRequest
		if rej, ok := err.(*ws.ConnectionRejectedError); ok && rej.StatusCode() != 0 {
			status = rej.StatusCode()
		}
		return upgradeResult{reject: reason.BadHandshake, status: status,
			message: "not a valid WebSocket upgrade request", detail: capString(err.Error(), 200)}
	}
	resp := append([]byte(nil), up.out.Bytes()...)
	return upgradeResult{proto: up.proto, client: c.peer.Addr(), response: resp}
}

func capString(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// httpReject renders a refusal: a JSON error body and Connection: close.
func httpReject(status int, r reason.Reason, msg string) []byte {
	body := fmt.Sprintf(`{"error":%q,"message":%q}`, r.String(), msg)
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
}

// memConn is the in-memory "connection" the Upgrader reads the complete
// request from and writes its response to.
type memConn struct {
	r *bytes.Reader
	w *bytes.Buffer
}

func (m memConn) Read(p []byte) (int, error)  { return m.r.Read(p) }
func (m memConn) Write(p []byte) (int, error) { return m.w.Write(p) }
