package feed

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"
)

// One poller per topic in a cluster.
//
// Every node with subscribers of a feed topic runs its poller goroutine,
// but only the node holding the topic's lease ("feed:<topic>", see
// policy/lease) fetches and publishes; the cluster's broker carries the
// publication to the subscribers of every node. A poller renews its lease
// (or tries to take it) every third of LeaseTTL, so a holder that dies or
// loses its subscribers is replaced within LeaseTTL + LeaseTTL/3, under
// 2 × LeaseTTL; one whose topic goes idle here gives the lease up at once.
// While the lease cannot be read (Redis down) a node polls for its own
// subscribers, since the broker then reaches no other node: a topic may be
// polled by several nodes until Redis is back, never by none.

// DefaultLeaseTTL is Options.LeaseTTL's default.
const DefaultLeaseTTL = 15 * time.Second

// Lease is what a poller asks of the cluster (policy/lease.Redis).
type Lease interface {
	// Hold takes the lease name for ttl, or renews it when this node
	// holds it, and reports whether this node holds it now.
	Hold(ctx context.Context, name string, ttl time.Duration) (held bool, holder string, err error)
	// Release gives the lease up if this node holds it.
	Release(ctx context.Context, name string) error
}

// pollLeased is poll under the topic's lease.
func (r *Runner) pollLeased(ctx context.Context, topic, url string, every time.Duration) {
	defer r.wg.Done()
	ttl := r.o.LeaseTTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	name := "feed:" + topic
	defer func() {
		// A fresh context: ctx is already cancelled. The Lease bounds the call.
		if err := r.o.Lease.Release(context.Background(), name); err != nil {
			r.o.Log.WithField("topic", topic).WithError(err).Warn("feed lease not released; it lapses on its own")
		}
	}()
	t := time.NewTicker(min(every, ttl/3))
	defer t.Stop()
	var next time.Time // when this node polls next while it holds the lease; zero: at once
	holding, down := false, false
	for {
		held, holder, err := r.o.Lease.Hold(ctx, name, ttl)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			held = true // Redis down: serve this node's subscribers
			if !down {
				r.o.Log.WithField("topic", topic).WithError(err).Warn("feed lease unreadable; polling for this node's subscribers")
			}
		}
		down = err != nil
		if held != holding {
			r.o.Log.WithFields(logrus.Fields{"topic": topic, "holder": holder}).Info("feed poller lease changed hands")
			holding = held
		}
		if !held {
			next = time.Time{}
		} else if now := time.Now(); !now.Before(next) {
			r.once(ctx, topic, url, every)
			next = now.Add(every)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
