package gateway

import (
	"bytes"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/portcullis-gw/portcullis/gateway/native"
	"github.com/portcullis-gw/portcullis/gateway/wamp"
	"github.com/portcullis-gw/portcullis/policy/reason"
)

// subprotocols maps each name we speak to its protocol, in no particular
// order: the client's order of preference decides. WAMP v1 ("wamp") and v2
// ("wamp.2.json") plug in here.
var subprotocols = map[string]proto{
	native.Subprotocol: protoNative,
	wamp.SubprotocolV1: protoWAMP1,
	wamp.SubprotocolV2: protoWAMP2,
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
	retry     time.Duration // Retry-After of a 429

	c      *conn    // the connection being upgraded
	fwdOn  bool     // the sender is a trusted proxy: read its forwarding header
	fwd    []string // every line of the forwarding header, in order
	client netip.Addr
	badFwd bool // the forwarding header was garbage (the sender's address is used)
	slot   bool // a Guard slot was taken for client
	now    time.Time

	in  bytes.Reader
	out bytes.Buffer
}

type upgradeResult struct {
	reject   reason.Reason // None on success
	status   int
	message  string        // for the client
	detail   string        // for the audit trail
	retry    time.Duration // Retry-After of a 429
	proto    proto
	client   netip.Addr // derived client address
	badFwd   bool       // a trusted proxy sent a garbage forwarding header
	slot     bool       // a Guard slot was taken for client
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
			if up.fwdOn && ls.srv.opts.ClientIP.IsHeader(key) {
				if len(up.fwd) >= maxForwardLines {
					return up.reject(reason.BadClientIP, http.StatusBadRequest, "too many forwarding header lines")
				}
				up.fwd = append(up.fwd, string(value))
			}
			if bytes.EqualFold(key, []byte("Origin")) {
				// headerFault has refused a second Origin already.
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
					"no supported subprotocol offered (portcullis.v1, wamp, wamp.2.json, or none)")
			}
			if r := ls.srv.opts.Origins.Check(string(up.origin), up.hasOrigin, string(up.host), false); r != reason.None {
				return nil, up.reject(r, http.StatusForbidden, "origin not allowed")
			}
			return nil, up.admitClient()
		},
	}
}

// maxForwardLines bounds the forwarding header lines read from a proxy.
const maxForwardLines = 16

// admitClient derives the client address (pipeline step 2, docs/ARCHITECTURE.md) and, when a
// trusted proxy sent the request, runs the accept checks again for it.
func (up *upgrader) admitClient() error {
	s := up.ls.srv
	c := up.c
	sender := c.client() // the peer, or the address a PROXY header gave
	up.client = sender
	if up.fwdOn {
		client, why := s.opts.ClientIP.FromHeaders(sender, up.fwd)
		up.client = client
		up.badFwd = why == reason.BadClientIP
	}
	if c.flags&flagSlot != 0 {
		// A direct client: it was admitted at accept, and a forwarding
		// header from it is not believed.
		return nil
	}
	r, retry, _ := s.opts.Guard.Admit(up.client, true, up.now)
	switch r {
	case reason.None:
		up.slot = true
		return nil
	case reason.Blocked, reason.Banned:
		return up.reject(r, http.StatusForbidden, "address refused")
	default:
		up.retry = retry
		return up.reject(r, http.StatusTooManyRequests, "too many requests from this address")
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
func (up *upgrader) upgrade(c *conn, req []byte, now time.Time) upgradeResult {
	up.now = now
	up.path, up.host, up.origin = up.path[:0], up.host[:0], up.origin[:0]
	up.hasOrigin, up.offered, up.chosen = false, false, false
	up.proto = protoNative
	up.rejectR, up.rejectS, up.rejectM, up.retry = reason.None, 0, "", 0
	up.c, up.fwd, up.client, up.badFwd, up.slot = c, up.fwd[:0], netip.Addr{}, false, false
	r := up.ls.srv.opts.ClientIP
	up.fwdOn = r.HasTrusted() && r.Trusted(c.client())
	if fault := headerFault(req); fault != "" {
		// Refused before anything reads a field: the parser below would
		// take a second Host or key, a folded line or a bare LF its own way,
		// and a proxy in front of us another.
		return upgradeResult{reject: reason.BadHeader, status: http.StatusBadRequest, message: fault, detail: fault}
	}
	up.in.Reset(req)
	up.out.Reset()

	_, err := up.u.Upgrade(memConn{&up.in, &up.out})
	if up.rejectR != reason.None {
		detail := ""
		if up.rejectR == reason.BadOrigin && up.hasOrigin {
			detail = "origin " + strconv.Quote(capString(string(up.origin), 200))
		}
		res := upgradeResult{reject: up.rejectR, status: up.rejectS, message: up.rejectM, detail: detail,
			retry: up.retry, client: up.client, badFwd: up.badFwd}
		if up.slot {
			// Refused after the client was admitted (cannot happen today:
			// admission is the last check); give the slot back.
			up.ls.srv.opts.Guard.Release(up.client)
		}
		return res
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
	up.c = nil
	return upgradeResult{proto: up.proto, client: up.client, badFwd: up.badFwd, slot: up.slot, response: resp}
}

// capString cuts s to at most n bytes, on a UTF-8 character boundary.
func capString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// httpReject renders a refusal: a JSON error body and Connection: close.
// A non-zero retry adds Retry-After (whole seconds, at least 1).
func httpReject(status int, r reason.Reason, msg string, retry time.Duration) []byte {
	body := fmt.Sprintf(`{"error":%q,"message":%q}`, r.String(), msg)
	extra := ""
	if retry > 0 {
		extra = fmt.Sprintf("Retry-After: %d\r\n", int64(max(1, (retry+time.Second-1)/time.Second)))
	}
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), extra, body)
}

// memConn is the in-memory "connection" the Upgrader reads the complete
// request from and writes its response to.
type memConn struct {
	r *bytes.Reader
	w *bytes.Buffer
}

func (m memConn) Read(p []byte) (int, error)  { return m.r.Read(p) }
func (m memConn) Write(p []byte) (int, error) { return m.w.Write(p) }
