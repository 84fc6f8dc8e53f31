package gateway

import (
	"errors"
	"sync/atomic"
)

// Publishing goes through a Broker. Every publisher (the admin API's
// POST /v1/publish, feeds, and clients publishing over the native protocol
// or WAMP) hands its Publication to the Broker; the Broker hands it to the
// Hub of every node that has subscribers of its topic; a node's Hub queues
// it on each of its event loops, which encode it once per protocol and
// write it to their subscribers. The loops know nothing of brokers.
//
// InProcess, the default, is a single node: it hands every publication
// straight to the local Hub. A cluster broker would send each publication
// to its peers (one message per publication per topic), deliver what it
// receives from them to the local Hub, and listen for a topic only while
// this node has subscribers of it: TopicActive and TopicIdle tell it when
// that starts and stops.

// Broker carries publications from publishers to the hubs of the nodes
// with subscribers. Implementations must be safe for concurrent use.
type Broker interface {
	// Start connects the broker to this node's hub. Start (the gateway's)
	// calls it once, before any other method.
	Start(local Hub) error
	// Publish sends p to every subscriber of p.Topic(). It returns once p
	// is queued for delivery, never after the writes, with the number of
	// this node's subscriptions it was queued for (Hub.Deliver). It is
	// called from event loops (client publications), so it must never
	// block on the network or on a loop: a broker that talks to peers
	// queues p for its own goroutine. p is never modified after Publish.
	Publish(p *Publication) (int, error)
	// TopicActive is called when topic gets its first subscriber on this
	// node, TopicIdle when its last one leaves. The calls of one server
	// are made in order under one lock, from event loops: they must only
	// signal (record the change for the broker's own goroutine), never
	// block.
	TopicActive(topic string)
	TopicIdle(topic string)
}

// Hub is this node's delivery side, which a Broker delivers to. The server
// implements it; a Broker gets it from Start.
type Hub interface {
	// Deliver queues p on every event loop of this node and returns at
	// once, with the number of this node's subscriptions to p.Topic() at
	// that moment: the subscriptions the publication was queued for.
	// Each loop writes it to its subscribers after it takes it, so a
	// subscriber that leaves meanwhile is counted but not written to, and
	// one whose queue drops it (a slow consumer under drop_oldest or
	// keep_latest) is counted too; Stats.Delivered counts the frames the
	// loops actually queued on sockets. A WAMP exclude/eligible list is
	// not applied to the count. After Shutdown it queues nothing and
	// returns 0.
	Deliver(p *Publication) int
	// Subscribers returns the number of this node's subscriptions to
	// topic (the count Deliver would return).
	Subscribers(topic string) int
}

// InProcess is the single-node Broker: Publish delivers to the local hub
// directly. The zero value is ready to Start.
type InProcess struct {
	local atomic.Pointer[Hub]
}

// Start implements Broker.
func (b *InProcess) Start(local Hub) error {
	if local == nil {
		return errors.New("broker: nil hub")
	}
	b.local.Store(&local)
	return nil
}

// errNotStarted is Publish on a broker that has no hub yet.
var errNotStarted = errors.New("broker: not started")

// Publish implements Broker: it returns Hub.Deliver's count.
func (b *InProcess) Publish(p *Publication) (int, error) {
	h := b.local.Load()
	if h == nil {
		return 0, errNotStarted
	}
	return (*h).Deliver(p), nil
}

// TopicActive implements Broker; one node has nothing to tell.
func (b *InProcess) TopicActive(string) {}

// TopicIdle implements Broker; one node has nothing to tell.
func (b *InProcess) TopicIdle(string) {}

// localTopic is a topic with subscribers on this node, shared by the loops
// that have some: the count lets Deliver answer without asking the loops.
type localTopic struct {
	subs  atomic.Int64 // subscriptions on every loop
	loops int          // loops with subscribers; guarded by Server.topicMu
	feed  bool         // the topic's rule polls a feed
}

// topicUp registers a loop's first subscriber of topic and returns the
// topic's node-wide entry; the first loop makes the topic active.
func (s *Server) topicUp(topic string, feed bool) *localTopic {
	s.topicMu.Lock()
	defer s.topicMu.Unlock() // the hooks are ordered: all are called under topicMu
	lt := s.localTopics[topic]
	if lt == nil {
		lt = &localTopic{feed: feed}
		s.localTopics[topic] = lt
	}
	lt.loops++
	if lt.loops == 1 {
		s.broker.TopicActive(topic)
		if lt.feed && s.opts.Feeds != nil {
			s.opts.Feeds.Active(topic)
		}
	}
	return lt
}

// topicDown unregisters a loop whose last subscriber of topic left; the
// last loop makes the topic idle.
func (s *Server) topicDown(topic string, lt *localTopic) {
	s.topicMu.Lock()
	defer s.topicMu.Unlock()
	lt.loops--
	if lt.loops > 0 {
		return
	}
	delete(s.localTopics, topic)
	s.broker.TopicIdle(topic)
	if lt.feed && s.opts.Feeds != nil {
		s.opts.Feeds.Idle(topic)
	}
}

// localHub is the Server's Hub.
type localHub struct{ s *Server }

// Deliver implements Hub.
func (h localHub) Deliver(p *Publication) int {
	s := h.s
	if s.closing.Load() {
		return 0
	}
	n := h.Subscribers(p.topic)
	s.published.Add(1)
	for _, ls := range s.loops {
		ls.loop.Post(func() { s.delivered.Add(uint64(ls.deliver(p))) })
	}
	return n
}

// Subscribers implements Hub.
func (h localHub) Subscribers(topic string) int {
	s := h.s
	s.topicMu.Lock()
	lt := s.localTopics[topic]
	s.topicMu.Unlock()
	if lt == nil {
		return 0
	}
	return int(lt.subs.Load())
}
