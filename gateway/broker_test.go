package gateway

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/portcullis-gw/portcullis/policy/origin"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// recBroker is an InProcess broker that records what passes through it;
// with fail set, Publish refuses.
type recBroker struct {
	InProcess
	fail error

	mu        sync.Mutex
	published []string // topics, in order
	hooks     []string // "active news", "idle news", in order
}

func (b *recBroker) Publish(p *Publication) (int, error) {
	b.mu.Lock()
	b.published = append(b.published, p.Topic()+" "+string(p.Data()))
	b.mu.Unlock()
	if b.fail != nil {
		return 0, b.fail
	}
	return b.InProcess.Publish(p)
}

func (b *recBroker) TopicActive(topic string) { b.hook("active " + topic) }
func (b *recBroker) TopicIdle(topic string)   { b.hook("idle " + topic) }

func (b *recBroker) hook(s string) {
	b.mu.Lock()
	b.hooks = append(b.hooks, s)
	b.mu.Unlock()
}

func (b *recBroker) seen() (published, hooks []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.published...), append([]string(nil), b.hooks...)
}

// startBrokerServer starts a two-loop server on b where clients may
// publish to "chat" with a token.
func startBrokerServer(t testing.TB, b Broker) (*Server, *tokens.Store) {
	t.Helper()
	chk, _ := origin.NewChecker(nil, true)
	set, err := topics.Compile([]topics.Rule{{Match: "chat", Publish: topics.Token}}, topics.Token)
	if err != nil {
		t.Fatal(err)
	}
	store := tokens.NewStore(tokens.Options{})
	val, err := schema.New(schema.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(Options{Listen: "127.0.0.1:0", Origins: chk, Topics: set, Tokens: store, Schema: val,
		Version: "test", Loops: 2, Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(t.Context()) })
	return s, store
}

// readEvent reads the next server text frame of c within 5 s.
func readEvent(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := wsutil.ReadServerText(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

// Publish returns once the publication is queued on every loop, with the
// subscriptions it was queued for, while the loops are still busy: the
// writes come after.
func TestPublishReturnsBeforeTheWrites(t *testing.T) {
	s, store := startBrokerServer(t, nil)
	var subs []net.Conn
	for _, u := range []string{"a", "b", "c"} {
		c := dialSubscribed(t, s, store, u, "news")
		defer c.Close()
		subs = append(subs, c)
	}
	// Hold every loop: until released, no loop can take a task.
	release := make(chan struct{})
	var held sync.WaitGroup
	for _, ls := range s.loops {
		held.Add(1)
		ls.loop.Post(func() { held.Done(); <-release })
	}
	held.Wait()
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()

	type answer struct {
		n   int
		err error
	}
	got := make(chan answer, 1)
	go func() {
		n, err := s.Publish("news", []byte(`{"x":1}`))
		got <- answer{n, err}
	}()
	select {
	case a := <-got:
		if a.err != nil || a.n != 3 {
			t.Fatalf("Publish = %d, %v; want 3 subscriptions", a.n, a.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Publish waited for the loops")
	}
	if d := s.Stats().Delivered; d != 0 {
		t.Fatalf("delivered %d while every loop was held", d)
	}
	_ = subs[0].SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if b, err := wsutil.ReadServerText(subs[0]); err == nil {
		t.Fatalf("a subscriber got %q while every loop was held", b)
	}

	close(release)
	released = true
	for i, c := range subs {
		if ev := readEvent(t, c); !strings.Contains(ev, `"op":"event"`) || !strings.Contains(ev, `{"x":1}`) {
			t.Fatalf("subscriber %d got %q", i, ev)
		}
	}
	waitFor(t, func() bool { return s.Stats().Delivered == 3 })
	if n, err := s.Publish("nobody", []byte(`1`)); err != nil || n != 0 {
		t.Fatalf("Publish to a topic without subscribers = %d, %v", n, err)
	}
}

// Every publication, from the API or a client, goes through the broker,
// and the broker hears when a topic gets its first subscriber on this node
// and loses its last, once each, whatever loops the subscribers are on.
func TestBrokerCarriesPublicationsAndTopicHooks(t *testing.T) {
	b := &recBroker{}
	s, store := startBrokerServer(t, b)
	c1 := dialSubscribed(t, s, store, "u1", "chat")
	c2 := dialSubscribed(t, s, store, "u2", "chat")
	c3 := dialSubscribed(t, s, store, "u3", "chat")

	if n, err := s.Publish("chat", []byte(`"api"`)); err != nil || n != 3 {
		t.Fatalf("Publish = %d, %v; want 3", n, err)
	}
	for _, c := range []net.Conn{c1, c2, c3} {
		if ev := readEvent(t, c); !strings.Contains(ev, `"api"`) {
			t.Fatalf("got %q", ev)
		}
	}
	// A client's publication takes the same way.
	if err := wsutil.WriteClientText(c1, []byte(`{"op":"publish","id":2,"topic":"chat","data":"client"}`)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []net.Conn{c2, c3} {
		if ev := readEvent(t, c); !strings.Contains(ev, `"client"`) {
			t.Fatalf("got %q", ev)
		}
	}
	pub, hooks := b.seen()
	if strings.Join(pub, "|") != `chat "api"|chat "client"` {
		t.Fatalf("broker carried %q", pub)
	}
	if strings.Join(hooks, "|") != "active chat" {
		t.Fatalf("hooks %q with subscribers, want one active", hooks)
	}

	c1.Close()
	c2.Close()
	waitFor(t, func() bool { return s.Stats().Subscriptions == 1 })
	if _, hooks := b.seen(); len(hooks) != 1 {
		t.Fatalf("hooks %q with a subscriber left", hooks)
	}
	if n := (localHub{s}).Subscribers("chat"); n != 1 {
		t.Fatalf("Subscribers = %d, want 1", n)
	}
	c3.Close()
	waitFor(t, func() bool {
		_, hooks := b.seen()
		return len(hooks) == 2
	})
	if _, hooks := b.seen(); strings.Join(hooks, "|") != "active chat|idle chat" {
		t.Fatalf("hooks %q", hooks)
	}
	if n, err := s.Publish("chat", []byte(`1`)); err != nil || n != 0 {
		t.Fatalf("Publish after the last subscriber left = %d, %v", n, err)
	}

	// Back again: active again.
	c4 := dialSubscribed(t, s, store, "u4", "chat")
	defer c4.Close()
	if _, hooks := b.seen(); strings.Join(hooks, "|") != "active chat|idle chat|active chat" {
		t.Fatalf("hooks %q", hooks)
	}
}

// A broker that cannot publish makes Publish fail, with the topic named;
// nothing reaches the subscribers.
func TestBrokerFailureIsReported(t *testing.T) {
	cause := errors.New("peer unreachable")
	s, store := startBrokerServer(t, &recBroker{fail: cause})
	c := dialSubscribed(t, s, store, "u", "news")
	defer c.Close()
	n, err := s.Publish("news", []byte(`1`))
	if !errors.Is(err, cause) || !strings.Contains(err.Error(), "news") || n != 0 {
		t.Fatalf("Publish = %d, %v", n, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if b, err := wsutil.ReadServerText(c); err == nil {
		t.Fatalf("subscriber got %q", b)
	}
}

// An InProcess broker publishes nothing before it is started.
func TestInProcessNotStarted(t *testing.T) {
	var b InProcess
	if _, err := b.Publish(newPublication("t", []byte(`1`))); !errors.Is(err, errNotStarted) {
		t.Fatalf("err %v", err)
	}
	if err := b.Start(nil); err == nil {
		t.Fatal("Start(nil) succeeded")
	}
}

func waitFor(t testing.TB, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
