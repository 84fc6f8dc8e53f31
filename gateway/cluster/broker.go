package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-gw/portcullis/gateway"
)

// Broker is the cluster's gateway.Broker. A publication is delivered to
// this node's hub at once, then queued for the broker's sender goroutine,
// which sends it to Redis as one PUBLISH to the channel
// `<prefix>topic:<topic>`, batched into one pipeline per round trip. Each
// node SUBSCRIBEs a topic's channel while it has subscribers of the topic
// (TopicActive, TopicIdle) and delivers what other nodes published there;
// its own publications come back to it too and are skipped, since they were
// delivered locally already.
//
// Each message carries the publishing node's name, its boot id and a
// per-node sequence number. The sender sends in sequence order and waits
// for one pipeline's replies before the next, and Redis delivers one
// connection's publications in order, so a receiver sees each publisher's
// messages in order; one that arrives with a sequence not above the last
// one seen from that publisher's boot is dropped (counted in Replays).
type Broker struct {
	n   *Node
	hub atomic.Pointer[gateway.Hub]
	ps  *redis.PubSub

	qmu   sync.Mutex
	queue []outgoing // guarded by qmu
	qsig  chan struct{}
	spare []outgoing // the sender's

	smu  sync.Mutex
	want map[string]struct{} // topics with local subscribers; guarded by smu
	ssig chan struct{}
	have map[string]struct{} // channels subscribed; the subscriber goroutine's

	seq      uint64            // the sender's
	lastSeen map[string]seenAt // per publishing node; the receiver's

	stop chan struct{}
	wg   sync.WaitGroup

	sent     atomic.Uint64
	received atomic.Uint64
	dropped  atomic.Uint64
	replays  atomic.Uint64
	channels atomic.Int64
}

// seenAt is the last sequence received from one boot of a node.
type seenAt struct {
	boot uint64
	seq  uint64
}

// outgoing is a publication waiting for the sender; reply, when set, gets
// the outcome (PublishWait).
type outgoing struct {
	p     *gateway.Publication
	reply chan<- sendResult
}

type sendResult struct {
	nodes int
	err   error
}

// maxQueued caps the publications waiting for the sender; beyond it, new
// ones are delivered locally only (counted in Dropped).
const maxQueued = 1 << 16

// maxBatch is the most publications sent in one pipeline.
const maxBatch = 512

// envelopeVersion is the first byte of every message on a topic channel.
const envelopeVersion = 1

func newBroker(n *Node) *Broker {
	return &Broker{n: n, qsig: make(chan struct{}, 1), want: map[string]struct{}{}, ssig: make(chan struct{}, 1),
		have: map[string]struct{}{}, lastSeen: map[string]seenAt{}, stop: make(chan struct{})}
}

// start subscribes the presence channel and starts the sender, the
// subscriber and the receiver (Node.Start).
func (b *Broker) start(ctx context.Context) error {
	b.ps = b.n.client.Subscribe(ctx, b.n.nodesCh)
	if _, err := b.ps.ReceiveTimeout(ctx, b.n.o.CallTimeout); err != nil {
		_ = b.ps.Close()
		return fmt.Errorf("cluster: subscribe %s: %w", b.n.nodesCh, err)
	}
	msgs := b.ps.Channel(redis.WithChannelSize(4096))
	b.wg.Add(3)
	go b.sender()
	go b.subscriber()
	go b.receiver(msgs)
	return nil
}

// close stops the goroutines and the subscription.
func (b *Broker) close() {
	close(b.stop)
	_ = b.ps.Close() // ends the receiver's channel
	b.wg.Wait()
}

// Start implements gateway.Broker: it connects the broker to this node's
// hub. The node's goroutines run already (Node.Start).
func (b *Broker) Start(local gateway.Hub) error {
	if local == nil {
		return errors.New("cluster broker: nil hub")
	}
	b.hub.Store(&local)
	return nil
}

// errNotStarted is a publication before the gateway started the broker.
var errNotStarted = errors.New("cluster broker: not started")

// Publish implements gateway.Broker: p is delivered to this node's hub at
// once and queued for the other nodes; it returns the local count. It
// never blocks (it is called from event loops).
func (b *Broker) Publish(p *gateway.Publication) (int, error) {
	h := b.hub.Load()
	if h == nil {
		return 0, errNotStarted
	}
	n := (*h).Deliver(p)
	b.enqueue(outgoing{p: p})
	return n, nil
}

// Published is the outcome of PublishWait.
type Published struct {
	// Delivered is the number of this node's subscriptions the
	// publication was queued for (gateway.Hub.Deliver).
	Delivered int `json:"delivered"`
	// Nodes is what Redis answered the PUBLISH: the number of nodes
	// subscribed to the topic's channel when Redis took it, this node
	// included when it has subscribers of the topic (it skips its own
	// copy). On a Redis Cluster, only the nodes connected to the shard
	// that took it are counted. 0 when degraded.
	Nodes int `json:"nodes"`
	// Degraded: Redis is unreachable, the publication reached this
	// node's subscribers only.
	Degraded bool `json:"degraded"`
}

