// Package redisbans shares the bans of a cluster's nodes through Redis.
// Strikes stay per node; a ban any node creates (by strikes or by an
// operator) or lifts reaches every node within a second, and the current
// set is loaded by a node that starts or gets Redis back.
//
// In Redis (P is cluster.redis.key_prefix, C a banned prefix such as
// 192.0.2.7/32):
//
//   - P + "ban:" + C holds the ban (JSON), expiring with it;
//   - P + "bans" is a sorted set of the banned prefixes by end time, so
//     that a node can list them without scanning keys (which a Redis
//     Cluster spreads over its shards);
//   - P + "unban:" + C is the tombstone of a lifted ban, expiring when the
//     ban would have ended, so that a node that was away while it was
//     lifted lifts its saved copy instead of announcing it again;
//   - channel P + "bans" carries each change as it happens.
//
// Loading merges both ways: the bans in Redis are applied here, and the
// bans this node holds that Redis lacks (a Redis that restarted empty)
// are written back, unless a tombstone says they were lifted. Every
// Redis call is bounded by Options.Timeout and runs on the Sync's own
// goroutines, never on an event loop; while Redis is down the node
// enforces the bans it has, and loads again when Redis is back.
//
// It imports nothing from gateway, audit or alerting.
package redisbans

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/bans"
)

// Defaults of Options.
const (
	DefaultTimeout   = time.Second
	DefaultReconcile = 30 * time.Second
	// queueLen is how many local changes wait for Redis at most.
	queueLen = 4096
)

// Options configure a Sync.
type Options struct {
	Client  redis.UniversalClient // required
	Prefix  string                // key and channel prefix, e.g. "portcullis:"
	Node    string                // this node's name; required
	Manager *bans.Manager         // this node's bans; required
	Timeout time.Duration         // bound of each Redis call (1 s)
	// Reconcile is how often the node loads the whole set again, which
	// repairs what a lost message or a dropped change left out (30 s).
	Reconcile time.Duration
	// Applied is called, off the loops, with each ban another node
	// created (removed false) or lifted (removed true) once it is
	// applied here; nil: nothing. The caller audits it.
	Applied func(b bans.Ban, from string, removed bool)
	// Failed is called with each Redis error (a write, a load, the
	// subscription); nil: nothing. The caller logs it.
	Failed func(err error)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Sync runs the sharing of bans: New, Start, Close.
type Sync struct {
	o       Options
	changes <-chan bans.Change
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	loaded  chan struct{} // closed after the first complete load
	once    sync.Once
}

// New returns a Sync for o; it calls o.Manager.Replicate, so build it
// before the Manager takes strikes.
func New(o Options) (*Sync, error) {
	switch {
	case o.Client == nil:
		return nil, errors.New("redisbans: no Redis client")
	case o.Node == "":
		return nil, errors.New("redisbans: no node name")
	case o.Manager == nil:
		return nil, errors.New("redisbans: no ban manager")
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Reconcile <= 0 {
		o.Reconcile = DefaultReconcile
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Sync{o: o, changes: o.Manager.Replicate(queueLen), loaded: make(chan struct{})}, nil
}

// Start runs the subscription to the other nodes' notices and the
// goroutine that writes this node's changes, applies the notices and
// loads, until Close. It does not wait for Redis.
func (s *Sync) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	msgs := make(chan any, 64)
	s.wg.Add(2)
	go s.receive(ctx, msgs)
	go s.run(ctx, msgs)
}

// Loaded is closed once the set in Redis has been loaded the first time.
func (s *Sync) Loaded() <-chan struct{} { return s.loaded }

// Close stops the goroutines; changes not yet written stay in this
// node's state file and are written back by the next load of any node
// that holds them.
func (s *Sync) Close() {
	if s.cancel != nil {
		s.cancel()
		s.wg.Wait()
	}
}

// record is a ban as Redis keeps and channels carry it.
type record struct {
	Prefix  string `json:"prefix"`
	Until   int64  `json:"until"` // Unix nanoseconds
	Reason  string `json:"reason"`
	Note    string `json:"note,omitempty"`
	Actor   string `json:"actor"`
	Strikes int    `json:"strikes,omitempty"`
	Repeat  int    `json:"repeat,omitempty"`
	Created int64  `json:"created"` // Unix nanoseconds
	Node    string `json:"node"`    // the node that created or lifted it
}

// notice is one message on the channel.
type notice struct {
	Op  string `json:"op"` // "ban" or "unban"
	Ban record `json:"ban"`
}

func toRecord(b bans.Ban, node string) record {
	return record{Prefix: b.Prefix.String(), Until: b.Until.UnixNano(), Reason: b.Reason.String(), Note: b.Note,
		Actor: b.Actor, Strikes: b.Strikes, Repeat: b.Repeat, Created: b.Created.UnixNano(), Node: node}
}

func (r record) ban() (bans.Ban, error) {
	if !strings.Contains(r.Prefix, "/") {
		return bans.Ban{}, fmt.Errorf("ban record: prefix %q is not a CIDR", r.Prefix)
	}
	p, err := bans.ParsePrefix(r.Prefix, 0) // masked, IPv4-mapped as IPv4: as the Manager keys it
	if err != nil {
		return bans.Ban{}, fmt.Errorf("ban record: %w", err)
	}
	why, ok := reason.Parse(r.Reason)
	if !ok {
		return bans.Ban{}, fmt.Errorf("ban record of %s: unknown reason %q", r.Prefix, r.Reason)
	}
	return bans.Ban{Prefix: p, Until: time.Unix(0, r.Until), Reason: why, Note: r.Note, Actor: r.Actor,
		Strikes: r.Strikes, Repeat: r.Repeat, Created: time.Unix(0, r.Created)}, nil
}

func (s *Sync) banKey(p string) string   { return s.o.Prefix + "ban:" + p }
func (s *Sync) unbanKey(p string) string { return s.o.Prefix + "unban:" + p }
func (s *Sync) index() string            { return s.o.Prefix + "bans" }
func (s *Sync) channel() string          { return s.o.Prefix + "bans" }

func (s *Sync) failed(err error) {
	if s.o.Failed != nil && err != nil {
		s.o.Failed(err)
	}
}

// run writes each local change to Redis and announces it, applies the
// other nodes' notices, and loads the whole set at each (re)subscription
// (go-redis resubscribes by itself after a lost connection, and notices
// sent meanwhile are lost) and every Options.Reconcile. All of it takes
// turns on this one goroutine, so none of it acts on a state another
// has just changed: a load's write-back of a ban never lands after the
// tombstone of a lift written before it, and a notice of a lift is
// never undone by a load that read the ban just before it.
func (s *Sync) run(ctx context.Context, msgs <-chan any) {
	defer s.wg.Done()
	tick := time.NewTicker(s.o.Reconcile)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-s.changes:
			s.writeChange(ctx, c)
		case <-tick.C:
			s.load(ctx)
		case m, ok := <-msgs:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					s.load(ctx)
				}
			case *redis.Message:
				s.onNotice(m.Payload)
			}
		}
	}
}

func (s *Sync) writeChange(ctx context.Context, c bans.Change) {
	if err := s.write(ctx, c); err != nil && ctx.Err() == nil {
		s.failed(err)
	}
}

// writeQueued writes the local changes waiting in the queue. A lift
// among them that came while a load ran, after the load had read the
// ban from Redis, was undone by the load applying what it read: for
// the prefixes in undone (those the load applied) whose last queued
// change is a lift, the lift is applied again before it is written.
func (s *Sync) writeQueued(ctx context.Context, undone map[netip.Prefix]bool) {
	var queued []bans.Change
drain:
	for len(queued) < queueLen {
		select {
		case c := <-s.changes:
			queued = append(queued, c)
		default:
			break drain
		}
	}
	if len(undone) > 0 {
		last := make(map[netip.Prefix]bool, len(queued)) // prefix → its last change is a lift
		for _, c := range queued {
			last[c.Ban.Prefix] = c.Removed
		}
		for p, lifted := range last {
			if lifted && undone[p] {
				s.o.Manager.ApplyRemove(p, s.o.Now())
			}
		}
	}
	for _, c := range queued {
		s.writeChange(ctx, c)
	}
}

// write stores one change and publishes it: the key, the index and the
// tombstone in one pipeline (each command on its own key, so a Redis
// Cluster takes it too), then the notice.
func (s *Sync) write(ctx context.Context, c bans.Change) error {
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	rec := toRecord(c.Ban, s.o.Node)
	body, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("redisbans: encode ban of %s: %w", rec.Prefix, err)
	}
	until := c.Ban.Until
	op := "ban"
	_, err = s.o.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		if c.Removed {
			op = "unban"
			p.Del(ctx, s.banKey(rec.Prefix))
			p.ZRem(ctx, s.index(), rec.Prefix)
			p.Set(ctx, s.unbanKey(rec.Prefix), body, 0)
			p.PExpireAt(ctx, s.unbanKey(rec.Prefix), until)
			return nil
		}
		p.Set(ctx, s.banKey(rec.Prefix), body, 0)
		p.PExpireAt(ctx, s.banKey(rec.Prefix), until)
		p.ZAdd(ctx, s.index(), redis.Z{Score: float64(until.UnixMilli()), Member: rec.Prefix})
		p.Del(ctx, s.unbanKey(rec.Prefix))
		return nil
	})
	if err != nil {
		return fmt.Errorf("redisbans: write the %s of %s: %w", op, rec.Prefix, err)
	}
	msg, err := json.Marshal(notice{Op: op, Ban: rec})
	if err != nil {
		return fmt.Errorf("redisbans: encode notice: %w", err)
	}
	if err := s.o.Client.Publish(ctx, s.channel(), msg).Err(); err != nil {
		return fmt.Errorf("redisbans: announce the %s of %s: %w", op, rec.Prefix, err)
	}
	return nil
}

