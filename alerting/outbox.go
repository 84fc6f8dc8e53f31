package alerting

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"
)

// Stage 5: the outbox. A notification is rendered and persisted once per
// destination (the mail, each webhook) before its first attempt, so that
// each destination is retried on its own: a webhook that fails never makes
// the mail go out twice. The delivery worker attempts what is due, one
// delivery at a time, and on a retryable failure backs off exponentially
// with jitter (that destination's whole queue waits: its server is down
// for every delivery alike; the others go on). A delivery not made within
// Config.Expire is given up: alert_failed, and an error on the operational
// log. Every attempt is audited, naming its destination. Pending
// deliveries survive a restart: Open resumes them.

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

// enqueue renders n and persists one delivery of it per destination.
// Called by the rules worker.
func (e *Engine) enqueue(n *notification, now time.Time) {
	mail := render(n, e.o.Node, e.o.Paths, now)
	var hook Message
	for _, d := range e.dests {
		msg := mail
		if d.webhook {
			if hook.JSON == nil {
				hold := e.cfg.GroupInterval
				if n.Threshold > 0 {
					hold = n.Window
				}
				hook = Message{Subject: mail.Subject, JSON: renderWebhook(n, mail, e.o.Node, hold), Date: now}
			}
			msg = hook
		}
		it := &item{GroupKey: n.GroupKey, Dest: d.key, Rule: n.Rule, Summary: mail.Subject, Created: now,
			Expires: now.Add(e.cfg.Expire), Next: now, Msg: msg}
		replaced, err := e.st.enqueue(it)
		if err != nil {
			e.stats.dropped.Add(1)
			e.decide(now, Dropped, n.Rule, n.Labels, "", d.label, err.Error())
			e.log.WithError(err).WithFields(logrus.Fields{"rule": n.Rule, "to": d.label}).
				Error("alert could not be saved to the outbox; not sent")
			continue
		}
		e.stats.queued.Add(1)
		detail := "outbox " + it.ID + ", " + itoa(n.Fresh) + " new events grouped (" + itoa(n.Count) + " in all)"
		if len(replaced) > 0 {
			detail += ", supersedes unsent " + replaced[0]
			e.stats.superseded.Add(uint64(len(replaced)))
		}
		e.decide(now, Queued, n.Rule, n.Labels, it.ID, d.label, detail)
	}
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
				e.decide(now, Expired, it.Rule, nil, it.ID, e.destLabel(it.Dest), "not delivered within "+e.cfg.Expire.String()+
					" after "+itoa(int64(it.Attempts))+" attempts; last error: "+it.LastErr)
				e.log.WithFields(logrus.Fields{"outbox": it.ID, "rule": it.Rule, "to": e.destLabel(it.Dest), "attempts": it.Attempts,
					"last_error": it.LastErr}).Error("alert given up: not delivered in time")
			}
			continue
		}
		if now.Before(it.Next) {
			later(it.Next)
			continue
		}
		if pause := e.pauseUntil[it.Dest]; now.Before(pause) {
			later(pause)
			continue
		}
		if !e.attempt(ctx, it, now) {
			later(e.pauseUntil[it.Dest])
		} else if it.Next.After(now) {
			later(it.Next) // waiting for another node's mail of its group (lease.go)
		}
	}
	e.nextDue = next
	e.stats.pending.Store(int64(e.st.count()))
}

// destLabel names the destination key for audit lines and logs.
func (e *Engine) destLabel(key string) string {
	if d := e.destOf(key); d != nil {
		return d.label
	}
	if key == "" {
		return "mail"
	}
	return key
}

// attempt makes one delivery attempt of it, under the group's lease in a
// cluster (lease.go); false means the outbox should wait (a retryable
// failure). A delivery whose destination is no longer configured (a
// webhook removed from the config) is given up.
func (e *Engine) attempt(ctx context.Context, it *item, now time.Time) bool {
	d := e.destOf(it.Dest)
	if d == nil {
		if e.st.remove(it.ID) == nil {
			e.stats.failed.Add(1)
			e.decide(now, Refused, it.Rule, nil, it.ID, e.destLabel(it.Dest), "destination no longer configured; not sent")
		}
		return true
	}
	if r := e.lease.Load(); r != nil {
		return e.attemptLeased(ctx, r.l, d, it, now)
	}
	ok, _ := e.send(ctx, d, it, now)
	return ok
}

// send makes one delivery attempt of it to d; ok false means the outbox
// should wait (a retryable failure), sent that the destination took it.
func (e *Engine) send(ctx context.Context, d *dest, it *item, now time.Time) (ok, sent bool) {
	it.Attempts++
	e.stats.attempts.Add(1)
	retryable, err := d.n.Notify(ctx, it.Msg)
	if err == nil {
		delete(e.pauseUntil, it.Dest)
		if rmErr := e.st.remove(it.ID); rmErr != nil {
			e.log.WithError(rmErr).WithField("to", d.label).Error("alert sent but could not be removed from the outbox; it may be sent again")
		}
		e.stats.sent.Add(1)
		e.decide(now, Sent, it.Rule, nil, it.ID, d.label, "delivered on attempt "+itoa(int64(it.Attempts)))
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
		e.decide(now, Refused, it.Rule, nil, it.ID, d.label, "attempt "+itoa(int64(it.Attempts))+" refused for good: "+msg)
		e.log.WithFields(logrus.Fields{"outbox": it.ID, "rule": it.Rule, "to": d.label, "attempts": it.Attempts}).
			WithError(err).Error("alert refused; not retried")
		return true, false
	}
	it.LastErr = msg
	it.Next = now.Add(e.backoff(it.Attempts))
	if it.Next.After(it.Expires) {
		it.Next = it.Expires
	}
	e.pauseUntil[it.Dest] = it.Next
	if _, uerr := e.st.update(it); uerr != nil {
		e.log.WithError(uerr).Error("alert outbox: could not save the retry time")
	}
	e.decide(now, Retry, it.Rule, nil, it.ID, d.label, "attempt "+itoa(int64(it.Attempts))+" failed: "+msg+
		"; next attempt at "+it.Next.UTC().Format(time.RFC3339))
	e.log.WithFields(logrus.Fields{"outbox": it.ID, "rule": it.Rule, "to": d.label, "attempts": it.Attempts,
		"next": it.Next.UTC().Format(time.RFC3339)}).WithError(err).Warn("alert attempt failed; will retry")
	return false, false
}
