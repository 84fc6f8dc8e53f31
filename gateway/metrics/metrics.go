package metrics

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/portcullis-gw/portcullis/audit"
)

// State is what the running parts report at scrape time: values that are
// not events. The assembler fills it from gateway.Server.Stats, the guard's
// and the audit writer's stats.
type State struct {
	Sockets          int64         // open sockets, handshakes in progress included
	Accepted         uint64        // sockets accepted since start
	Subscriptions    int64         // subscriptions held
	Topics           int64         // topics with at least one subscriber, summed over the loops
	Published        uint64        // publications posted to the loops since start
	Delivered        uint64        // frames queued to subscribers since start
	SlowConsumers    uint64        // connections closed as slow consumers since start
	InboundHeldBytes int64         // bytes unfinished messages hold against limits.inbound_buffer_total
	MaxLoopStall     time.Duration // the longest an event loop spent on one batch of work since start
	Bans             int64         // enforced bans held (policy/guard Stats.Bans: ended ones not yet swept included)
	AuditDropped     uint64        // audit events lost since start: queue full or disk failing
	LoopTurns        Histogram     // the event loops' turns that did work, by duration, since start
	Syscalls         []Syscall     // the event loops' system calls since start, by call
}

// Histogram is a distribution read at scrape time: Cumulative[i] is the
// number of observations of at most Bounds[i]; a last element, one past
// the bounds, counts them all.
type Histogram struct {
	Bounds     []time.Duration
	Cumulative []uint64
	Sum        time.Duration
}

// Syscall is a count of one system call (Call is its name: "write",
// "epoll_ctl", ...).
type Syscall struct {
	Call  string
	Count uint64
}

// Options configure New.
type Options struct {
	// State is called once per scrape; nil reports the State families as
	// zero. It must be safe to call from the HTTP server's goroutines.
	State func() State
	// Now is the clock that times publications; time.Now when nil.
	Now func() time.Time
}

// publishBuckets are the bounds, in seconds, of
// portcullis_publish_duration_seconds: 50 µs to 1 s, finest around the
// millisecond a publication to thousands of subscribers takes to queue.
var publishBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1}

// Metrics holds every counter and the registry that exports them. Build it
// with New. Safe for simultaneous use by multiple goroutines. Messages,
// ObservePublish and TimePublisher accept a nil *Metrics and then count
// nothing, so optional wiring needs no nil checks on the hot path.
type Metrics struct {
	c        counters
	messages Messages
	publish  prometheus.Histogram
	state    func() State
	now      func() time.Time
	reg      *prometheus.Registry
}

// New builds the counters and a registry holding them, the Go runtime's
// and the process's collectors.
func New(o Options) (*Metrics, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	m := &Metrics{state: o.State, now: o.Now, reg: prometheus.NewRegistry()}
	m.publish = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "portcullis_publish_duration_seconds",
		Help:    "Time to queue one publication on every event loop (POST /v1/publish), in seconds.",
		Buckets: publishBuckets,
	})
	for _, c := range []prometheus.Collector{
		&collector{m: m},
		m.publish,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register collector: %w", err)
		}
	}
	return m, nil
}

// Wrap returns a Sink that counts every event, then hands it to next. The
// assembler puts it in front of the audit trail, so that every emitter
// (the gateway, the guard, the admin API, the alert engine) is counted.
// m must not be nil.
func (m *Metrics) Wrap(next audit.Sink) *Sink {
	if next == nil {
		next = audit.Discard{}
	}
	return &Sink{c: &m.c, next: next}
}

// Messages returns the counter of client messages the gateway increments
// per message (Messages.Inc); nil for a nil m, which counts nothing.
func (m *Metrics) Messages() *Messages {
	if m == nil {
		return nil
	}
	return &m.messages
}

// ObservePublish records that queueing one publication took d.
// Allocation-free; a nil m records nothing.
func (m *Metrics) ObservePublish(d time.Duration) {
	if m == nil {
		return
	}
	m.publish.Observe(d.Seconds())
}

// Publisher publishes to the subscribers of a topic (gateway.Server; the
// admin API's Publisher).
type Publisher interface {
	Publish(topic string, data []byte) (int, error)
}

// TimePublisher returns p with every Publish timed into
// portcullis_publish_duration_seconds, failed ones included. A nil m
// returns p itself.
func (m *Metrics) TimePublisher(p Publisher) Publisher {
	if m == nil {
		return p
	}
	return timedPublisher{m: m, p: p}
}

type timedPublisher struct {
	m *Metrics
	p Publisher
}

func (t timedPublisher) Publish(topic string, data []byte) (int, error) {
	start := t.m.now()
	n, err := t.p.Publish(topic, data)
	t.m.ObservePublish(t.m.now().Sub(start))
	return n, err
}

// Handler serves the registry in the Prometheus exposition format (text,
// or what the scraper's Accept header asks for), without an access rule:
// mount it through Access.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// Gatherer returns the registry, for tests and for a caller that exports
// elsewhere.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }
