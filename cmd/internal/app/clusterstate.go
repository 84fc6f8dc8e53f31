//go:build linux

package app

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/alerting"
	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/config"
	"github.com/portcullis-gw/portcullis/gateway/feed"
	"github.com/portcullis-gw/portcullis/policy/bans"
	"github.com/portcullis-gw/portcullis/policy/bans/redisbans"
	"github.com/portcullis-gw/portcullis/policy/guard"
	"github.com/portcullis-gw/portcullis/policy/lease"
	"github.com/portcullis-gw/portcullis/policy/tokens/redistokens"
)

// The state a cluster shares in Redis besides publications
// (docs/CLUSTER.md): minted tokens (policy/tokens/redistokens), bans
// (policy/bans/redisbans), the alert group leases (alerting) and the feed
// poller leases (gateway/feed, policy/lease). Without a `cluster:` block
// every function here leaves the node alone.

// tokenSource replaces the minting store of tokens.source: store by the
// cluster's token source, whose tokens every node redeems once; a jwt
// source stays as it is (its used jtis are per node).
func (c *clusterComp) tokenSource(cfg *config.Config, src TokenSource) (TokenSource, error) {
	if c.node == nil || src.Store == nil {
		return src, nil
	}
	n := c.node
	rs, err := redistokens.New(redistokens.Options{Client: n.Client(), Prefix: n.Key(""), Node: n.Name(),
		TTL: cfg.Tokens.TTL, MaxTTL: cfg.Tokens.MaxTTL, Timeout: n.CallTimeout(), Degraded: n.Degraded})
	if err != nil {
		return TokenSource{}, fmt.Errorf("cluster tokens: %w", err)
	}
	// Expired tokens expire in Redis: nothing to sweep here.
	return TokenSource{Redeemer: rs, Cluster: rs, Sweep: func(time.Time) int { return 0 }}, nil
}

// lease is the node's leases, nil without a cluster.
func (c *clusterComp) lease() *lease.Redis {
	if c.node == nil {
		return nil
	}
	n := c.node
	return &lease.Redis{Client: n.Client(), Prefix: n.Key(""), Node: n.Name(), Timeout: n.CallTimeout()}
}

// feedLease is the feed pollers' lease; nil: this node polls alone.
func (c *clusterComp) feedLease() feed.Lease {
	if l := c.lease(); l != nil {
		return l
	}
	return nil
}

// alertLease is the alert groups' lease; nil: this node mails alone.
func (c *clusterComp) alertLease() alerting.GroupLease {
	if l := c.lease(); l != nil {
		return l
	}
	return nil
}

// banSync is the sharing of bans as a component: built after the ban
// pipeline (whose Manager it hands its changes to) and the gateway (whose
// connections a ban from another node closes), started after them, closed
// before them.
type banSync struct {
	s *redisbans.Sync
}

// shareBans builds the ban sync of the cluster; without one it does
// nothing.
func (c *clusterComp) shareBans(m *bans.Manager, g *guard.Guard, disconnect func(netip.Prefix),
	sink audit.Sink, log *logrus.Logger) (*banSync, error) {
	if c.node == nil {
		return &banSync{}, nil
	}
	n := c.node
	s, err := redisbans.New(redisbans.Options{Client: n.Client(), Prefix: n.Key(""), Node: n.Name(), Manager: m,
		Timeout: n.CallTimeout(),
		Applied: func(b bans.Ban, from string, removed bool) {
			now := time.Now()
			ip := netip.Addr{}
			if b.Prefix.IsSingleIP() {
				ip = b.Prefix.Addr()
			}
			if removed {
				g.Lifted(b.Prefix)
				sink.Emit(audit.Event{Time: now, Event: audit.KindUnban, Severity: audit.Notice, Stage: audit.StageSystem,
					IP: ip, CountedPrefix: b.Prefix, Reason: b.Reason, Actor: b.Actor,
					Detail: audit.Cap("ban lifted on node " + from + ", lifted here")})
				return
			}
			disconnect(b.Prefix)
			sink.Emit(audit.Event{Time: now, Event: audit.KindBan, Severity: audit.Notice, Stage: audit.StageSystem,
				IP: ip, CountedPrefix: b.Prefix, Reason: b.Reason, Actor: b.Actor, Strikes: int64(b.Strikes),
				Detail: audit.Cap(fmt.Sprintf("ban of node %s applied here: until %s", from,
					b.Until.UTC().Format(time.RFC3339)))})
		},
		Failed: func(err error) { log.WithError(err).Warn("cluster bans") },
	})
	if err != nil {
		return nil, fmt.Errorf("cluster bans: %w", err)
	}
	return &banSync{s: s}, nil
}

func (b *banSync) name() string { return "cluster bans" }

func (b *banSync) start() error {
	if b.s != nil {
		b.s.Start()
	}
	return nil
}

// prepare: the cluster keys need a restart.
func (b *banSync) prepare(*config.Config, keySet) (func() error, error) { return nil, nil }

func (b *banSync) close() error {
	if b.s != nil {
		b.s.Close()
	}
	return nil
}
