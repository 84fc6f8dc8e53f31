// Package cluster joins Portcullis gateways through Redis (docs/CLUSTER.md):
// the Redis client built from the `cluster:` keys, the Broker that carries
// publications between nodes over Redis pub/sub, each node's presence
// (a renewed key and heartbeats on a channel, node_up and node_lost), and the
// degraded state a node is in while Redis cannot be reached
// (cluster_degraded, cluster_recovered).
//
// Nothing here runs on an event loop: the Broker's hooks only record what
// changed for the package's own goroutines, and every Redis call carries a
// timeout.
//
// cluster imports gateway (the Broker and Hub it implements), gateway/config
// and audit; it never imports alerting or cmd.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/config"
)

// The presence timings: a node renews its key every Renew, the key lives
// PresenceTTL, and a peer not heard from for PresenceTTL is lost.
const (
	DefaultPresenceTTL = 3 * time.Second
	DefaultRenew       = time.Second
	// DefaultCallTimeout bounds every Redis call.
	DefaultCallTimeout = time.Second
)

// Options configure a Node.
type Options struct {
	Config config.Cluster // the `cluster:` keys (Enabled)
	// Name is this node's name; empty: Config.Node, else the host name.
	Name  string
	Audit audit.Sink
	Log   *logrus.Logger

	// The timings; zero: the defaults above (tests shorten them).
	PresenceTTL time.Duration
	Renew       time.Duration
	CallTimeout time.Duration
}

// Node is this gateway's membership of the cluster: its Redis client, its
// Broker, its presence and its view of the others.
type Node struct {
	o       Options
	name    string
	boot    string // random, per process: tells a restarted peer from a live one
	bootN   uint64 // boot as a number, in every message this node publishes
	prefix  string
	refuse  bool // on_redis_down: refuse
	client  redis.UniversalClient
	broker  *Broker
	nodeKey string
	nodesCh string // presence announcements

	degraded      atomic.Bool
	degradedSince atomic.Int64 // unix nanoseconds; 0 while healthy

	mu        sync.Mutex
	peers     map[string]peer // other live nodes by name; guarded by mu
	recovered []func()        // guarded by mu

	stop    chan struct{}
	done    sync.WaitGroup
	started bool
	closed  atomic.Bool
}

// peer is another node as this one last heard of it.
type peer struct {
	boot string
	seen time.Time
}

