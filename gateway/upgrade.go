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

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/native"
	"github.com/portcullis-gw/portcullis/gateway/wamp"
	"github.com/portcullis-gw/portcullis/policy/clientip"
	"github.com/portcullis-gw/portcullis/policy/decision"
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
	rl        *rules // the rules it is decided under
	host      []byte
	origin    []byte
	hasOrigin bool
	offered   bool
	proto     proto
	chosen    bool
	refusal   decision.Decision // the first refusal; allowed while none

	c         *conn    // the connection being upgraded
	fwdOn     bool     // the sender is a trusted proxy: read its forwarding header
	fwd       []string // every line of the forwarding header, in order
	untrusted string   // a forwarding header the sender may not send, by name; "" if none
	client    netip.Addr
	badFwd    bool // the forwarding header was garbage (the sender's address is used)
	slot      bool // a Guard slot was taken for client
	now       time.Time

	in  bytes.Reader
	out bytes.Buffer
}

// upgradeResult is the handshake stage's decision on a request and what
// acting on it needs.
type upgradeResult struct {
	decision  decision.Decision // allowed: response is the 101
	detail    string            // for the audit trail
	proto     proto
	client    netip.Addr // derived client address
	badFwd    bool       // a trusted proxy sent a garbage forwarding header
	untrusted string     // a forwarding header from a sender outside trusted_proxies, by name; "" if none
	slot      bool       // a Guard slot was taken for client
	response  []byte
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
				return up.reject(decision.Deny(reason.BadPath))
			}
			return nil
		},
		OnHost: func(host []byte) error {
			up.host = append(up.host[:0], host...)
			return nil
		},
		OnHeader: func(key, value []byte) error {
			switch {
			case up.fwdOn && up.rl.clientIP.IsHeader(key):
				if len(up.fwd) >= maxForwardLines {
					return up.reject(decision.Deny(reason.BadClientIP).WithMessage("too many forwarding header lines"))
				}
				up.fwd = append(up.fwd, string(value))
			case !up.fwdOn && up.untrusted == "":
				up.untrusted = clientip.ForwardingHeader(key)
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
				return nil, up.reject(decision.Deny(reason.BadSubprotocol))
			}
			if r := up.rl.origins.Check(string(up.origin), up.hasOrigin, string(up.host), up.ls.srv.tls != nil); r != reason.None {
				return nil, up.reject(decision.Deny(r))
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
		client, why := up.rl.clientIP.FromHeaders(sender, up.fwd)
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
		return up.reject(decision.Deny(r).WithMessage("address refused"))
	default:
		return up.reject(decision.Deny(r).WithRetry(retry))
	}
}

// refusedClient derives the client address of a request refused before
// admitClient ran (a bad path, Origin or subprotocol, or one the parser
// refused) from a trusted proxy: the Upgrader stops at the first refusal,
// so the forwarding header lines are read from the whole request here.
// The refusal, its audit line and its strike are then the client's, never
// the proxy's that every other client behind it shares (striking the
// proxy would let any one client ban them all). Refusals only: it
// allocates.
func (up *upgrader) refusedClient(req []byte) {
	sender := up.c.client()
	up.fwd = up.fwd[:0]
	_, lines, _ := bytes.Cut(req, []byte("\r\n")) // after the request line
	for len(lines) > 0 {
		line, rest, ok := bytes.Cut(lines, []byte("\r\n"))
		if !ok || len(line) == 0 {
			break
		}
		lines = rest
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || !up.rl.clientIP.IsHeader(k) {
			continue
		}
		if len(up.fwd) >= maxForwardLines {
			up.client, up.badFwd = sender, true
			return
		}
		up.fwd = append(up.fwd, string(bytes.Trim(v, " \t")))
	}
	client, why := up.rl.clientIP.FromHeaders(sender, up.fwd)
	up.client, up.badFwd = client, why == reason.BadClientIP
}

// reject records refusal d, unless one is recorded already, and returns
// the error that stops the Upgrader.
func (up *upgrader) reject(d decision.Decision) error {
	if up.refusal.Allowed() {
		up.refusal = d
	}
	return errRejected
}

// upgrade is the handshake stage (pipeline step 2): it decides on the
// request in req (complete, ending in a blank line) for c under rules rl,
// and returns the decision with the response to send on success.
func (up *upgrader) upgrade(c *conn, rl *rules, req []byte, now time.Time) upgradeResult {
	up.rl, up.now = rl, now
	up.host, up.origin = up.host[:0], up.origin[:0]
	up.hasOrigin, up.offered, up.chosen = false, false, false
	up.proto = protoNative
	up.refusal = decision.Allow()
	up.c, up.fwd, up.untrusted, up.client, up.badFwd, up.slot = c, up.fwd[:0], "", netip.Addr{}, false, false
	up.fwdOn = rl.clientIP.HasTrusted() && rl.clientIP.Trusted(c.client())
	if fault := headerFault(req); fault != "" {
		// Refused before anything reads a field: the parser below would
		// take a second Host or key, a folded line or a bare LF its own way,
		// and a proxy in front of us another.
		return upgradeResult{decision: decision.Deny(reason.BadHeader).WithMessage(fault), detail: fault}
	}
	up.in.Reset(req)
	up.out.Reset()

	_, err := up.u.Upgrade(memConn{&up.in, &up.out})
	if (!up.refusal.Allowed() || err != nil) && up.fwdOn && !up.client.IsValid() {
		up.refusedClient(req)
	}
	if !up.refusal.Allowed() {
		detail := ""
		if up.refusal.Reason == reason.BadOrigin && up.hasOrigin {
			detail = "origin " + strconv.Quote(capString(string(up.origin), 200))
		}
		res := upgradeResult{decision: up.refusal, detail: detail, client: up.client, badFwd: up.badFwd, untrusted: up.untrusted}
		if up.slot {
			// Refused after the client was admitted (cannot happen today:
			// admission is the last check); give the slot back.
			up.ls.srv.opts.Guard.Release(up.client)
		}
		up.c, up.rl = nil, nil
		return res
	}
	if err != nil {
		d := decision.Deny(reason.BadHandshake)
		if rej, ok := err.(*ws.ConnectionRejectedError); ok && rej.StatusCode() != 0 {
			d.Status = rej.StatusCode()
		}
		up.c, up.rl = nil, nil
		return upgradeResult{decision: d, detail: capString(err.Error(), 200), client: up.client, untrusted: up.untrusted}
	}
	resp := append([]byte(nil), up.out.Bytes()...)
	res := upgradeResult{decision: decision.Allow(), proto: up.proto, client: up.client, badFwd: up.badFwd,
		untrusted: up.untrusted, slot: up.slot, response: resp}
	up.c, up.rl = nil, nil
	return res
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

// httpReject renders refusal d before the upgrade: its status, a JSON
// error body and Connection: close. A Retry-After (whole seconds, at
// least 1) says when a rate-limited client may try again.
func httpReject(d decision.Decision) []byte {
	status := d.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	body := fmt.Sprintf(`{"error":%q,"message":%q}`, d.Why().String(), d.Message)
	extra := ""
	if retry := d.Retry; retry > 0 {
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