// receive hands what the subscription to the channel receives (its
// (re)subscriptions and the notices) to run.
func (s *Sync) receive(ctx context.Context, msgs chan<- any) {
	defer s.wg.Done()
	defer close(msgs)
	ps := s.o.Client.Subscribe(ctx, s.channel())
	defer ps.Close() // closed before Close returns; a second Close is harmless
	// Receive does not return when ctx ends; closing ps makes it.
	context.AfterFunc(ctx, func() { _ = ps.Close() })
	down := false // reported once per outage
	for {
		m, err := ps.Receive(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if !down {
				s.failed(fmt.Errorf("redisbans: subscription to %s: %w", s.channel(), err))
			}
			down = true
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		down = false
		select {
		case msgs <- m:
		case <-ctx.Done():
			return
		}
	}
}

// onNotice applies one notice of another node.
func (s *Sync) onNotice(payload string) {
	var n notice
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		s.failed(fmt.Errorf("redisbans: notice on %s: %w", s.channel(), err))
		return
	}
	if n.Ban.Node == s.o.Node {
		return // our own
	}
	b, err := n.Ban.ban()
	if err != nil {
		s.failed(fmt.Errorf("redisbans: notice from %s: %w", n.Ban.Node, err))
		return
	}
	now := s.o.Now()
	switch n.Op {
	case "ban":
		if s.o.Manager.Apply(b, now) && s.o.Applied != nil {
			s.o.Applied(b, n.Ban.Node, false)
		}
	case "unban":
		if s.o.Manager.ApplyRemove(b.Prefix, now) && s.o.Applied != nil {
			s.o.Applied(b, n.Ban.Node, true)
		}
	default:
		s.failed(fmt.Errorf("redisbans: notice from %s: unknown op %q", n.Ban.Node, n.Op))
	}
}

// load merges the set in Redis with this node's (see the package
// documentation), on run's goroutine: the changes queued before
// it are written first, so that it finds them in Redis, and those
// queued while it ran right after it.
func (s *Sync) load(ctx context.Context) {
	s.writeQueued(ctx, nil)
	applied := make(map[netip.Prefix]bool)
	err := s.merge(ctx, applied)
	s.writeQueued(ctx, applied)
	if err != nil {
		if ctx.Err() == nil {
			s.failed(err)
		}
		return
	}
	s.once.Do(func() { close(s.loaded) })
}

// merge applies every ban in Redis here, noting in applied the prefixes
// whose ban that changed, and writes back the bans this node holds that
// Redis lacks and no tombstone lifted.
func (s *Sync) merge(ctx context.Context, applied map[netip.Prefix]bool) error {
	ctx, cancel := context.WithTimeout(ctx, 4*s.o.Timeout)
	defer cancel()
	now := s.o.Now()
	ms := strconv.FormatInt(now.UnixMilli(), 10)
	if err := s.o.Client.ZRemRangeByScore(ctx, s.index(), "-inf", ms).Err(); err != nil {
		return fmt.Errorf("redisbans: prune %s: %w", s.index(), err)
	}
	members, err := s.o.Client.ZRange(ctx, s.index(), 0, -1).Result()
	if err != nil {
		return fmt.Errorf("redisbans: list %s: %w", s.index(), err)
	}
	inRedis := make(map[string]bool, len(members))
	gets := make([]*redis.StringCmd, len(members))
	if _, err := s.o.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			gets[i] = p.Get(ctx, s.banKey(m))
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redisbans: read the bans: %w", err)
	}
	for i, g := range gets {
		body, err := g.Result()
		if errors.Is(err, redis.Nil) {
			continue // ended or lifted since the listing
		}
		if err != nil {
			return fmt.Errorf("redisbans: read the ban of %s: %w", members[i], err)
		}
		var rec record
		if err := json.Unmarshal([]byte(body), &rec); err != nil {
			s.failed(fmt.Errorf("redisbans: ban of %s: %w", members[i], err))
			continue
		}
		b, err := rec.ban()
		if err != nil {
			s.failed(err)
			continue
		}
		inRedis[b.Prefix.String()] = true
		// Our own bans too: this node may have lost its state file.
		if s.o.Manager.Apply(b, now) {
			applied[b.Prefix] = true
			if s.o.Applied != nil {
				s.o.Applied(b, rec.Node, false)
			}
		}
	}
	// Ours that Redis lacks: lifted meanwhile (a tombstone), or lost by
	// Redis.
	var missing []bans.Ban
	for _, b := range s.o.Manager.List(now) {
		if !b.DryRun && !inRedis[b.Prefix.String()] {
			missing = append(missing, b)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	tombs := make([]*redis.IntCmd, len(missing))
	if _, err := s.o.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, b := range missing {
			tombs[i] = p.Exists(ctx, s.unbanKey(b.Prefix.String()))
		}
		return nil
	}); err != nil {
		return fmt.Errorf("redisbans: read the tombstones: %w", err)
	}
	for i, b := range missing {
		if tombs[i].Val() > 0 {
			if s.o.Manager.ApplyRemove(b.Prefix, now) && s.o.Applied != nil {
				s.o.Applied(b, "", true)
			}
			continue
		}
		if err := s.write(ctx, bans.Change{Ban: b}); err != nil {
			return err
		}
	}
	return nil
}
