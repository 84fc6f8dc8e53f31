package gateway

import (
	"sync"
	"sync/atomic"

	"github.com/gobwas/ws"

	"github.com/portcullis-gw/portcullis/gateway/frame"
	"github.com/portcullis-gw/portcullis/gateway/native"
	"github.com/portcullis-gw/portcullis/gateway/wamp"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// The hub is sharded per loop: each loop keeps its own topic → subscribers
// map (hub), touched only by its goroutine, so delivery takes no lock. A
// publication is posted to every loop and encoded once per protocol, lazily,
// by the first loop that needs that protocol's frame.

// hub is one loop's topics and their subscribers. Loop goroutine only,
// except topicCount.
type hub struct {
	topics     map[string]*topicSubs
	topicCount atomic.Int64 // len(topics), for Stats from any goroutine
}

// topicSubs is one topic's subscribers on one loop.
type topicSubs struct {
	name   string
	conns  []*conn
	policy topics.Policy // slow-consumer policy of the topic's rule
	prefix []byte        // how this topic's native event payloads begin
	local  *localTopic   // the topic's node-wide entry: subscription count, feed
}

// subscriptions are a connection's topics on its loop's hub: most
// connections have one or two, so a slice searched in order beats a map.
type subscriptions []subscription

// subscription is a connection's side of a topic membership; idx is its
// position in topic.conns, kept current on swap-removal.
type subscription struct {
	topic *topicSubs
	idx   int32
	// v1 is the exact string a WAMP v1 client subscribed with when it is
	// not the topic name (a CURIE, or a seed JSON topic that carries a
	// token): its EVENTs must echo it. Never log it. A pointer keeps the
	// common subscription at 24 bytes.
	v1 *string
}

// v1String is the string a WAMP v1 client subscribed with when it differs
// from the topic name, else "".
func (s subscription) v1String() string {
	if s.v1 == nil {
		return ""
	}
	return *s.v1
}

// Publication is one message to one topic on its way from a publisher,
// through the Broker, to the subscribers: its topic, its data (valid JSON)
// and, once a loop needs them, its frames, encoded once per protocol and
// shared by every subscriber. It is never modified once published.
// Server.Publish and the client protocols make them.
type Publication struct {
	topic  string
	data   []byte
	id     wamp.ID    // WAMP v2 publication id
	filter *pubFilter // a WAMP publisher's exclude/eligible lists (this node's connections); nil: every subscriber
	once   [protoCount]sync.Once
	enc    [protoCount][]byte
}

// newPublication returns a publication of data (valid JSON, not modified
// afterwards) to topic, for every subscriber.
func newPublication(topic string, data []byte) *Publication {
	return &Publication{topic: topic, data: data, id: wamp.NewPublicationID()}
}

// NewPublication returns a publication of data (valid JSON, not modified
// afterwards) to topic, for every subscriber: what a cluster Broker makes of
// a publication it receives from another node.
func NewPublication(topic string, data []byte) *Publication { return newPublication(topic, data) }

// Topic is the topic p is published to.
func (p *Publication) Topic() string { return p.topic }

// Data is p's data, valid JSON; callers must not modify it.
func (p *Publication) Data() []byte { return p.data }

// frame returns the encoded frame for p in protocol pr (safe for
// concurrent use; the bytes are shared by every subscriber and never
// modified).
func (p *Publication) frame(pr proto) []byte {
	p.once[pr].Do(func() { p.enc[pr] = codecs[pr].encode(p) })
	return p.enc[pr]
}

// textFrame frames payload as one unmasked text frame in a fresh buffer.
func textFrame(payload []byte) []byte {
	return frame.AppendFrame(make([]byte, 0, len(payload)+10), ws.OpText, payload)
}

// of returns the subscription of ts (the zero subscription if none).
func (subs subscriptions) of(ts *topicSubs) subscription {
	for i := range subs {
		if subs[i].topic == ts {
			return subs[i]
		}
	}
	return subscription{}
}

// find returns the index of topic, or -1.
func (subs subscriptions) find(topic string) int {
	for i := range subs {
		if subs[i].topic.name == topic {
			return i
		}
	}
	return -1
}

// subscribe adds c to topic on this hub (ls is its loop).
func (h *hub) subscribe(ls *loopState, c *conn, topic string) {
	ts := h.topics[topic]
	if ts == nil {
		set := ls.rules().topics
		rule := set.Match(topic)
		ts = &topicSubs{name: topic, policy: set.SlowConsumer(topic),
			prefix: native.AppendString(append([]byte(nil), `{"op":"event","topic":`...), topic),
			local:  ls.srv.topicUp(topic, rule != nil && rule.Feed != nil)}
		h.topics[topic] = ts
		h.topicCount.Add(1)
	}
	ts.local.subs.Add(1)
	c.subs = append(c.subs, subscription{topic: ts, idx: int32(len(ts.conns))})
	ts.conns = append(ts.conns, c)
	ls.srv.subscriptions.Add(1)
}

// unsubscribe removes c.subs[i] from its topic, swap-removing on both sides.
func (h *hub) unsubscribe(ls *loopState, c *conn, i int) {
	sub := c.subs[i]
	ts := sub.topic
	last := len(ts.conns) - 1
	if int(sub.idx) != last {
		moved := ts.conns[last]
		ts.conns[sub.idx] = moved
		for j := range moved.subs {
			if moved.subs[j].topic == ts {
				moved.subs[j].idx = sub.idx
				break
			}
		}
	}
	ts.conns[last] = nil
	ts.conns = ts.conns[:last]
	ts.local.subs.Add(-1)
	if len(ts.conns) == 0 {
		delete(h.topics, ts.name)
		h.topicCount.Add(-1)
		ls.srv.topicDown(ts.name, ts.local)
	}
	lastSub := len(c.subs) - 1
	c.subs[i] = c.subs[lastSub]
	c.subs[lastSub] = subscription{}
	c.subs = c.subs[:lastSub]
	if len(c.subs) == 0 {
		c.subs = nil
	}
	ls.srv.subscriptions.Add(-1)
}

// Feeds starts and stops the pollers of `feed:` topics (gateway/feed):
// Active when a topic gets its first subscriber on this node, Idle when its
// last one leaves. Both are called under a server lock, in order (with the
// Broker's TopicActive and TopicIdle), from event loops: they must only
// signal, never block.
type Feeds interface {
	Active(topic string)
	Idle(topic string)
}
