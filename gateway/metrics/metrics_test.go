package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/metrics"
	"github.com/portcullis-gw/portcullis/policy/bans"
)

// recorder is an audit sink that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
}

func (r *recorder) Emit(e audit.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func newMetrics(t testing.TB, o metrics.Options) *metrics.Metrics {
	t.Helper()
	m, err := metrics.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// scrape fetches /metrics through the handler as Prometheus does (text
// format) and parses it.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: status %d, body %q", rec.Code, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("GET /metrics: the text format does not parse: %v", err)
	}
	return fams
}

// value returns the value of the series of family name with exactly the
// labels given as name, value pairs; ok false when there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, l := range m.GetLabel() {
			if want[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func mustValue(t *testing.T, fams map[string]*dto.MetricFamily, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := value(fams, name, labels...)
	if !ok {
		t.Errorf("%s%v: no such series", name, labels)
		return
	}
	if got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

func TestSinkCountsEventsAndForwardsThem(t *testing.T) {
	m := newMetrics(t, metrics.Options{})
	next := &recorder{}
	sink := m.Wrap(next)
	evs := []audit.Event{
		{Event: audit.KindConnOpen, Stage: audit.StageHandshake, Proto: "portcullis.v1"},
		{Event: audit.KindConnOpen, Stage: audit.StageHandshake, Proto: "portcullis.v1"},
		{Event: audit.KindConnOpen, Stage: audit.StageHandshake, Proto: "wamp.2.json"},
		{Event: audit.KindConnClose, Stage: audit.StageClose, Proto: "portcullis.v1", Reason: reason.ClientClosed},
		{Event: audit.KindConnRejected, Stage: audit.StageAccept, Reason: reason.Blocked},
		{Event: audit.KindConnRejected, Stage: audit.StageAccept, Reason: reason.Blocked},
		{Event: audit.KindConnRejected, Stage: audit.StageHandshake, Reason: reason.BadOrigin},
		{Event: audit.KindMessageRejected, Stage: audit.StageMessage, Reason: reason.BadJSON, Proto: "wamp"},
		{Event: audit.KindAuthOK, Stage: audit.StageMessage},
		{Event: audit.KindAuthFailed, Stage: audit.StageMessage, Reason: reason.TokenReplayed},
		{Event: audit.KindAuthFailed, Stage: audit.StageAdmin, Reason: reason.AdminKeyWrong},
		{Event: audit.KindSubscribeDenied, Stage: audit.StageMessage, Reason: reason.TopicDenied},
		{Event: audit.KindBan, Stage: audit.StageSystem, Actor: bans.ActorAuto, Reason: reason.TokenReplayed},
		{Event: audit.KindBan, Stage: audit.StageAdmin, Actor: "alice"},
		{Event: audit.KindAlertSent, Stage: audit.StageSystem, Reason: reason.AlertSent},
		{Event: audit.KindAlertFailed, Stage: audit.StageSystem, Reason: reason.AlertRefused},
		{Event: audit.KindAlertFailed, Stage: audit.StageSystem, Reason: reason.AlertRefused},
	}
	for _, e := range evs {
		sink.Emit(e)
	}
	if len(next.events) != len(evs) {
		t.Fatalf("the wrapped sink got %d events, want %d", len(next.events), len(evs))
	}
	for i := range evs {
		if next.events[i] != evs[i] {
			t.Errorf("event %d reached the wrapped sink as %+v, want it unchanged: %+v", i, next.events[i], evs[i])
		}
	}

	f := scrape(t, m.Handler())
	mustValue(t, f, 2, "portcullis_connections_total", "protocol", "portcullis.v1")
	mustValue(t, f, 1, "portcullis_connections_total", "protocol", "wamp.2.json")
	mustValue(t, f, 0, "portcullis_connections_total", "protocol", "wamp")
	mustValue(t, f, 1, "portcullis_connections", "protocol", "portcullis.v1")
	mustValue(t, f, 1, "portcullis_connections", "protocol", "wamp.2.json")
	mustValue(t, f, 0, "portcullis_connections", "protocol", "wamp")

	// Label values are the docs/AUDIT.md spellings, from the enums.
	mustValue(t, f, 2, "portcullis_refusals_total", "stage", "accept", "reason", "blocked")
	mustValue(t, f, 1, "portcullis_refusals_total", "stage", "handshake", "reason", "bad_origin")
	mustValue(t, f, 1, "portcullis_refusals_total", "stage", "message", "reason", "bad_json")
	mustValue(t, f, 1, "portcullis_refusals_total", "stage", "message", "reason", "token_replayed")
	mustValue(t, f, 1, "portcullis_refusals_total", "stage", "message", "reason", "topic_denied")
	mustValue(t, f, 1, "portcullis_refusals_total", "stage", "admin", "reason", "admin_key_wrong")
	if n := len(f["portcullis_refusals_total"].GetMetric()); n != 6 {
		t.Errorf("portcullis_refusals_total has %d series, want the 6 counted (a ban, a close are no refusals)", n)
	}

	mustValue(t, f, 1, "portcullis_tokens_total", "result", "ok")
	mustValue(t, f, 1, "portcullis_tokens_total", "result", "token_replayed")
	mustValue(t, f, 0, "portcullis_tokens_total", "result", "token_expired") // exported before it happens
	if _, ok := value(f, "portcullis_tokens_total", "result", "admin_key_wrong"); ok {
		t.Error("a wrong admin key is counted as a client token result")
	}

	mustValue(t, f, 1, "portcullis_bans_total", "source", "auto")
	mustValue(t, f, 1, "portcullis_bans_total", "source", "manual")
	mustValue(t, f, 1, "portcullis_alerts_total", "result", "sent")
	mustValue(t, f, 2, "portcullis_alerts_total", "result", "refused")

	mustValue(t, f, 3, "portcullis_audit_events_total", "event", "conn_open")
	mustValue(t, f, 2, "portcullis_audit_events_total", "event", "auth_failed")
	mustValue(t, f, 0, "portcullis_audit_events_total", "event", "kernel_drop")
	for k := audit.Kind(1); k.String() != ""; k++ {
		if _, ok := value(f, "portcullis_audit_events_total", "event", k.String()); !ok {
			t.Errorf("portcullis_audit_events_total has no series for %s", k)
		}
	}
}

func TestStateFamilies(t *testing.T) {
	st := metrics.State{Sockets: 12, Accepted: 40, Subscriptions: 9, Topics: 4, Published: 7, Delivered: 63,
		SlowConsumers: 1, InboundHeldBytes: 2048, MaxLoopStall: 1500 * time.Millisecond, Bans: 3, AuditDropped: 5}
	calls := 0
	m := newMetrics(t, metrics.Options{State: func() metrics.State { calls++; return st }})
	f := scrape(t, m.Handler())
	if calls != 1 {
		t.Errorf("one scrape read the state %d times, want 1", calls)
	}
	for _, c := range []struct {
		name string
		want float64
	}{
		{"portcullis_sockets", 12},
		{"portcullis_accepted_total", 40},
		{"portcullis_subscriptions", 9},
		{"portcullis_topics", 4},
		{"portcullis_publications_total", 7},
		{"portcullis_deliveries_total", 63},
		{"portcullis_slow_consumers_total", 1},
		{"portcullis_inbound_held_bytes", 2048},
		{"portcullis_loop_stall_max_seconds", 1.5},
		{"portcullis_bans", 3},
		{"portcullis_audit_dropped_total", 5},
	} {
		mustValue(t, f, c.want, c.name)
	}
	// The Go runtime's and the process's collectors are registered.
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if f[name] == nil {
			t.Errorf("family %s missing", name)
		}
	}
}

func TestNoStateReportsZero(t *testing.T) {
	f := scrape(t, newMetrics(t, metrics.Options{}).Handler())
	mustValue(t, f, 0, "portcullis_deliveries_total")
	mustValue(t, f, 0, "portcullis_bans")
}

func TestMessagesByProtocolAndOp(t *testing.T) {
	m := newMetrics(t, metrics.Options{})
	msgs := m.Messages()
	msgs.Inc(metrics.ProtocolNative, metrics.OpSubscribe)
	msgs.Inc(metrics.ProtocolNative, metrics.OpSubscribe)
	msgs.Inc(metrics.ProtocolWAMP2, metrics.OpHello)
	msgs.Inc(metrics.ProtocolWAMP1, metrics.OpInvalid)
	msgs.Inc(metrics.Protocol(9), metrics.OpPublish) // out of range: counted, not lost
	f := scrape(t, m.Handler())
	mustValue(t, f, 2, "portcullis_messages_total", "protocol", "portcullis.v1", "op", "subscribe")
	mustValue(t, f, 1, "portcullis_messages_total", "protocol", "wamp.2.json", "op", "hello")
	mustValue(t, f, 1, "portcullis_messages_total", "protocol", "wamp", "op", "invalid")
	mustValue(t, f, 1, "portcullis_messages_total", "protocol", "portcullis.v1", "op", "unknown")
	if n := len(f["portcullis_messages_total"].GetMetric()); n != 4 {
		t.Errorf("portcullis_messages_total has %d series, want the 4 counted", n)
	}

	var none *metrics.Metrics // optional wiring: a nil handle counts nothing
	none.Messages().Inc(metrics.ProtocolNative, metrics.OpPing)
	none.ObservePublish(time.Millisecond)
	if got := none.Messages().Count(metrics.ProtocolNative, metrics.OpPing); got != 0 {
		t.Errorf("a nil Messages counted %d", got)
	}
}

func TestProtocolNames(t *testing.T) {
	for p := metrics.ProtocolNative; p <= metrics.ProtocolWAMP2; p++ {
		got, ok := metrics.ParseProtocol(p.String())
		if !ok || got != p {
			t.Errorf("ParseProtocol(%q) = %v, %v; want %v", p.String(), got, ok, p)
		}
	}
	if _, ok := metrics.ParseProtocol(""); ok {
		t.Error(`ParseProtocol("") succeeded`)
	}
}

// fakePublisher answers n, err after advancing the clock by took.
type fakePublisher struct {
	clock *time.Time
	took  time.Duration
	n     int
	err   error
}

func (p fakePublisher) Publish(string, []byte) (int, error) {
	*p.clock = p.clock.Add(p.took)
	return p.n, p.err
}

func TestTimePublisherObservesEveryPublish(t *testing.T) {
	clock := time.Unix(1_700_000_000, 0)
	m := newMetrics(t, metrics.Options{Now: func() time.Time { return clock }})
	ok := m.TimePublisher(fakePublisher{clock: &clock, took: 3 * time.Millisecond, n: 5})
	if n, err := ok.Publish("news", []byte(`1`)); n != 5 || err != nil {
		t.Fatalf("Publish = %d, %v; want the wrapped answer 5, nil", n, err)
	}
	boom := errors.New("no loop took it")
	bad := m.TimePublisher(fakePublisher{clock: &clock, took: 40 * time.Millisecond, err: boom})
	if _, err := bad.Publish("news", []byte(`1`)); !errors.Is(err, boom) {
		t.Fatalf("Publish error = %v, want the wrapped one", err)
	}
	f := scrape(t, m.Handler())
	h := f["portcullis_publish_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 2 {
		t.Errorf("sample count %d, want 2", h.GetSampleCount())
	}
	if got, want := h.GetSampleSum(), 0.043; got < want-1e-9 || got > want+1e-9 {
		t.Errorf("sample sum %v s, want %v s", got, want)
	}
	for _, b := range h.GetBucket() {
		var want uint64
		switch {
		case b.GetUpperBound() >= 0.04:
			want = 2
		case b.GetUpperBound() >= 0.003:
			want = 1
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("bucket le=%v holds %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
}

func TestFamiliesPassLint(t *testing.T) {
	m := newMetrics(t, metrics.Options{State: func() metrics.State { return metrics.State{} }})
	s := m.Wrap(audit.Discard{})
	s.Emit(audit.Event{Event: audit.KindConnRejected, Stage: audit.StageAccept, Reason: reason.Banned})
	m.Messages().Inc(metrics.ProtocolNative, metrics.OpPing)
	fams, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "portcullis_") {
			ours = append(ours, f.GetName())
		}
	}
	sort.Strings(ours)
	problems, err := testutil.GatherAndLint(m.Gatherer(), ours...)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, want := range []string{"portcullis_connections", "portcullis_connections_total",
		"portcullis_refusals_total", "portcullis_messages_total", "portcullis_deliveries_total",
		"portcullis_publish_duration_seconds", "portcullis_bans", "portcullis_bans_total",
		"portcullis_tokens_total", "portcullis_audit_events_total", "portcullis_audit_dropped_total",
		"portcullis_loop_stall_max_seconds"} {
		if i := sort.SearchStrings(ours, want); i == len(ours) || ours[i] != want {
			t.Errorf("family %s missing", want)
		}
	}
}

// durable is a sink with the trail's durable path.
type durable struct {
	recorder
	waited int
	err    error
}

func (d *durable) EmitDurable(_ context.Context, e audit.Event) error {
	d.waited++
	d.Emit(e)
	return d.err
}

func TestWrapKeepsTheDurablePath(t *testing.T) {
	m := newMetrics(t, metrics.Options{})
	full := errors.New("disk full")
	trail := &durable{err: full}
	var s audit.Durable = m.Wrap(trail)
	ban := audit.Event{Event: audit.KindBan, Stage: audit.StageAdmin, Actor: "alice"}
	if err := s.EmitDurable(context.Background(), ban); !errors.Is(err, full) {
		t.Errorf("EmitDurable = %v, want the trail's answer", err)
	}
	if trail.waited != 1 || len(trail.events) != 1 {
		t.Errorf("the trail was waited on %d times and got %d events, want 1 and 1", trail.waited, len(trail.events))
	}

	plain := &recorder{}
	err := m.Wrap(plain).EmitDurable(context.Background(), ban)
	if !errors.Is(err, audit.ErrNotDurable) {
		t.Errorf("EmitDurable through a sink without a durable path = %v, want an error saying so", err)
	}
	if len(plain.events) != 1 {
		t.Errorf("the plain sink got %d events, want 1", len(plain.events))
	}
	mustValue(t, scrape(t, m.Handler()), 2, "portcullis_bans_total", "source", "manual")
}

// seriesCount is how many series of portcullis_ families a scrape returns.
func seriesCount(t *testing.T, m *metrics.Metrics) int {
	t.Helper()
	n := 0
	for name, f := range scrape(t, m.Handler()) {
		if strings.HasPrefix(name, "portcullis_") {
			n += len(f.GetMetric())
		}
	}
	return n
}

// No label value comes from a client: a flood of events with distinct
// addresses, users, topics, details and made-up protocol names adds no
// series beyond those of one such event.
func TestAttackerInputCreatesNoSeries(t *testing.T) {
	m := newMetrics(t, metrics.Options{})
	s := m.Wrap(audit.Discard{})
	ev := func(i int) audit.Event {
		return audit.Event{Event: audit.KindMessageRejected, Stage: audit.StageMessage, Reason: reason.SchemaViolation,
			IP: netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), UserID: fmt.Sprintf("user-%d", i),
			Topic: fmt.Sprintf("t.%d", i), Detail: fmt.Sprintf("at /x/%d", i), Proto: fmt.Sprintf("evil.%d", i)}
	}
	s.Emit(ev(0))
	s.Emit(audit.Event{Event: audit.KindConnOpen, Stage: audit.StageHandshake, Proto: "made-up"})
	base := seriesCount(t, m)
	for i := 1; i < 5000; i++ {
		s.Emit(ev(i))
		s.Emit(audit.Event{Event: audit.KindConnClose, Stage: audit.StageClose, Proto: fmt.Sprintf("p%d", i)})
	}
	if n := seriesCount(t, m); n != base {
		t.Errorf("%d series after 5,000 distinct clients, want the %d of one", n, base)
	}
}
