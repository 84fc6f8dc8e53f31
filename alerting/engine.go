package alerting

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// DefaultQueueSize is the capacity of Engine's event queue, in events.
const DefaultQueueSize = 8192

// DefaultTickEvery is how often the background workers evaluate groups and
// the outbox when Options.Manual is false.
const DefaultTickEvery = time.Second

// ErrNotConfigured is returned by Open without a Notifier when
// alerting.smtp has no host or no recipients and there is no webhook.
var ErrNotConfigured = errors.New("alerting: neither smtp.host and smtp.to nor webhooks are set; alerting is off")

// Options configure an Engine. Optional parts have working defaults.
type Options struct {
	Config Config
	// Path is the bbolt file of the outbox and the silences, e.g.
	// <data_dir>/alerts.db: its own file, never the bans' state.db.
	Path string
	// Node names this gateway in subjects and bodies.
	Node string
	// Paths tell the commands printed in a mail where this gateway keeps
	// its files, so that they work from any directory; zero: no flags.
	Paths Paths
	// Notifier sends mail; nil: NewSMTP(Config.SMTP, Getenv) when
	// Config.SMTP is enabled, else no mail.
	Notifier Notifier
	// Webhooks are the webhook destinations; nil: built from
	// Config.Webhooks (NewWebhook).
	Webhooks []*Webhook
	// Getenv reads the password variable; nil: os.Getenv.
	Getenv func(string) string
	// Audit receives the engine's decisions (alert_sent, alert_failed). It
	// must not feed them back into this engine's Emit (they are ignored
	// there anyway); nil: audit.Discard.
	Audit audit.Sink
	// Log is the operational logger; nil: logrus.StandardLogger().
	Log *logrus.Logger
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Jitter returns a number in [0, 1) for retry jitter; nil: math/rand/v2.
	Jitter func() float64
	// QueueSize is the capacity of the event queue (default
	// DefaultQueueSize); events beyond are dropped and counted.
	QueueSize int
	// Manual stops the background tickers: only Tick evaluates groups and
	// delivers mail (tests drive a fake clock this way).
	Manual bool
	// Lease, in a cluster, makes one node send each group's mail
	// (lease.go); nil: this node alone.
	Lease GroupLease
	// TickEvery is the background tick period (default DefaultTickEvery).
	TickEvery time.Duration
}

// Engine turns audit events into alert mails. It is an audit.Sink whose
// Emit only queues; the rules worker and the delivery worker do the rest.
// It is safe for use by multiple goroutines.
//
// LOCKORDER: silencer.mu is the only lock; the store relies on bbolt's own.
type Engine struct {
	o      Options
	cfg    Config
	now    func() time.Time
	jitter func() float64
	log    *logrus.Logger
	audit  audit.Sink
	dests  []*dest // the mail first, then the webhooks in config order
	st     *store

	q        *audit.Queue
	batch    []audit.Event // rulesWorker's buffer for drain
	tickReq  chan tickReq
	sendReq  chan tickReq
	wake     chan struct{} // the outbox has news (capacity 1)
	quit     chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closing  sync.Once
	closed   atomic.Bool
	closeErr error

	// Owned by the rules worker.
	rules []*rule
	disp  *dispatcher
	inhib *inhibitor
	sil   *silencer // its own lock; used by API callers too
	rcap  *ratecap

	evalNow time.Time // the now of the evaluation in progress

	// Owned by the delivery worker.
	pauseUntil map[string]time.Time // per destination: after a retryable failure
	nextDue    time.Time

	stats counters

	// lease is the cluster's group lease (lease.go): Options.Lease, or
	// what SetLease set; nil inside: this node alone.
	lease atomic.Pointer[leaseRef]
}

