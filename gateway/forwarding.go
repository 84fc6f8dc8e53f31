package gateway

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// untrustedForwardingPeriod is how often one peer's untrusted forwarding
// headers are reported: once per peer per hour, in the operational log and
// the audit trail.
const untrustedForwardingPeriod = time.Hour

// untrustedForwarding reports that c's sender, a peer outside
// trusted_proxies, sent what (a forwarding header by name, or a PROXY
// protocol header). Nothing changes for the client — it is served under
// the peer's address, as always — but a proxy that was left out of
// trusted_proxies would otherwise go unnoticed (every client behind it
// limited and banned as one). Reported once per peer per hour
// (Server.fwdNotices bounds the memory); never a strike.
func (s *Server) untrustedForwarding(c *conn, what string, now time.Time) {
	peer := c.peer()
	if !s.fwdNotices.First(peer, now) {
		return
	}
	s.opts.Log.WithFields(logrus.Fields{"peer": peer.String(), "header": what}).
		Warn("forwarding header from a peer outside trusted_proxies ignored: its clients are served under the peer's address (reported once per peer per hour)")
	s.emit(audit.Event{Time: now, Event: audit.KindUntrustedForwarding, Severity: audit.Warning, Stage: audit.StageHandshake,
		Conn: c.id, IP: c.client(), PeerIP: peer, CountedPrefix: s.opts.Guard.Counted(peer), Reason: reason.None,
		Detail: what + " from a peer outside trusted_proxies, not believed: the client is served under the peer's address; " +
			"reported once per peer per hour"})
}
