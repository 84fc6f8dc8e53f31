package gateway

import (
	"bytes"
	"net/netip"
	"strconv"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// probe is a plain HTTP request the public listener answers itself: a
// health probe, or the browser client's file.
type probe uint8

const (
	probeNone         probe = iota
	probeHealthz            // GET /healthz: the process serves
	probeReadyz             // GET /readyz: it accepts new clients
	probeClientJS           // GET /portcullis.js: the browser client (clientjs.go)
	probeClientJSHead       // HEAD /portcullis.js: its headers
)

// probeOf tells a probe from an upgrade request by its request line: GET
// /healthz, GET /readyz, GET or HEAD /portcullis.js (a query string is
// ignored), any HTTP version. req is a complete request.
func probeOf(req []byte) probe {
	line, _, _ := bytes.Cut(req, []byte("\r\n"))
	head := false
	rest, ok := bytes.CutPrefix(line, []byte("GET "))
	if !ok {
		if rest, ok = bytes.CutPrefix(line, []byte("HEAD ")); !ok {
			return probeNone
		}
		head = true
	}
	target, _, _ := bytes.Cut(rest, []byte(" "))
	target, _, _ = bytes.Cut(target, []byte("?"))
	switch string(target) {
	case "/healthz":
		if !head {
			return probeHealthz
		}
	case "/readyz":
		if !head {
			return probeReadyz
		}
	case clientJSPath:
		if head {
			return probeClientJSHead
		}
		return probeClientJS
	}
	return probeNone
}

var (
	probeOK       = probeResponse(200, "OK", `{"status":"ok"}`)
	probeDraining = probeResponse(503, "Service Unavailable", `{"status":"draining"}`)
	probeStarting = probeResponse(503, "Service Unavailable", `{"status":"starting"}`)
)

func probeResponse(status int, text, body string) []byte {
	return []byte("HTTP/1.1 " + strconv.Itoa(status) + " " + text + "\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n" + body)
}

// answerProbe answers probe p, whose complete request is req, on the
// public listener in plain HTTP and closes: /healthz 200 while the process
// serves, /readyz 200 once Start has returned and until a drain or
// shutdown begins, 503 otherwise; /portcullis.js the browser client
// (clientJSResponse). A probe is never a strike and leaves no audit line
// (a load balancer probes every second, every page view may fetch the
// client), and it is counted in no per-address rate: the connection
// attempt it took at accept is given back (see attemptRefunder), so probes
// cannot get their load balancer or their users refused or banned. A probe
// on a socket refused at accept for a rate is answered all the same,
// without the refusal's strike.
func (c *conn) answerProbe(ls *loopState, p probe, req []byte) {
	s := ls.srv
	resp := probeOK
	switch p {
	case probeReadyz:
		switch {
		case s.Draining() || s.closing.Load():
			resp = probeDraining
		case !s.started.Load():
			resp = probeStarting
		}
	case probeClientJS, probeClientJSHead:
		resp = clientJSResponse(p == probeClientJSHead, req)
	}
	writeRaw(int(c.fd), resp)
	if c.flags&flagSlot != 0 && c.closeReason == reason.None {
		if r, ok := s.opts.Guard.(attemptRefunder); ok {
			r.RefundAttempt(c.client(), ls.loop.Now)
		}
	}
	c.finish(ls, reason.None, 0, false)
}

// attemptRefunder is the part of a Guard that gives back the connection
// attempt a socket took from its address's rate at accept (policy/guard
// implements it): for health probes, which must not count.
type attemptRefunder interface {
	RefundAttempt(addr netip.Addr, now time.Time)
}