// dest is one destination of every notification: the mail, or one webhook.
type dest struct {
	key     string        // item.Dest: "" for the mail, Webhook.Dest() for a webhook
	label   string        // in audit lines and logs: "mail" or "webhook:<host>"
	n       Notifier      // sends one attempt
	timeout time.Duration // bound on one attempt; sizes the cluster lease
	webhook bool          // posts Message.JSON rather than a mail
}

type tickReq struct {
	now  time.Time
	done chan struct{}
}

type counters struct {
	events, eventsDropped, ignored                       atomic.Uint64
	queued, sent, failed, dropped, superseded            atomic.Uint64
	inhibited, silenced, capped, digests                 atomic.Uint64
	attempts, attemptErrors, groupsDropped, countDropped atomic.Uint64
	pending, groups                                      atomic.Int64
}

// Stats are the engine's counters for /v1/stats.
type Stats struct {
	Events        uint64 `json:"events"`         // events accepted by Emit
	EventsDropped uint64 `json:"events_dropped"` // events refused: queue full or closed
	Queued        uint64 `json:"queued"`         // deliveries put into the outbox (one per notification and destination)
	Sent          uint64 `json:"sent"`           // deliveries taken: mails the SMTP server accepted, webhook POSTs answered 2xx
	Failed        uint64 `json:"failed"`         // mails given up: refused or expired
	Dropped       uint64 `json:"dropped"`        // mails that could not be saved
	Superseded    uint64 `json:"superseded"`     // unsent mails replaced by a newer update of their group
	Suppressed    uint64 `json:"suppressed"`     // inhibited + silenced + capped
	Inhibited     uint64 `json:"inhibited"`
	Silenced      uint64 `json:"silenced"`
	Capped        uint64 `json:"capped"`
	Digests       uint64 `json:"digests"`
	Attempts      uint64 `json:"attempts"`
	AttemptErrors uint64 `json:"attempt_errors"`
	Pending       int64  `json:"pending"` // mails in the outbox
	Groups        int64  `json:"groups"`  // live alert groups
	GroupsDropped uint64 `json:"groups_dropped"`
	CountDropped  uint64 `json:"count_dropped"` // events not counted by a threshold rule: too many keys
}

