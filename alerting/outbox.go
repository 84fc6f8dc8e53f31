package alerting

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"
)

// Stage 5: the outbox. A rendered mail is persisted before its first
// attempt; the delivery worker attempts what is due, one mail at a time,
// and on a retryable failure backs off exponentially with jitter (the whole
// outbox waits: the server is down for every mail alike). A mail not
// delivered within Config.Expire is given up: alert_failed, and an error on
// the operational log. Every attempt is audited. Pending mails survive a
// restart: Open resumes them.

// backoff is the delay after the n-th failed attempt (n ≥ 1): RetryBase ×
// 2^(n-1), capped at RetryMax, times a jitter factor in [0.8, 1.2).
func (e *Engine) backoff(n int) time.Duration {
	d := e.cfg.RetryBase
	for i := 1; i < n && d < e.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, e.cfg.RetryMax)
	return time.Duration(float64(d) * (0.8 + 0.4*e.jitter()))
}

// enqueue renders n and persists it. Called by the rules worker.
func (e *Engine) enqueue(n *notification, now time.Time) {
	msg := render(n, e.o.Node, e.o.Paths, now)
	it := &item{GroupKey: n.GroupKey, Rule: n.Rule, Summary: msg.Subject, Created: now,
		Expires: now.Add(e.cfg.Expire), Next: now, Msg: msg}
	replaced, err := e.st.enqueue(it)
	if err != nil {
		e.stats.dropped.Add(1)
		e.decide(now, Dropped, n.Rule, n.Labels, "", err.Error())
		e.log.WithError(err).WithField("rule", n.Rule).Error("alert could not be saved to the outbox; not sent")
		return
	}
	e.stats.queued.Add(1)
	detail := "outbox " + it.ID + ", " + itoa(n.Fresh) + " new events grouped (" + itoa(n.Count) + " in all)"
	if len(replaced) > 0 {
		detail += ", supersedes unsent " + replaced[0]
		e.stats.superseded.Add(uint64(len(replaced)))
	}
	e.decide(now, Queued, n.Rule, n.Labels, it.ID, detail)
	e.pokeSender()
}

// deliver attempts every mail due at now, in queue order. Called by the
// delivery worker only.
func (e *Engine) deliver(ctx context.Context, now time.Time) {
	its, bad, err := e.st.pending()
	if err != nil {
		e.log.WithError(err).Error("alert outbox unreadable")
		return
	}
	if bad > 0 {
		e.log.WithField("count", bad).Error("alert outbox: unreadable mails dropped")
	}
	e.stats.pending.Store(int64(len(its)))
	next := time.Time{}
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for i := range its {
		it := &its[i]
		if ctx.Err() != nil {
			return
		}
		if !now.Before(it.Expires) {
			if e.st.remove(it.ID) == nil {
				e.stats.failed.Add(1)
				e.decide(now, Expired, it.Rule, nil, it.ID, "not delivered within "+e.cfg.Expire.String()+
					" after "+itoa(int64(it.Attempts))+" attempts; last error: "+it.LastErr)
				e.log.WithFields(logrus.Fields{"outbox": it.ID, "rule": it.Rule, "attempts": it.Attempts,
					"last_error": it.LastErr}).Error("alert mail given up: not delivered in time")
			}
			continue
		}
		if now.Before(it.Next) {
			later(it.Next)
			continue
		}
		if now.Before(e.pauseUntil) {
			later(e.pauseUntil)
			continue
		}
		if !e.attempt(ctx, it, now) {
			later(e.pauseUntil)
		} else if it.Next.After(now) {
			later(it.Next) // waiting for another node's mail of its group (lease.go)
		}
	}
	e.nextDue = next
	e.stats.pending.Store(int64(e.st.count()))
}

// attempt makes one delivery attempt of it, under the group's lease in a
// cluster (lease.go); false means the outbox should wait (a retryable
// failure).
func (e *Engine) attempt(ctx context.Context, it *item, now time.Time) bool {
	if r := e.lease.Load(); r != nil {
		return e.attemptLeased(ctx, r.l, it, now)
	}
	ok, _ := e.send(ctx, it, now)
	return ok
}

// send makes one delivery attempt of it; ok false means the outbox should
// wait (a retryable failure), sent that the SMTP server took the mail.
func (e *Engine) send(ctx context.Context, it *item, now time.Time) (ok, sent bool) {
	it.Attempts++
	e.stats.attempts.Add(1)
	retryable, err := e.notifier.Notify(ctx, it.Msg)
	if err == nil {
		e.pauseUntil = time.Time{}
		if rmErr := e.st.remove(it.ID); rmErr != nil {
			e.log.WithError(rmErr).Error("alert sent but could not be removed from the outbox; it may be sent again")
		}
		e.stats.sent.Add(1)
		e.decide(now, Sent, it.Rule, nil, it.ID, "delivered on attempt "+itoa(int64(it.Attempts)))
		return true, true
	}
	if ctx.Err() != nil { // shutting down: not the server's fault, the mail stays
		it.Attempts--
		return false, false
	}
	e.stats.attemptErrors.Add(1)
	msg := clean(err.Error(), 200)
	if !retryable {
		if e.st.remove(it.ID) == nil {
			e.stats.failed.Add(1)
		}
		e.decide(now, Refused, it.Rule, nil, it.ID, "attempt "+itoa(int64(it.Attempts))+" refused for good: "+msg)
		e.log.WithFields(logrus.Fields{"outbox": it.ID, "rule": it.Rule, "attempts": it.Attempts}).
			WithError(err).Error("alert mail refused; not retried")
		return true, false
	}
	it.LastErr = msg
	it.Next = now.Add(e.backoff(it.Attempts))
	if it.Next.After(it.Expires) {
		it.Next = it.Expires
	}
	e.pauseUntil = it.Next
	if _, uerr := e.st.update(it); uerr != nil {
		e.log.WithError(uerr).Error("alert outbox: could not save the retry time")
	}
	e.decide(now, Retry, it.Rule, nil, it.ID, "attempt "+itoa(int64(it.Attempts))+" failed: "+msg+
		"; next attempt at "+it.Next.UTC().Format(time.RFC3339))
	e.log.WithFields(logrus.Fields{"outbox": it.ID, "rule": it.Rule, "attempts": it.Attempts,
		"next": it.Next.UTC().Format(time.RFC3339)}).WithError(err).Warn("alert mail attempt failed; will retry")
	return false, false
}
