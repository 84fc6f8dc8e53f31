package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway"
	"github.com/portcullis-gw/portcullis/gateway/config"
)

// events records audit events.
type events struct {
	mu sync.Mutex
	ev []audit.Event
}

func (e *events) Emit(ev audit.Event) {
	e.mu.Lock()
	e.ev = append(e.ev, ev)
	e.mu.Unlock()
}

// of returns the events of kind k.
func (e *events) of(k audit.Kind) []audit.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []audit.Event
	for _, ev := range e.ev {
		if ev.Event == k {
			out = append(out, ev)
		}
	}
	return out
}

// hub is a gateway.Hub that records what it is handed.
type hub struct {
	mu   sync.Mutex
	got  []string // topic=data
	subs int
}

func (h *hub) Deliver(p *gateway.Publication) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, p.Topic()+"="+string(p.Data()))
	return h.subs
}

func (h *hub) Subscribers(string) int { return h.subs }

func (h *hub) received() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got)
}

// count returns how often s was delivered.
func (h *hub) count(s string) int {
	n := 0
	for _, g := range h.received() {
		if g == s {
			n++
		}
	}
	return n
}

// eventually waits (up to 15 s) for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type testNode struct {
	*Node
	hub *hub
	ev  *events
}

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// newNode starts a node named name on r with short timings.
func newNode(t *testing.T, r *redisServer, name, onDown string) *testNode {
	t.Helper()
	tn, err := tryNode(t, r, name, onDown)
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

func tryNode(t *testing.T, r *redisServer, name, onDown string) (*testNode, error) {
	ev := &events{}
	c := config.Cluster{OnRedisDown: onDown, Redis: config.ClusterRedis{Addrs: []string{r.Addr()}, KeyPrefix: "pt:"}}
	n, err := New(Options{Config: c, Name: name, Audit: ev, Log: quietLog(),
		PresenceTTL: 600 * time.Millisecond, Renew: 100 * time.Millisecond, CallTimeout: 300 * time.Millisecond}, "")
	if err != nil {
		return nil, err
	}
	if err := n.Start(); err != nil {
		_ = n.Close()
		return nil, err
	}
	h := &hub{subs: 1}
	if err := n.Broker().Start(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return &testNode{Node: n, hub: h, ev: ev}, nil
}

// subscribed waits until n nodes subscribe topic's channel.
func subscribed(t *testing.T, a *testNode, topic string, n int64) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d subscribers of %s", n, topic), func() bool {
		m, err := a.Client().PubSubNumSub(context.Background(), a.Broker().channel(topic)).Result()
		return err == nil && m[a.Broker().channel(topic)] == n
	})
}

