package alerting

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// One mail (and one POST per webhook) per group in a cluster.
//
// Every node runs its own rules over its own events, so an attack spread
// over several nodes fires the same group (rule and group_by values) on
// each. Each node still renders the mail and saves it in its own outbox
// (durable per node, as alone); only the sending is shared:
//
//  1. Before an attempt, the node reads the group's mark ("alert:<group>",
//     kept for group_interval after a mail of the group was sent by any
//     node). A mark means the cluster mailed this group less than a
//     group_interval ago, the pace one node keeps alone: the mail is
//     removed unsent and audited alert_sent with reason sent_by_other_node.
//  2. Otherwise the node takes the group's lease (SET NX PX, 3 × the
//     destination's timeout, so it outlasts one attempt). Held by another node, the mail
//     waits in the outbox and looks again a third of the lease later; that
//     is no attempt and costs no retry.
//  3. Holding it, the node sends as alone; once the server took the mail it
//     sets the mark, then gives the lease up. A failed attempt gives the
//     lease up too, so that any node may try next.
//
// A holder that dies mid-send neither marks nor releases: its lease runs
// out and another node, whose copy waited in its outbox, sends. Nothing is
// lost; the price is a possible second mail when the holder died after the
// server took its mail but before the mark was set (at least once, never
// none). The dead node's own copy stays in its outbox and, on restart,
// finds the mark and is dropped. While Redis cannot be reached the node
// sends alone: an alert is never held back because the cluster is down
// (cluster_degraded itself is one of them).

// GroupLease is what the engine asks of the cluster (policy/lease.Redis).
type GroupLease interface {
	// Hold takes the lease name for ttl, or renews it when this node
	// holds it, and reports whether this node holds it now.
	Hold(ctx context.Context, name string, ttl time.Duration) (held bool, holder string, err error)
	// Release gives the lease up if this node holds it.
	Release(ctx context.Context, name string) error
	// Mark keeps value under name for ttl.
	Mark(ctx context.Context, name, value string, ttl time.Duration) error
	// Marked returns the value kept under name; false when none.
	Marked(ctx context.Context, name string) (string, bool, error)
}

// leaseTTL is how long a group's lease for d lasts: three of d's attempts.
func leaseTTL(d *dest) time.Duration { return 3 * d.timeout }

// leaseName is the lease and mark of it's group for its destination: the
// mail's is "alert:<group>", a webhook's "alert:<dest>:<group>" (a
// webhook's key derives from its URL, so nodes posting to the same URL
// share it).
func leaseName(it *item) string {
	if it.Dest == "" {
		return "alert:" + it.GroupKey
	}
	return "alert:" + it.Dest + ":" + it.GroupKey
}

// leaseRef holds a GroupLease behind an atomic pointer.
type leaseRef struct{ l GroupLease }

// SetLease makes the engine share its groups' mails with the cluster
// through l from now on (Options.Lease, for an engine opened before the
// cluster was joined); nil: this node alone again.
func (e *Engine) SetLease(l GroupLease) {
	if l == nil {
		e.lease.Store(nil)
		return
	}
	e.lease.Store(&leaseRef{l})
}

// attemptLeased is attempt in a cluster, under l.
func (e *Engine) attemptLeased(ctx context.Context, l GroupLease, d *dest, it *item, now time.Time) bool {
	name := leaseName(it)
	mark, marked, err := l.Marked(ctx, name)
	if err == nil && marked {
		by, _, _ := strings.Cut(mark, " ")
		if e.st.remove(it.ID) == nil {
			what := " sent a mail of this group"
			if d.webhook {
				what = " posted this group to " + d.label
			}
			e.decide(now, Elsewhere, it.Rule, nil, it.ID, d.label, "node "+by+what+" less than "+
				e.cfg.GroupInterval.String()+" ago")
		}
		return true
	}
	var held bool
	var holder string
	if err == nil {
		held, holder, err = l.Hold(ctx, name, leaseTTL(d))
	}
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		e.log.WithError(err).WithField("rule", it.Rule).Warn("alert group lease unreadable; sending without it")
		ok, _ := e.send(ctx, d, it, now)
		return ok
	}
	if !held {
		it.Next = now.Add(leaseTTL(d) / 3)
		if it.Next.After(it.Expires) {
			it.Next = it.Expires
		}
		if _, uerr := e.st.update(it); uerr != nil {
			e.log.WithError(uerr).Error("alert outbox: could not save the next look at the group lease")
		}
		e.log.WithFields(logrus.Fields{"outbox": it.ID, "rule": it.Rule, "holder": holder}).
			Debug("alert group mailed by another node meanwhile; waiting")
		return true
	}
	ok, sent := e.send(ctx, d, it, now)
	// The lease and mark calls get a context of their own: a shutdown
	// right after the send must still leave the mark.
	bg, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	if sent {
		if err := l.Mark(bg, name, e.o.Node+" "+strconv.FormatInt(now.UnixNano(), 10), max(e.cfg.GroupInterval, time.Second)); err != nil {
			e.log.WithError(err).WithField("rule", it.Rule).Warn("alert sent but its group not marked: another node may mail it too")
		}
	}
	if err := l.Release(bg, name); err != nil {
		e.log.WithError(err).WithField("rule", it.Rule).Warn("alert group lease not released; it lapses on its own")
	}
	return ok
}
