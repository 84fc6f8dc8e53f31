package gateway

import (
	"net/netip"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Guard is the address-keyed part of the validation pipeline (docs/ARCHITECTURE.md,
// steps 1 and 5): blocklist, bans, per-address connection rate and
// concurrency caps, and strikes. The gateway calls it from every event loop
// at once; implementations are safe for concurrent use and cheap, since
// Admit runs for every accepted socket. policy/guard is the real one.
type Guard interface {
	// Admit decides for a new connection from addr: the socket peer at
	// accept, or the client address a trusted proxy vouched for once the
	// handshake has revealed it. With limit false (the peer is a trusted
	// proxy whose clients are limited one by one later) only the
	// blocklist and bans apply. On success with limit true the connection
	// holds one of addr's slots until Release. A refusal returns its
	// reason, for rate limits when to try again, and the prefix it is
	// audited under (a ban's whole prefix: a flood from a banned /16
	// folds into a few summary lines instead of one line per address).
	Admit(addr netip.Addr, limit bool, now time.Time) (refused reason.Reason, retryAfter time.Duration, counted netip.Prefix)
	// Release gives back the slot Admit took for addr.
	Release(addr netip.Addr)
	// Strike counts failure r against addr and reports whether it banned
	// addr (an enforced ban, not a dry run): the caller then closes the
	// connection at once, without evaluating anything else it sent. Other
	// connections of the banned prefix are closed through the guard's own
	// callback.
	Strike(addr netip.Addr, r reason.Reason, now time.Time) (banned bool)
	// Exempt reports whether addr is allow-listed: its live connections
	// survive a ban of a range around it.
	Exempt(addr netip.Addr) bool
	// Counted is the prefix addr is limited and banned under, for the
	// audit trail's counted_prefix.
	Counted(addr netip.Addr) netip.Prefix
}

// openGuard admits everyone and counts nothing: the default when Options
// carries no Guard (tests of the core, benchmarks of the bare reactor).
type openGuard struct{}

func (openGuard) Admit(netip.Addr, bool, time.Time) (reason.Reason, time.Duration, netip.Prefix) {
	return 0, 0, netip.Prefix{}
}
func (openGuard) Release(netip.Addr)                               {}
func (openGuard) Strike(netip.Addr, reason.Reason, time.Time) bool { return false }
func (openGuard) Exempt(netip.Addr) bool                           { return false }
func (openGuard) Counted(a netip.Addr) netip.Prefix {
	p, _ := a.Unmap().Prefix(a.Unmap().BitLen())
	return p
}
