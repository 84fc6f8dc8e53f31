package audit

import (
	"fmt"

	"github.com/portcullis-gw/portcullis/audit/chain"
)

// Kind is what an event is about: conn_open, auth_failed, … One constant per
// row of docs/AUDIT.md's Events table (TestKindsDocumented holds the table to
// this list). The zero Kind is no event; its String is empty.
type Kind uint8

// Event kinds, as docs/AUDIT.md lists them.
const (
	KindConnOpen             Kind = iota + 1 // a WebSocket upgrade succeeded
	KindConnClose                            // a connection ended
	KindConnRejected                         // refused at accept or in the handshake
	KindAuthOK                               // a token was redeemed
	KindAuthFailed                           // a token problem
	KindSubscribe                            // a subscription started
	KindUnsubscribe                          // a subscription ended
	KindSubscribeDenied                      // a topic rule refused a subscription
	KindMessageRejected                      // a frame or message broke a rule
	KindPublish                              // a publication through the admin API or by a client
	KindBan                                  // an address or range was banned
	KindUnban                                // a ban was released
	KindKernelDrop                           // a banned prefix's SYNs are now dropped in the kernel
	KindAdmin                                // an admin API action or refusal
	KindConfigReload                         // the config (or block files) re-read on SIGHUP or POST /v1/reload
	KindFeedFailed                           // a feed's upstream answered something not relayed
	KindAlertSent                            // an alert mail left the outbox
	KindAlertFailed                          // an alert mail could not be sent
	KindAuditDropped                         // events were lost: the trail could not be written
	KindAuditFailing                         // the audit sink is failing
	KindUncleanStop                          // the gateway started after a crash
	KindLoopStalled                          // an event loop was busy for over a second
	KindFDPressure                           // 90 % of the file-descriptor limit in use
	KindFDExhausted                          // the process ran out of file descriptors
	KindFDRecovered                          // a file-descriptor exhaustion episode ended
	KindMemoryPressure                       // RSS at 90 % of the cgroup memory limit
	KindJTITableFull                         // the JWT source's used-jti table is full
	KindJTITableRecovered                    // the used-jti table has room again
	KindAuditHeader                          // the first line of a trail file, and on every (re)start
	KindAuditRetention                       // a rotated file is about to be deleted
	KindUntrustedForwarding                  // forwarding headers from a peer outside trusted_proxies
	KindConfigReloadFailed                   // a reload was refused; the old config stays in force
	KindDrainStarted                         // shutdown began: accepting stopped, clients closed over the drain window
	KindTokenStateLost                       // tokens.db could not be read whole: minted tokens may be refused
	KindClusterDegraded                      // Redis unreachable: local delivery only, redemptions refused
	KindClusterRecovered                     // Redis reachable again: resubscribed, bans reloaded
	KindNodeUp                               // a cluster node joined (or came back)
	KindNodeLost                             // a cluster node stopped renewing its presence
	KindTokenSourceDown                      // the sql token source's database fails: redemptions refused
	KindTokenSourceRecovered                 // the sql token source's database answers again

	kindEnd // one past the last kind
)

var kindNames = [kindEnd]string{
	KindConnOpen:             "conn_open",
	KindConnClose:            "conn_close",
	KindConnRejected:         "conn_rejected",
	KindAuthOK:               "auth_ok",
	KindAuthFailed:           "auth_failed",
	KindSubscribe:            "subscribe",
	KindUnsubscribe:          "unsubscribe",
	KindSubscribeDenied:      "subscribe_denied",
	KindMessageRejected:      "message_rejected",
	KindPublish:              "publish",
	KindBan:                  "ban",
	KindUnban:                "unban",
	KindKernelDrop:           "kernel_drop",
	KindAdmin:                "admin",
	KindConfigReload:         "config_reload",
	KindFeedFailed:           "feed_failed",
	KindAlertSent:            "alert_sent",
	KindAlertFailed:          "alert_failed",
	KindAuditDropped:         chain.EventDropped,
	KindAuditFailing:         "audit_failing",
	KindUncleanStop:          "unclean_stop",
	KindLoopStalled:          "loop_stalled",
	KindFDPressure:           "fd_pressure",
	KindFDExhausted:          "fd_exhausted",
	KindFDRecovered:          "fd_recovered",
	KindMemoryPressure:       "memory_pressure",
	KindJTITableFull:         "jti_table_full",
	KindJTITableRecovered:    "jti_table_recovered",
	KindAuditHeader:          chain.EventHeader,
	KindAuditRetention:       chain.EventRetention,
	KindUntrustedForwarding:  "untrusted_forwarding",
	KindConfigReloadFailed:   "config_reload_failed",
	KindDrainStarted:         "drain_started",
	KindTokenStateLost:       "token_state_lost",
	KindClusterDegraded:      "cluster_degraded",
	KindClusterRecovered:     "cluster_recovered",
	KindNodeUp:               "node_up",
	KindNodeLost:             "node_lost",
	KindTokenSourceDown:      "token_source_down",
	KindTokenSourceRecovered: "token_source_recovered",
}

// String returns the docs/AUDIT.md spelling of k, as written in a line's
// "event" field; empty for the zero Kind and for a value that is no kind.
func (k Kind) String() string {
	if k < kindEnd {
		return kindNames[k]
	}
	return ""
}

// ParseKind parses the docs/AUDIT.md spelling of an event kind (text from
// outside: configuration, command lines, a line read back).
func ParseKind(s string) (Kind, bool) {
	for k := Kind(1); k < kindEnd; k++ {
		if kindNames[k] == s {
			return k, true
		}
	}
	return 0, false
}

// MarshalText returns k's name, so that a Kind is its name in JSON too.
func (k Kind) MarshalText() ([]byte, error) {
	if k == 0 || k >= kindEnd {
		return nil, fmt.Errorf("audit: marshal event kind %d: no such kind", uint8(k))
	}
	return []byte(kindNames[k]), nil
}

// UnmarshalText parses a kind's name.
func (k *Kind) UnmarshalText(b []byte) error {
	v, ok := ParseKind(string(b))
	if !ok {
		return fmt.Errorf("audit: unknown event kind %q", b)
	}
	*k = v
	return nil
}

// Refusal reports whether k records a refusal: conn_rejected,
// message_rejected, auth_failed or subscribe_denied. A refusal with a reason
// is a strike against the client address (weighted by reason), and
// identical refusals fold into summaries.
func (k Kind) Refusal() bool {
	switch k {
	case KindConnRejected, KindMessageRejected, KindAuthFailed, KindSubscribeDenied:
		return true
	}
	return false
}
