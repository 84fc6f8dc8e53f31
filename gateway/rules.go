package gateway

import (
	"errors"
	"fmt"

	"github.com/portcullis-gw/portcullis/gateway/frame"
	"github.com/portcullis-gw/portcullis/policy/clientip"
	"github.com/portcullis-gw/portcullis/policy/origin"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// rules are the parts of the policy that can change while the server runs:
// the topic rules and their data schemas, the Origin policy, the trusted
// proxies and client IP header, and the per-connection limits. A rules
// value is immutable once built. The loops read the current one
// (Server.rules) at each decision, so a swap takes effect at the next
// handshake, message or delivery of every connection, and live
// connections keep their subscriptions: nothing is re-checked.
//
// What a swap does not change: the inbound byte budgets and byte rate
// (limits.inbound_buffer_per_ip, inbound_buffer_total, bytes_rate) live
// in the Server's ratelimit.Inbound table with the bytes they hold, and the
// PROXY protocol switch, the path, the listeners and the loops are fixed
// at Start.
type rules struct {
	topics      *topics.Set
	dataSchemas map[string]schema.DataSchema // by topic rule pattern
	origins     *origin.Checker
	clientIP    *clientip.Resolver
	limits      Limits       // per-connection limits, defaults applied
	frame       frame.Limits // the frame parser's share of limits
}

// newRules builds the rules of o, whose Limits have their defaults.
func newRules(o *Options, proxyProtocol bool) (*rules, error) {
	if o.Topics == nil || o.Origins == nil {
		return nil, errors.New("topic rules and the Origin policy are required")
	}
	ip := o.ClientIP
	if ip == nil {
		var err error
		if ip, err = clientip.NewResolver(nil, ""); err != nil {
			return nil, fmt.Errorf("client IP: %w", err)
		}
	}
	if proxyProtocol && !ip.HasTrusted() {
		return nil, errors.New("trusted_proxies: the PROXY protocol needs at least one trusted proxy")
	}
	return &rules{
		topics:      o.Topics,
		dataSchemas: o.DataSchemas,
		origins:     o.Origins,
		clientIP:    ip,
		limits:      o.Limits,
		frame:       frame.Limits{MaxFrame: o.Limits.MaxFrameBytes, MaxMessage: o.Limits.MaxMessageBytes},
	}, nil
}

// swapRules builds the rules of o (complete, its Limits defaulted, as for
// Start) and makes them the current ones in one atomic store: the next
// handshake, message and delivery on every loop see them; a connection's
// subscriptions, redeemed tokens and queued frames stay as they are. It
// changes nothing and returns an error when o's rules are incomplete or
// contradict the fixed options (the PROXY protocol without a trusted
// proxy). Safe for concurrent use with the loops; callers serialize
// swaps.
func (s *Server) swapRules(o *Options) error {
	r, err := newRules(o, s.opts.ProxyProtocol)
	if err != nil {
		return fmt.Errorf("gateway rules: %w", err)
	}
	s.rules.Store(r)
	return nil
}

// rules is the current rules, for one decision: read it once per event and
// keep it only for that event, so that a swap is seen by the next one.
func (ls *loopState) rules() *rules { return ls.srv.rules.Load() }

// initRules sets up the live policy of a new server from o.
func (s *Server) initRules(o *Options) error {
	s.fwdNotices = clientip.NewNotices(untrustedForwardingPeriod, 0)
	return s.swapRules(o)
}