// New builds a node from o: the Redis client (nothing is dialled yet).
// password is the contents of cluster.redis.password_file, or "".
func New(o Options, password string) (*Node, error) {
	if !o.Config.Enabled() {
		return nil, errors.New("cluster: no cluster.redis.addrs")
	}
	if o.PresenceTTL <= 0 {
		o.PresenceTTL = DefaultPresenceTTL
	}
	if o.Renew <= 0 {
		o.Renew = DefaultRenew
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.Audit == nil {
		o.Audit = audit.Discard{}
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	name := o.Name
	if name == "" {
		name = o.Config.Node
	}
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("cluster: node name: cluster.node is empty and the host name is unknown: %w", err)
		}
		name = h
	}
	if !config.ValidNodeName(name) {
		return nil, fmt.Errorf("cluster: node name %q must be 1 to 64 of A-Z a-z 0-9 . _ - (set cluster.node)", name)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	c := o.Config
	n := &Node{o: o, name: name, boot: hex.EncodeToString(b[:]), bootN: binary.BigEndian.Uint64(b[:]), prefix: c.Redis.KeyPrefix,
		refuse: c.OnRedisDown == config.OnRedisDownRefuse, peers: map[string]peer{}, stop: make(chan struct{})}
	n.nodeKey = n.prefix + "node:" + name
	n.nodesCh = n.prefix + "nodes"
	redis.SetLogger(redisLog{o.Log})
	n.client = NewClient(c, password, o.CallTimeout)
	n.broker = newBroker(n)
	return n, nil
}

// NewClient returns the go-redis client of the `cluster.redis` keys: a
// standalone client for one address, a Sentinel-backed one with
// master_name, a Redis Cluster client for several addresses without.
// Every call times out after callTimeout; a lost connection is re-dialled
// with go-redis's back-off.
func NewClient(c config.Cluster, password string, callTimeout time.Duration) redis.UniversalClient {
	r := c.Redis
	o := &redis.UniversalOptions{
		Addrs:        r.Addrs,
		MasterName:   r.MasterName,
		Username:     r.Username,
		Password:     password,
		DB:           r.DB,
		DialTimeout:  callTimeout,
		ReadTimeout:  callTimeout,
		WriteTimeout: callTimeout,
		PoolTimeout:  callTimeout,
		// One retry: a call that fails twice reports Redis down rather
		// than keeping its caller waiting through a long back-off.
		MaxRetries:      1,
		MinRetryBackoff: 8 * time.Millisecond,
		MaxRetryBackoff: 512 * time.Millisecond,
		DisableIdentity: true,
	}
	if r.TLS {
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return redis.NewUniversalClient(o)
}

func (n *Node) bootNum() uint64 { return n.bootN }

// redisLog puts go-redis's own messages (re-dials, pool errors) in the
// operational log at debug level: a Redis outage is reported once, by
// cluster_degraded, not once per attempt.
type redisLog struct{ l *logrus.Logger }

func (r redisLog) Printf(_ context.Context, format string, v ...any) {
	r.l.WithField("component", "go-redis").Debugf(format, v...)
}

// Name is this node's name.
func (n *Node) Name() string { return n.name }

// Client is the node's Redis client, shared by everything that keeps
// cluster state in Redis (tokens, bans, leases).
func (n *Node) Client() redis.UniversalClient { return n.client }

// Key returns the Redis key or channel name suffix under the configured
// prefix.
func (n *Node) Key(suffix string) string { return n.prefix + suffix }

// Broker is the node's gateway.Broker.
func (n *Node) Broker() *Broker { return n.broker }

// CallTimeout is the timeout of every Redis call.
func (n *Node) CallTimeout() time.Duration { return n.o.CallTimeout }

// Degraded reports whether Redis is unreachable: the node serves its local
// subscribers only, and whatever needs Redis to be safe (a token
// redemption) is refused.
func (n *Node) Degraded() bool { return n.degraded.Load() }

// Accepting reports whether new connections may be admitted as far as the
// cluster goes: false while degraded under on_redis_down: refuse.
func (n *Node) Accepting() bool { return !n.refuse || !n.degraded.Load() }

// OnRecovered registers f, called (on the node's own goroutine) each time
// Redis is reachable again after an episode, once the topic channels are
// resubscribed and before the node leaves the degraded state: whatever
// reloads shared state (bans) does it there, while redemptions are still
// refused.
func (n *Node) OnRecovered(f func()) {
	n.mu.Lock()
	n.recovered = append(n.recovered, f)
	n.mu.Unlock()
}

// ErrNameTaken is Start when another running node has this node's name.
var ErrNameTaken = errors.New("cluster: node name in use")

// presenceScript renews this node's key when it holds it, takes it when
// nobody does (Redis lost it in a restart), and answers 0 when another node
// holds it.
var presenceScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0`)

// releaseScript deletes this node's key if it still holds it.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// Start claims this node's name in Redis and starts the presence and the
// broker's goroutines. Redis must be reachable at start: a node that
// cannot tell whether its name is free does not start. Another running
// node with the same name is ErrNameTaken.
func (n *Node) Start() error {
	ctx, cancel := context.WithTimeout(context.Background(), n.o.CallTimeout)
	defer cancel()
	ok, err := n.client.SetNX(ctx, n.nodeKey, n.boot, n.o.PresenceTTL).Result()
	if err != nil {
		return fmt.Errorf("cluster: reach Redis at %s: %w", strings.Join(n.o.Config.Redis.Addrs, ", "), err)
	}
	if !ok {
		return fmt.Errorf("%w: another running node is named %q (Redis key %s is held; it expires %s after that node stops): set a distinct cluster.node on each node",
			ErrNameTaken, n.name, n.nodeKey, n.o.PresenceTTL)
	}
	if err := n.broker.start(ctx); err != nil {
		n.release()
		return err
	}
	n.started = true
	n.announce(ctx, "up")
	n.done.Add(1)
	go n.presence()
	return nil
}

// Close leaves the cluster: it stops the goroutines, gives the name up and
// says so to the other nodes, then closes the client.
func (n *Node) Close() error {
	if n.closed.Swap(true) {
		return nil
	}
	if n.started {
		close(n.stop)
		n.done.Wait()
		n.broker.close()
		ctx, cancel := context.WithTimeout(context.Background(), n.o.CallTimeout)
		n.announce(ctx, "down")
		cancel()
		n.release()
	}
	if err := n.client.Close(); err != nil {
		return fmt.Errorf("cluster: close the Redis client: %w", err)
	}
	return nil
}

func (n *Node) release() {
	ctx, cancel := context.WithTimeout(context.Background(), n.o.CallTimeout)
	defer cancel()
	if err := releaseScript.Run(ctx, n.client, []string{n.nodeKey}, n.boot).Err(); err != nil {
		n.o.Log.WithError(err).Warn("cluster: could not give the node name up; it expires by itself")
	}
}

// announce publishes "<what> <name> <boot>" on the presence channel.
func (n *Node) announce(ctx context.Context, what string) error {
	return n.client.Publish(ctx, n.nodesCh, what+" "+n.name+" "+n.boot).Err()
}

// presence renews the node's key and announces it every Renew, watches
// the peers, and moves the node in and out of the degraded state.
func (n *Node) presence() {
	defer n.done.Done()
	t := time.NewTicker(n.o.Renew)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.o.CallTimeout)
		res, err := presenceScript.Run(ctx, n.client, []string{n.nodeKey}, n.boot, n.o.PresenceTTL.Milliseconds()).Int()
		if err == nil {
			err = n.announce(ctx, "hb")
		}
		cancel()
		if err != nil {
			n.fail(fmt.Errorf("renew presence: %w", err))
			continue
		}
		if res == 0 {
			n.o.Log.WithField("node", n.name).Error("cluster: another node has taken this node's name in Redis (this node was unreachable longer than the presence TTL); give each node a distinct cluster.node")
		}
		if n.degraded.Load() {
			n.recover()
		}
		n.sweepPeers(time.Now())
	}
}

// fail puts the node in the degraded state; the first failure of an
// episode is audited (critical) and logged.
func (n *Node) fail(err error) {
	if n.closed.Load() || !n.degraded.CompareAndSwap(false, true) {
		return
	}
	n.degradedSince.Store(time.Now().UnixNano())
	detail := "Redis unreachable: local delivery only, token redemptions refused"
	if n.refuse {
		detail += ", new connections refused"
	}
	n.o.Log.WithError(err).WithField("node", n.name).Error("cluster: " + detail)
	n.o.Audit.Emit(audit.Event{Event: audit.KindClusterDegraded, Severity: audit.Critical, Stage: audit.StageSystem,
		Detail: audit.Cap(detail + ": " + err.Error())})
}

// recover ends an episode: resubscribe the active topics, run the
// OnRecovered callbacks, leave the degraded state, audit it.
func (n *Node) recover() {
	if err := n.broker.resubscribe(); err != nil {
		n.o.Log.WithError(err).Warn("cluster: resubscribe after recovery failed; retrying")
		return
	}
	n.mu.Lock()
	fs := slices.Clone(n.recovered)
	now := time.Now()
	for k, p := range n.peers {
		p.seen = now // nobody was heard from while Redis was down
		n.peers[k] = p
	}
	n.mu.Unlock()
	for _, f := range fs {
		f()
	}
	since := time.Unix(0, n.degradedSince.Swap(0))
	n.degraded.Store(false)
	d := time.Since(since)
	n.o.Log.WithFields(logrus.Fields{"node": n.name, "after": d.Round(time.Millisecond)}).Info("cluster: Redis reachable again")
	n.o.Audit.Emit(audit.Event{Event: audit.KindClusterRecovered, Severity: audit.Notice, Stage: audit.StageSystem,
		DurationMS: d.Milliseconds(), Detail: "Redis reachable again: topic channels resubscribed"})
}

// heard handles an announcement "<what> <name> <boot>" of the presence
// channel.
func (n *Node) heard(msg string, now time.Time) {
	what, rest, _ := strings.Cut(msg, " ")
	name, boot, _ := strings.Cut(rest, " ")
	if name == n.name || !config.ValidNodeName(name) {
		return
	}
	n.mu.Lock()
	p, known := n.peers[name]
	switch what {
	case "up", "hb":
		n.peers[name] = peer{boot: boot, seen: now}
	case "down":
		delete(n.peers, name)
	default:
		n.mu.Unlock()
		return
	}
	n.mu.Unlock()
	switch {
	case what == "down" && known:
		n.o.Audit.Emit(audit.Event{Event: audit.KindNodeLost, Severity: audit.Warning, Stage: audit.StageSystem,
			Detail: audit.Cap(name + ": stopped")})
	case what != "down" && !known:
		n.o.Audit.Emit(audit.Event{Event: audit.KindNodeUp, Severity: audit.Notice, Stage: audit.StageSystem,
			Detail: audit.Cap(name)})
	case what != "down" && p.boot != boot:
		n.o.Audit.Emit(audit.Event{Event: audit.KindNodeUp, Severity: audit.Notice, Stage: audit.StageSystem,
			Detail: audit.Cap(name + ": restarted")})
	}
}

// sweepPeers loses the peers not heard from for PresenceTTL. It is not
// called while degraded: then nobody is heard from.
func (n *Node) sweepPeers(now time.Time) {
	var lost []string
	n.mu.Lock()
	for name, p := range n.peers {
		if now.Sub(p.seen) > n.o.PresenceTTL {
			lost = append(lost, name)
			delete(n.peers, name)
		}
	}
	n.mu.Unlock()
	slices.Sort(lost)
	for _, name := range lost {
		n.o.Audit.Emit(audit.Event{Event: audit.KindNodeLost, Severity: audit.Warning, Stage: audit.StageSystem,
			Detail: audit.Cap(name + ": presence not renewed for " + n.o.PresenceTTL.String())})
	}
}

// Stats is the cluster's part of GET /v1/stats.
type Stats struct {
	Node     string   `json:"node"`
	Nodes    []string `json:"nodes"` // the live nodes this one knows, itself included, sorted
	Degraded bool     `json:"degraded"`
	// DegradedSince is when the current episode began; absent while healthy.
	DegradedSince *time.Time `json:"degraded_since,omitempty"`
	OnRedisDown   string     `json:"on_redis_down"`
	BrokerStats
}

// Stats returns a snapshot of the node's view.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	nodes := make([]string, 0, len(n.peers)+1)
	nodes = append(nodes, n.name)
	for name := range n.peers {
		nodes = append(nodes, name)
	}
	n.mu.Unlock()
	slices.Sort(nodes)
	s := Stats{Node: n.name, Nodes: nodes, Degraded: n.degraded.Load(), OnRedisDown: n.o.Config.OnRedisDown,
		BrokerStats: n.broker.stats()}
	if ns := n.degradedSince.Load(); ns != 0 && s.Degraded {
		t := time.Unix(0, ns).UTC()
		s.DegradedSince = &t
	}
	return s
}
