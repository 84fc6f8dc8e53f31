//go:build linux

package app

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway"
	"github.com/portcullis-gw/portcullis/gateway/admin"
	"github.com/portcullis-gw/portcullis/gateway/cluster"
	"github.com/portcullis-gw/portcullis/gateway/config"
	"github.com/portcullis-gw/portcullis/gateway/metrics"
)

// clusterComp is this node's membership of a cluster (docs/CLUSTER.md) as
// a component: built before the token source and the gateway, which use
// its Redis client and its Broker, started before them (a node that cannot
// reach Redis, or whose name another running node has, does not start),
// closed after them. Without a `cluster:` block node is nil and every
// method does nothing.
type clusterComp struct {
	node *cluster.Node
}

// openCluster builds the cluster membership of cfg's `cluster:` block.
func openCluster(cfg *config.Config, sink audit.Sink, log *logrus.Logger) (*clusterComp, error) {
	c := cfg.Cluster
	if !c.Enabled() {
		return &clusterComp{}, nil
	}
	var password string
	if f := c.Redis.PasswordFile; f != "" {
		p, err := config.ReadSecretFile(f)
		if err != nil {
			return nil, fmt.Errorf("cluster.redis.password_file: %w", err)
		}
		password = p
	}
	n, err := cluster.New(cluster.Options{Config: c, Audit: sink, Log: log}, password)
	if err != nil {
		return nil, err
	}
	return &clusterComp{node: n}, nil
}

// Node is the cluster node, nil without a `cluster:` block: its Name, its
// Redis Client, its Degraded state and OnRecovered hook are what the
// other cluster-wide parts (tokens, bans, leases) build on.
func (c *clusterComp) Node() *cluster.Node { return c.node }

// broker is the gateway's Broker: the cluster's, or nil (InProcess).
func (c *clusterComp) broker() gateway.Broker {
	if c.node == nil {
		return nil
	}
	return c.node.Broker()
}

// accepting is the gateway's ClusterHealthy hook, nil without a cluster.
func (c *clusterComp) accepting() func() bool {
	if c.node == nil {
		return nil
	}
	return c.node.Accepting
}

// publisher returns the admin API's publisher: with a cluster, one whose
// POST /v1/publish waits for Redis's answer (admin.ClusterPublisher).
func (c *clusterComp) publisher(timed metrics.Publisher, m *metrics.Metrics) admin.Publisher {
	if c.node == nil {
		return timed
	}
	return clusterPublisher{Publisher: timed, b: c.node.Broker(), m: m}
}

// stats is the `cluster` part of GET /v1/stats; nil without a cluster.
func (c *clusterComp) stats() *cluster.Stats {
	if c.node == nil {
		return nil
	}
	s := c.node.Stats()
	return &s
}

func (c *clusterComp) name() string { return "cluster" }

func (c *clusterComp) start() error {
	if c.node == nil {
		return nil
	}
	return c.node.Start()
}

// prepare: every cluster key needs a restart (app.Diff refuses them).
func (c *clusterComp) prepare(*config.Config, keySet) (func() error, error) { return nil, nil }

func (c *clusterComp) close() error {
	if c.node == nil {
		return nil
	}
	return c.node.Close()
}

// clusterPublisher publishes the admin API's publications through the
// cluster broker and reports Redis's answer; the publish histogram times
// the whole call, the Redis round trip included.
type clusterPublisher struct {
	metrics.Publisher
	b *cluster.Broker
	m *metrics.Metrics
}

// PublishCluster implements admin.ClusterPublisher.
func (p clusterPublisher) PublishCluster(ctx context.Context, topic string, data []byte) (admin.ClusterPublished, error) {
	start := time.Now()
	r, err := p.b.PublishWait(ctx, topic, data)
	p.m.ObservePublish(time.Since(start))
	if err != nil {
		return admin.ClusterPublished{}, fmt.Errorf("publish to %s: %w", topic, err)
	}
	return admin.ClusterPublished{Delivered: r.Delivered, Nodes: r.Nodes, Degraded: r.Degraded}, nil
}