// Open opens (or creates, mode 0600) the outbox file at o.Path, loads the
// silences, and starts the workers; mails left pending by a previous run
// are attempted again.
func Open(o Options) (*Engine, error) {
	if o.Path == "" {
		return nil, errors.New("alerting: no outbox path")
	}
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	cfg := o.Config.withDefaults()
	e := &Engine{o: o, cfg: cfg, now: o.Now, jitter: o.Jitter, log: o.Log, audit: o.Audit,
		pauseUntil: map[string]time.Time{}}
	if o.Lease != nil {
		e.lease.Store(&leaseRef{o.Lease})
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.jitter == nil {
		e.jitter = rand.Float64
	}
	if e.log == nil {
		e.log = logrus.StandardLogger()
	}
	if e.audit == nil {
		e.audit = audit.Discard{}
	}
	if e.o.Node == "" {
		e.o.Node = "portcullis"
	}
	e.o.Node = clean(e.o.Node, 64)
	mail := o.Notifier
	if mail == nil && cfg.SMTP.Enabled() {
		s, err := NewSMTP(cfg.SMTP, o.Getenv)
		if err != nil {
			return nil, err
		}
		mail = s
	}
	if mail != nil {
		e.dests = append(e.dests, &dest{label: "mail", n: mail, timeout: cfg.SMTP.Timeout})
	}
	hooks := o.Webhooks
	if hooks == nil {
		for i, wc := range cfg.Webhooks {
			w, err := NewWebhook(i, wc)
			if err != nil {
				return nil, err
			}
			hooks = append(hooks, w)
		}
	}
	for _, w := range hooks {
		e.dests = append(e.dests, &dest{key: w.Dest(), label: w.String(), n: w, timeout: w.cfg.Timeout, webhook: true})
	}
	if len(e.dests) == 0 {
		return nil, ErrNotConfigured
	}
	st, err := openStore(o.Path)
	if err != nil {
		return nil, err
	}
	e.st = st
	e.rules = compileRules(cfg.Rules)
	e.disp = newDispatcher(cfg)
	e.inhib = newInhibitor(e.disp, e.rules, e.suppressed)
	e.sil = &silencer{st: st, report: e.suppressed, list: map[string]Silence{}}
	sls, err := st.loadSilences()
	if err != nil {
		_ = st.close()
		return nil, err
	}
	for _, sl := range sls {
		e.sil.list[sl.ID] = sl
	}
	e.rcap = &ratecap{max: cfg.MaxPerHour, report: e.suppressed}
	qs := o.QueueSize
	if qs <= 0 {
		qs = DefaultQueueSize
	}
	e.q = audit.NewQueue(qs)
	e.tickReq = make(chan tickReq)
	e.sendReq = make(chan tickReq)
	e.wake = make(chan struct{}, 1)
	e.quit = make(chan struct{})
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.stats.pending.Store(int64(st.count()))
	e.wg.Add(2)
	go e.rulesWorker()
	go e.deliveryWorker()
	e.pokeSender()
	return e, nil
}

// Emit queues ev for the rules; it never blocks and never does I/O. When
// the queue is full ev is dropped and counted. alert_sent and alert_failed
// events are ignored: the engine never alerts on its own reports.
func (e *Engine) Emit(ev audit.Event) {
	if ev.Event == audit.KindAlertSent || ev.Event == audit.KindAlertFailed {
		e.stats.ignored.Add(1)
		return
	}
	if e.closed.Load() {
		e.stats.eventsDropped.Add(1)
		return
	}
	if ev.Time.IsZero() {
		ev.Time = e.now()
	}
	if e.q.Push(ev) {
		e.stats.events.Add(1)
	} else {
		e.stats.eventsDropped.Add(1)
	}
}

// Tick makes the engine catch up as of now: it runs the rules over every
// event Emit accepted before the call, flushes the groups that are due,
// then attempts the mails due. It returns when both are done (or the engine
// is closed). With Options.Manual it is the only clock; otherwise the
// workers tick by themselves every TickEvery and Tick is rarely needed.
func (e *Engine) Tick(now time.Time) {
	for _, ch := range []chan tickReq{e.tickReq, e.sendReq} {
		r := tickReq{now: now, done: make(chan struct{})}
		select {
		case ch <- r:
		case <-e.quit:
			return
		}
		select {
		case <-r.done:
		case <-e.quit:
			return
		}
	}
}

// Test sends a test notification now to every destination (a mail, and
// a POST to each webhook), bypassing grouping, the cap and the outbox (for
// `portcullis alert test`). Each result is audited; the error joins the
// failures.
func (e *Engine) Test(ctx context.Context) error {
	now := e.now()
	var errs []error
	for _, d := range e.dests {
		m := testMessage(e.o.Node, now)
		if d.webhook {
			m = testWebhookMessage(e.o.Node, now)
		}
		if _, err := d.n.Notify(ctx, m); err != nil {
			e.decide(now, Refused, "test", nil, "", d.label, "test notification failed: "+clean(err.Error(), 200))
			errs = append(errs, err)
			continue
		}
		e.decide(now, Sent, "test", nil, "", d.label, "test notification delivered")
	}
	return errors.Join(errs...)
}

// destOf returns the destination of key; nil when it is no longer
// configured.
func (e *Engine) destOf(key string) *dest {
	for _, d := range e.dests {
		if d.key == key {
			return d
		}
	}
	return nil
}

// Silence mutes notifications whose labels match every matcher until
// until; it returns the new silence's id. by (who) is required. It returns
// once the silence's admin line is on disk (audit.Durable); when that
// cannot be known in time (ctx), the silence is in force anyway, its id is
// returned, and the error wraps audit.ErrNotDurable.
func (e *Engine) Silence(ctx context.Context, ms []Matcher, until time.Time, by, comment string) (string, error) {
	if e.closed.Load() {
		return "", errors.New("alerting: closed")
	}
	now := e.now()
	id, err := e.sil.add(ms, now, until, by, comment)
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	for i, m := range ms {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(m.Name + "=" + quote(m.Value))
	}
	err = audit.EmitDurable(ctx, e.audit, audit.Event{Time: now, Event: audit.KindAdmin, Severity: audit.Notice, Stage: audit.StageAdmin,
		Actor: audit.Cap(by), Reason: reason.SilenceAdd,
		Detail: audit.Cap("silence " + id + " until " + until.UTC().Format(time.RFC3339) + ": " + sb.String() + " " + quote(comment))})
	if err != nil {
		return id, fmt.Errorf("alerting: silence %s added: %w", id, err)
	}
	return id, nil
}

// Expire ends silence id now (ErrNoSilence if unknown). It returns once
// the admin line is on disk; when that cannot be known in time (ctx), the
// silence has ended anyway and the error wraps audit.ErrNotDurable.
func (e *Engine) Expire(ctx context.Context, id string) error {
	if e.closed.Load() {
		return errors.New("alerting: closed")
	}
	now := e.now()
	if err := e.sil.expire(id, now); err != nil {
		return err
	}
	err := audit.EmitDurable(ctx, e.audit, audit.Event{Time: now, Event: audit.KindAdmin, Severity: audit.Notice, Stage: audit.StageAdmin,
		Reason: reason.SilenceExpire, Detail: audit.Cap("silence " + id + " expired")})
	if err != nil {
		return fmt.Errorf("alerting: silence %s expired: %w", id, err)
	}
	return nil
}

// Silences lists the silences, active ones and those ended within the last
// day, newest first.
func (e *Engine) Silences() []Silence { return e.sil.all() }

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	c := &e.stats
	s := Stats{
		Events: c.events.Load(), EventsDropped: c.eventsDropped.Load(), Queued: c.queued.Load(),
		Sent: c.sent.Load(), Failed: c.failed.Load(), Dropped: c.dropped.Load(), Superseded: c.superseded.Load(),
		Inhibited: c.inhibited.Load(), Silenced: c.silenced.Load(), Capped: c.capped.Load(),
		Digests: c.digests.Load(), Attempts: c.attempts.Load(), AttemptErrors: c.attemptErrors.Load(),
		Pending: c.pending.Load(), Groups: c.groups.Load(), GroupsDropped: c.groupsDropped.Load(),
		CountDropped: c.countDropped.Load(),
	}
	s.Suppressed = s.Inhibited + s.Silenced + s.Capped
	return s
}

// Close stops the workers. Events still queued are counted into their
// groups, and every group with events not yet mailed is put into the
// outbox at once (group_wait is not waited for), so that a restart delays
// an alert but never loses it. An attempt in progress is abandoned and
// stays pending. Close then closes the file.
func (e *Engine) Close() error {
	e.closing.Do(func() {
		e.closed.Store(true)
		e.cancel()
		close(e.quit)
		e.wg.Wait()
		e.closeErr = e.st.close()
	})
	return e.closeErr
}

func (e *Engine) pokeSender() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Engine) rulesWorker() {
	defer e.wg.Done()
	var tick <-chan time.Time
	if !e.o.Manual {
		t := time.NewTicker(cmpOr(e.o.TickEvery, DefaultTickEvery))
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-e.q.Ready():
			e.drain()
		case r := <-e.tickReq:
			e.drain()
			e.evaluate(r.now, false)
			close(r.done)
		case <-tick:
			e.drain()
			e.evaluate(e.now(), false)
		case <-e.quit:
			e.drain()
			e.evaluate(e.now(), true)
			return
		}
	}
}

func (e *Engine) deliveryWorker() {
	defer e.wg.Done()
	var tick <-chan time.Time
	if !e.o.Manual {
		t := time.NewTicker(cmpOr(e.o.TickEvery, DefaultTickEvery))
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-e.wake:
			if !e.o.Manual {
				e.deliver(e.ctx, e.now())
			}
		case r := <-e.sendReq:
			e.deliver(e.ctx, r.now)
			close(r.done)
		case <-tick:
			if now := e.now(); !e.nextDue.IsZero() && !now.Before(e.nextDue) {
				e.deliver(e.ctx, now)
			}
		case <-e.quit:
			return
		}
	}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// drain observes every event already queued.