// TestFanOut: a publication on A reaches B once, in order, and A's own
// copy from Redis is not delivered again.
func TestFanOut(t *testing.T) {
	r := startRedis(t)
	a := newNode(t, r, "a", config.OnRedisDownDegrade)
	b := newNode(t, r, "b", config.OnRedisDownDegrade)
	a.Broker().TopicActive("t")
	b.Broker().TopicActive("t")
	subscribed(t, a, "t", 2)

	const n = 500
	for i := range n {
		if _, err := a.Broker().Publish(gateway.NewPublication("t", fmt.Appendf(nil, "%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "B received every publication", func() bool { return len(b.hub.received()) == n })
	for i, g := range b.hub.received() {
		if want := fmt.Sprintf("t=%d", i); g != want {
			t.Fatalf("B's delivery %d is %s, want %s (order per publisher)", i, g, want)
		}
	}
	// B's marker follows A's echoes on A's subscription: once A has it,
	// every echo has been seen (and skipped).
	if _, err := b.Broker().Publish(gateway.NewPublication("t", []byte(`"marker"`))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "A received B's marker", func() bool { return a.hub.count(`t="marker"`) == 1 })
	if got := len(a.hub.received()); got != n+1 {
		t.Fatalf("A delivered %d publications, want %d: its own echo was delivered again", got, n+1)
	}
	if s := b.Stats(); s.Received != n || s.Replays != 0 {
		t.Fatalf("B's stats %+v", s)
	}

	// PublishWait reports Redis's count: both nodes are subscribed.
	res, err := a.Broker().PublishWait(context.Background(), "t", []byte(`"w"`))
	if err != nil || res != (Published{Delivered: 1, Nodes: 2}) {
		t.Fatalf("PublishWait = %+v, %v", res, err)
	}

	// Idle on B: B unsubscribes and gets no more.
	b.Broker().TopicIdle("t")
	subscribed(t, a, "t", 1)
	res, _ = a.Broker().PublishWait(context.Background(), "t", []byte(`"x"`))
	if res.Nodes != 1 {
		t.Fatalf("after B's TopicIdle, PublishWait = %+v, want 1 node", res)
	}
}

// TestReplayDropped: a message with a sequence already seen from a
// publisher's boot is dropped and counted.
func TestReplayDropped(t *testing.T) {
	r := startRedis(t)
	b := newNode(t, r, "b", config.OnRedisDownDegrade)
	b.Broker().receive("t", string(appendEnvelope(nil, "a", 7, 2, []byte("1"))))
	b.Broker().receive("t", string(appendEnvelope(nil, "a", 7, 2, []byte("1"))))
	b.Broker().receive("t", string(appendEnvelope(nil, "a", 7, 1, []byte("0"))))
	b.Broker().receive("t", string(appendEnvelope(nil, "a", 8, 1, []byte("2")))) // restarted: new boot
	b.Broker().receive("t", "garbage")
	if got := b.hub.received(); !slices.Equal(got, []string{"t=1", "t=2"}) {
		t.Fatalf("delivered %v", got)
	}
	if s := b.Stats(); s.Replays != 2 || s.Received != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// TestNameTaken: a second running node with the same name does not start.
func TestNameTaken(t *testing.T) {
	r := startRedis(t)
	newNode(t, r, "same", config.OnRedisDownDegrade)
	_, err := tryNode(t, r, "same", config.OnRedisDownDegrade)
	if !errors.Is(err, ErrNameTaken) || !strings.Contains(err.Error(), `another running node is named "same"`) ||
		!strings.Contains(err.Error(), "set a distinct cluster.node") {
		t.Fatalf("second node: %v", err)
	}
}

// TestPresence: B audits A's arrival and A's stop; a node that stops
// renewing is lost.
func TestPresence(t *testing.T) {
	r := startRedis(t)
	b := newNode(t, r, "b", config.OnRedisDownDegrade)
	a := newNode(t, r, "a", config.OnRedisDownDegrade)
	eventually(t, "B audits node_up a", func() bool { return len(b.ev.of(audit.KindNodeUp)) == 1 })
	if up := b.ev.of(audit.KindNodeUp)[0]; up.Detail != "a" || up.Severity != audit.Notice {
		t.Fatalf("node_up %+v", up)
	}
	if s := b.Stats(); !slices.Equal(s.Nodes, []string{"a", "b"}) || s.Node != "b" || s.Degraded {
		t.Fatalf("B's view %+v", s)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B audits node_lost a", func() bool { return len(b.ev.of(audit.KindNodeLost)) == 1 })
	if lost := b.ev.of(audit.KindNodeLost)[0]; lost.Detail != "a: stopped" || lost.Severity != audit.Warning {
		t.Fatalf("node_lost %+v", lost)
	}
	// A silent peer (heartbeats only, never renewed) is lost after the TTL.
	b.heard("hb c 1", time.Now())
	eventually(t, "B audits node_lost c", func() bool { return len(b.ev.of(audit.KindNodeLost)) == 2 })
	if lost := b.ev.of(audit.KindNodeLost)[1]; !strings.HasPrefix(lost.Detail, "c: presence not renewed for") {
		t.Fatalf("node_lost %+v", lost)
	}
}

// TestRedisDown: while Redis is down a node delivers locally, says
// degraded, audits cluster_degraded once and (refuse) refuses new
// connections; when it is back the node resubscribes, runs the recovery
// callbacks, audits cluster_recovered, and fan-out resumes.
func TestRedisDown(t *testing.T) {
	r := startRedis(t)
	a := newNode(t, r, "a", config.OnRedisDownRefuse)
	b := newNode(t, r, "b", config.OnRedisDownDegrade)
	var recovered sync.WaitGroup
	recovered.Add(1)
	var once sync.Once
	a.OnRecovered(func() {
		if !a.Degraded() {
			t.Error("OnRecovered called after the degraded state ended")
		}
		once.Do(recovered.Done)
	})
	b.Broker().TopicActive("t")
	subscribed(t, a, "t", 1)
	if !a.Accepting() {
		t.Fatal("healthy node not accepting")
	}

	r.Stop()
	eventually(t, "A degraded", a.Degraded)
	eventually(t, "B degraded", b.Degraded)
	if a.Accepting() {
		t.Fatal("A accepts new connections while degraded under on_redis_down: refuse")
	}
	if !b.Accepting() {
		t.Fatal("B refuses new connections under on_redis_down: degrade")
	}
	res, err := a.Broker().PublishWait(context.Background(), "t", []byte(`"down"`))
	if err != nil || res != (Published{Delivered: 1, Degraded: true}) {
		t.Fatalf("PublishWait while down = %+v, %v", res, err)
	}
	if a.hub.count(`t="down"`) != 1 {
		t.Fatal("local delivery stopped while Redis is down")
	}
	if s := a.Stats(); !s.Degraded || s.DegradedSince == nil {
		t.Fatalf("stats while down %+v", s)
	}

	r.Start()
	recovered.Wait()
	eventually(t, "A recovered", func() bool { return !a.Degraded() })
	eventually(t, "B recovered", func() bool { return !b.Degraded() })
	for _, n := range []*testNode{a, b} {
		if d := n.ev.of(audit.KindClusterDegraded); len(d) != 1 || d[0].Severity != audit.Critical ||
			!strings.Contains(d[0].Detail, "Redis unreachable") {
			t.Fatalf("%s: cluster_degraded %+v, want once, critical", n.Name(), d)
		}
		if rec := n.ev.of(audit.KindClusterRecovered); len(rec) != 1 || rec[0].DurationMS <= 0 {
			t.Fatalf("%s: cluster_recovered %+v", n.Name(), rec)
		}
	}
	if d := a.ev.of(audit.KindClusterDegraded)[0]; !strings.Contains(d.Detail, "new connections refused") {
		t.Fatalf("A's cluster_degraded does not say connections are refused: %q", d.Detail)
	}
	// B's channel is subscribed again on the restarted Redis.
	subscribed(t, a, "t", 1)
	res, err = a.Broker().PublishWait(context.Background(), "t", []byte(`"up"`))
	if err != nil || res != (Published{Delivered: 1, Nodes: 1}) {
		t.Fatalf("PublishWait after recovery = %+v, %v", res, err)
	}
	eventually(t, "B receives after recovery", func() bool { return b.hub.count(`t="up"`) == 1 })
}