// PublishWait publishes data to topic like Publish, then waits (within
// ctx and the call timeout) for Redis's answer: what POST /v1/publish
// reports. A publication Redis did not take is still delivered locally,
// and the answer says degraded.
func (b *Broker) PublishWait(ctx context.Context, topic string, data []byte) (Published, error) {
	h := b.hub.Load()
	if h == nil {
		return Published{}, errNotStarted
	}
	p := gateway.NewPublication(topic, data)
	out := Published{Delivered: (*h).Deliver(p)}
	reply := make(chan sendResult, 1)
	if !b.enqueue(outgoing{p: p, reply: reply}) {
		out.Degraded = true
		return out, nil
	}
	t := time.NewTimer(2 * b.n.o.CallTimeout)
	defer t.Stop()
	select {
	case r := <-reply:
		out.Nodes, out.Degraded = r.nodes, r.err != nil
	case <-t.C:
		out.Degraded = true
	case <-ctx.Done():
		out.Degraded = true
	}
	return out, nil
}

// enqueue queues o for the sender; false when it was not: the node is
// degraded, or the queue is full.
func (b *Broker) enqueue(o outgoing) bool {
	if b.n.degraded.Load() {
		b.dropped.Add(1)
		return false
	}
	b.qmu.Lock()
	if len(b.queue) >= maxQueued {
		b.qmu.Unlock()
		b.dropped.Add(1)
		return false
	}
	b.queue = append(b.queue, o)
	b.qmu.Unlock()
	select {
	case b.qsig <- struct{}{}:
	default:
	}
	return true
}

// TopicActive implements gateway.Broker: it records that topic has local
// subscribers; the subscriber goroutine SUBSCRIBEs its channel.
func (b *Broker) TopicActive(topic string) {
	b.smu.Lock()
	b.want[topic] = struct{}{}
	b.smu.Unlock()
	b.signalSubscriber()
}

// TopicIdle implements gateway.Broker: it records that topic has no more
// local subscribers; the subscriber goroutine UNSUBSCRIBEs its channel.
func (b *Broker) TopicIdle(topic string) {
	b.smu.Lock()
	delete(b.want, topic)
	b.smu.Unlock()
	b.signalSubscriber()
}

func (b *Broker) signalSubscriber() {
	select {
	case b.ssig <- struct{}{}:
	default:
	}
}

// channel is the Redis channel of topic.
func (b *Broker) channel(topic string) string { return b.n.prefix + "topic:" + topic }

// sender sends the queued publications, one pipeline at a time.
func (b *Broker) sender() {
	defer b.wg.Done()
	var arena []byte
	for {
		select {
		case <-b.stop:
			return
		case <-b.qsig:
		}
		for {
			b.qmu.Lock()
			batch := b.queue
			b.queue = b.spare[:0]
			b.qmu.Unlock()
			if len(batch) == 0 {
				break
			}
			for i := 0; i < len(batch); i += maxBatch {
				arena = b.send(batch[i:min(i+maxBatch, len(batch))], arena[:0])
			}
			clear(batch)
			b.spare = batch
		}
	}
}

// send publishes batch in one pipeline; arena is reused for the
// envelopes and returned.
func (b *Broker) send(batch []outgoing, arena []byte) []byte {
	if b.n.degraded.Load() {
		b.dropped.Add(uint64(len(batch)))
		for _, o := range batch {
			reply(o, sendResult{err: errDegraded})
		}
		return arena
	}
	// Every envelope goes into arena first, so that the slices handed to
	// the pipeline are not moved by a later append.
	offs := make([]int, len(batch)+1)
	for i, o := range batch {
		b.seq++
		arena = appendEnvelope(arena, b.n.name, b.n.bootNum(), b.seq, o.p.Data())
		offs[i+1] = len(arena)
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.n.o.CallTimeout)
	defer cancel()
	pipe := b.n.client.Pipeline()
	cmds := make([]*redis.IntCmd, len(batch))
	for i, o := range batch {
		cmds[i] = pipe.Publish(ctx, b.channel(o.p.Topic()), arena[offs[i]:offs[i+1]])
	}
	_, err := pipe.Exec(ctx)
	if err != nil {
		b.dropped.Add(uint64(len(batch)))
		b.n.fail(fmt.Errorf("publish: %w", err))
	} else {
		b.sent.Add(uint64(len(batch)))
	}
	for i, o := range batch {
		reply(o, sendResult{nodes: int(cmds[i].Val()), err: cmds[i].Err()})
	}
	return arena
}

var errDegraded = errors.New("cluster: degraded")

func reply(o outgoing, r sendResult) {
	if o.reply != nil {
		o.reply <- r // buffered, one per publication
	}
}

// appendEnvelope appends a topic channel's message: version, node name
// (length-prefixed), boot, sequence, data.
func appendEnvelope(dst []byte, node string, boot, seq uint64, data []byte) []byte {
	dst = append(dst, envelopeVersion, byte(len(node)))
	dst = append(dst, node...)
	dst = binary.BigEndian.AppendUint64(dst, boot)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	return append(dst, data...)
}