func (e *Engine) drain() {
	for {
		e.batch = e.q.Pop(e.batch[:0], 256)
		if len(e.batch) == 0 {
			return
		}
		for i := range e.batch {
			e.observe(&e.batch[i])
		}
		clear(e.batch)
	}
}

// observe runs stage 1 and 2 for one event.
func (e *Engine) observe(ev *audit.Event) {
	for _, r := range e.rules {
		if h, ok := r.observe(ev); ok {
			before := e.disp.dropped
			e.disp.add(h)
			if e.disp.dropped != before {
				e.stats.groupsDropped.Add(1)
			}
		}
	}
}

// evaluate runs stages 2 to 5 as of now; force flushes every group with
// unsent events (at Close).
func (e *Engine) evaluate(now time.Time, force bool) {
	e.evalNow = now
	if force {
		for _, g := range e.disp.groups {
			if g.fresh > 0 {
				g.nextFlush = now
			}
		}
	}
	ns := e.disp.flush(now)
	ns = e.inhib.exec(now, ns)
	ns = e.sil.exec(now, ns)
	ns = e.rcap.exec(now, ns)
	for _, n := range ns {
		e.enqueue(n, now)
	}
	var cd uint64
	for _, r := range e.rules {
		if r.windows != nil {
			r.gc(now)
		}
		cd += r.dropped
	}
	e.stats.countDropped.Store(cd)
	e.stats.groups.Store(int64(len(e.disp.groups)))
	e.sil.gc(now)
}

// suppressed reports a notification a filter stage removed.
func (e *Engine) suppressed(n *notification, d Decision, detail string) {
	switch d {
	case Inhibited:
		e.stats.inhibited.Add(1)
	case Silenced:
		e.stats.silenced.Add(1)
	case Capped:
		e.stats.capped.Add(1)
	case Digest:
		e.stats.digests.Add(1)
		return // reported as queued when it reaches the outbox
	}
	e.decide(e.evalNow, d, n.Rule, n.Labels, "", "", detail)
}

// decide reports a decision as an audit event: alert_failed for failures,
// alert_sent otherwise, the decision as Reason; to names the destination
// ("mail", "webhook:<host>"; "" when the decision precedes the outbox).
func (e *Engine) decide(now time.Time, d Decision, rule string, ls Labels, id, to, detail string) {
	ev := audit.Event{Time: now, Event: audit.KindAlertSent, Severity: audit.Notice, Stage: audit.StageSystem,
		Reason: d.Reason(), Actor: "alerting"}
	switch d {
	case Retry:
		ev.Event, ev.Severity = audit.KindAlertFailed, audit.Warning
	case Refused, Expired, Dropped:
		ev.Event, ev.Severity = audit.KindAlertFailed, audit.Critical
	case Inhibited, Silenced, Capped:
		ev.Severity = audit.Info
	}
	var b strings.Builder
	b.WriteString("rule=" + rule)
	if id != "" {
		b.WriteString(" outbox=" + id)
	}
	if to != "" {
		b.WriteString(" to=" + to)
	}
	if len(ls) > 2 {
		b.WriteString(" " + Labels(ls[2:]).String())
	}
	b.WriteString(": " + detail)
	ev.Detail = audit.Cap(b.String())
	e.audit.Emit(ev)
}
