package clientip

import (
	"bytes"
	"net/netip"
	"sync"
	"time"
)

// Forwarded is the RFC 7239 forwarding header. A Resolver never reads it;
// it is recognised only to report a peer that sends it untrusted.
const Forwarded = "Forwarded"

// forwardingHeaders are the header names that claim another client
// address, whichever one a Resolver is configured to read.
var forwardingHeaders = [...]string{XForwardedFor, Forwarded, XRealIP, CFConnectingIP}

// ForwardingHeader returns the canonical name of name (a raw request
// header name, any case) if it is a forwarding header — X-Forwarded-For,
// Forwarded, X-Real-IP, CF-Connecting-IP — and "" otherwise. It does not
// allocate.
func ForwardingHeader(name []byte) string {
	for _, h := range forwardingHeaders {
		if len(name) != len(h) {
			continue
		}
		i := 0
		for i < len(name) && lower(name[i]) == lower(h[i]) {
			i++
		}
		if i == len(name) {
			return h
		}
	}
	return ""
}

// LooksLikeProxyHeader reports whether b starts like a PROXY protocol
// header, v1 or v2 (as far as b goes, at least 6 bytes).
func LooksLikeProxyHeader(b []byte) bool {
	if len(b) < len(v1Sig) {
		return false
	}
	return bytes.HasPrefix(b, v1Sig) || hasPrefix(b, v2Sig)
}

// DefaultNoticeEntries bounds a Notices table of zero size.
const DefaultNoticeEntries = 4096

// Notices remembers which addresses were reported recently, so that a
// recurring condition (forwarding headers from a peer outside
// trusted_proxies) is reported once per address per period instead of
// once per request. It holds at most a fixed number of addresses: a new
// one beyond it evicts the one reported longest ago, so a million source
// addresses cost no more memory than a few thousand. Safe for
// simultaneous use by multiple goroutines.
type Notices struct {
	period time.Duration
	max    int

	mu   sync.Mutex
	last map[netip.Addr]int64 // address → when it was last reported, unix ns; guarded by mu
	// order lists the addresses in the order they were reported, oldest
	// first, with stale duplicates skipped by comparing with last;
	// guarded by mu.
	order []notice
}

type notice struct {
	addr netip.Addr
	at   int64
}

// NewNotices returns a table that reports an address at most once per
// period and remembers at most max addresses (0: DefaultNoticeEntries).
func NewNotices(period time.Duration, max int) *Notices {
	if max <= 0 {
		max = DefaultNoticeEntries
	}
	return &Notices{period: period, max: max, last: make(map[netip.Addr]int64)}
}

// First reports whether a should be reported at now: true when a was not
// reported within the period (it is then counted as reported at now).
func (n *Notices) First(a netip.Addr, now time.Time) bool {
	ns := now.UnixNano()
	n.mu.Lock()
	defer n.mu.Unlock()
	if at, ok := n.last[a]; ok && ns-at < int64(n.period) {
		return false
	}
	n.expireLocked(ns)
	for len(n.last) >= n.max {
		n.evictLocked()
	}
	n.last[a] = ns
	n.order = append(n.order, notice{addr: a, at: ns})
	return true
}

// Len is the number of addresses remembered.
func (n *Notices) Len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.last)
}

// expireLocked forgets the addresses reported a period or more before ns.
// Requires that n.mu is held.
func (n *Notices) expireLocked(ns int64) {
	for len(n.order) > 0 && ns-n.order[0].at >= int64(n.period) {
		n.evictLocked()
	}
}

// evictLocked forgets the address reported longest ago. Requires that
// n.mu is held and that order is not empty.
func (n *Notices) evictLocked() {
	for len(n.order) > 0 {
		o := n.order[0]
		n.order[0] = notice{}
		n.order = n.order[1:]
		if n.last[o.addr] == o.at {
			delete(n.last, o.addr)
			break
		}
	}
}