// envelope is a decoded topic channel message.
type envelope struct {
	node      string
	boot, seq uint64
	data      string
}

var errEnvelope = errors.New("not a Portcullis cluster message")

func parseEnvelope(m string) (envelope, error) {
	if len(m) < 2 || m[0] != envelopeVersion {
		return envelope{}, errEnvelope
	}
	nl := int(m[1])
	if len(m) < 2+nl+16 {
		return envelope{}, errEnvelope
	}
	e := envelope{node: m[2 : 2+nl]}
	rest := m[2+nl:]
	e.boot = binary.BigEndian.Uint64([]byte(rest[:8]))
	e.seq = binary.BigEndian.Uint64([]byte(rest[8:16]))
	e.data = rest[16:]
	if e.data == "" {
		return envelope{}, errEnvelope
	}
	return e, nil
}

// subscriber keeps the subscribed channels equal to the active topics.
func (b *Broker) subscriber() {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			return
		case <-b.ssig:
		}
		if err := b.sync(); err != nil {
			b.n.fail(fmt.Errorf("subscribe: %w", err))
		}
	}
}

// sync subscribes the channels of the topics that became active and
// unsubscribes those of the topics that became idle. go-redis remembers
// the channels even when a call fails and subscribes them again on every
// reconnection.
func (b *Broker) sync() error {
	var add, drop []string
	b.smu.Lock()
	for t := range b.want {
		if _, ok := b.have[t]; !ok {
			add = append(add, b.channel(t))
			b.have[t] = struct{}{}
		}
	}
	for t := range b.have {
		if _, ok := b.want[t]; !ok {
			drop = append(drop, b.channel(t))
			delete(b.have, t)
		}
	}
	b.channels.Store(int64(len(b.have)))
	b.smu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), b.n.o.CallTimeout)
	defer cancel()
	var errs []error
	if len(add) > 0 {
		errs = append(errs, b.ps.Subscribe(ctx, add...))
	}
	if len(drop) > 0 {
		errs = append(errs, b.ps.Unsubscribe(ctx, drop...))
	}
	return errors.Join(errs...)
}

// resubscribe subscribes every active topic's channel again (Redis may
// have restarted without them), then brings the set up to date.
func (b *Broker) resubscribe() error {
	b.smu.Lock()
	all := make([]string, 0, len(b.have)+1)
	all = append(all, b.n.nodesCh)
	for t := range b.have {
		all = append(all, b.channel(t))
	}
	b.smu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), b.n.o.CallTimeout)
	defer cancel()
	if err := b.ps.Subscribe(ctx, all...); err != nil {
		return fmt.Errorf("resubscribe %d channels: %w", len(all), err)
	}
	return b.sync()
}

// receiver handles every message of the subscribed channels.
func (b *Broker) receiver(msgs <-chan *redis.Message) {
	defer b.wg.Done()
	topicPrefix := b.n.prefix + "topic:"
	for m := range msgs {
		switch {
		case m.Channel == b.n.nodesCh:
			b.n.heard(m.Payload, time.Now())
		case strings.HasPrefix(m.Channel, topicPrefix):
			b.receive(m.Channel[len(topicPrefix):], m.Payload)
		}
	}
}

// receive delivers a message of another node to this node's hub.
func (b *Broker) receive(topic, payload string) {
	e, err := parseEnvelope(payload)
	if err != nil {
		b.n.o.Log.WithField("topic", topic).Warn("cluster: a message on a topic channel is not a Portcullis cluster message; dropped")
		return
	}
	if e.node == b.n.name {
		return // ours: delivered locally when published
	}
	last, ok := b.lastSeen[e.node]
	if ok && last.boot == e.boot && e.seq <= last.seq {
		b.replays.Add(1)
		return
	}
	if !ok {
		e.node = strings.Clone(e.node) // the map keeps it; the payload goes
	}
	b.lastSeen[e.node] = seenAt{boot: e.boot, seq: e.seq}
	h := b.hub.Load()
	if h == nil {
		return
	}
	(*h).Deliver(gateway.NewPublication(topic, []byte(e.data)))
	b.received.Add(1)
}

// BrokerStats are the broker's counters.
type BrokerStats struct {
	Channels int64  `json:"channels"` // topic channels subscribed
	Sent     uint64 `json:"sent"`     // publications sent to Redis
	Received uint64 `json:"received"` // publications of other nodes delivered here
	// Dropped counts publications delivered locally only: sent while
	// degraded, refused by Redis, or beyond the sender's queue.
	Dropped uint64 `json:"dropped"`
	Replays uint64 `json:"replays"` // messages out of a publisher's order, dropped
}

func (b *Broker) stats() BrokerStats {
	return BrokerStats{Channels: b.channels.Load(), Sent: b.sent.Load(), Received: b.received.Load(),
		Dropped: b.dropped.Load(), Replays: b.replays.Load()}
}
