// Package gateway is the network core of Portcullis: listeners, the epoll
// event loops (gateway/reactor), the non-blocking WebSocket handshake, frame
// handling (gateway/frame), per-connection write queues, the topic hub and
// the wire protocols. It asks policy for decisions and emits audit events; it
// never imports alerting or cmd.
//
// Concurrency: every connection belongs to one loop and is touched only by
// that loop's goroutine. Other goroutines (the admin API, signal handling)
// reach connections only by posting tasks to loops.
//
// Publishing: every publication (Server.Publish for the admin API and
// feeds, and clients' native and WAMP publications) goes through a Broker,
// InProcess unless Options.Broker names another. The Broker hands it to
// the Hub of each node with subscribers of its topic; this node's Hub
// (the server) queues it on every loop and returns at once with the number
// of local subscriptions it was queued for, counted from a per-topic atomic
// count kept by the loops, so a publisher never waits for the writes. Each
// loop then encodes the publication once per protocol (lazily, shared by
// every loop) and writes the same bytes to each of its subscribers. The
// Broker is told when a topic gets its first subscriber on this node and
// loses its last (TopicActive, TopicIdle), which is what a cluster broker
// needs to listen to a topic only while it has local subscribers.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/config"
	"github.com/portcullis-gw/portcullis/gateway/metrics"
	"github.com/portcullis-gw/portcullis/gateway/reactor"
	"github.com/portcullis-gw/portcullis/policy/clientip"
	"github.com/portcullis-gw/portcullis/policy/origin"
	"github.com/portcullis-gw/portcullis/policy/ratelimit"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// Limits are the per-connection and global limits of docs/CONFIG.md. A zero field
// means the default, never "unlimited": the embedded default config's
// value (gateway/config), except for the two that are no config key.
type Limits struct {
	MaxConnections       int            // open connections in all
	MaxFrameBytes        int            // largest accepted frame payload
	MaxMessageBytes      int            // largest reassembled message
	HandshakeTimeout     time.Duration  // time to send a complete upgrade request
	HandshakeBytes       int            // largest upgrade request (DefaultHandshakeBytes)
	PingInterval         time.Duration  // server pings; two missed pongs close
	WriteQueueBytes      int            // bytes queued for one slow client before it is a slow consumer
	WriteStallTimeout    time.Duration  // time without write progress before it is a slow consumer
	MaxSubscriptionsConn int            // subscriptions per connection
	SendBufferBytes      int            // SO_SNDBUF per connection (DefaultSendBufferBytes)
	MsgRate              ratelimit.Rate // messages (and pings) per connection; zero PerSecond: unlimited
	MessageTimeout       time.Duration  // a message (or frame) whose first byte arrived must complete within it
	InboundBufferPerIP   int            // inbound bytes held per counted address: unfinished messages, WAMP v1 tables
	InboundBufferTotal   int            // inbound bytes held in all
	BytesRate            ratelimit.Rate // inbound bytes per second per counted address (Burst in bytes); zero PerSecond: unlimited
}

// The limits that are no config key.
const (
	DefaultHandshakeBytes  = 8 << 10  // largest upgrade request
	DefaultSendBufferBytes = 64 << 10 // SO_SNDBUF per connection
)

// LimitsFrom maps the config's `limits:` keys to the gateway's limits.
func LimitsFrom(l config.Limits) Limits {
	return Limits{
		MaxConnections:       l.MaxConnections,
		MaxFrameBytes:        l.MaxFrameBytes,
		MaxMessageBytes:      l.MaxMessageBytes,
		HandshakeTimeout:     l.HandshakeTimeout,
		HandshakeBytes:       DefaultHandshakeBytes,
		PingInterval:         l.PingInterval,
		WriteQueueBytes:      l.WriteQueueBytes,
		WriteStallTimeout:    l.WriteStallTimeout,
		MaxSubscriptionsConn: l.MaxSubscriptionsPerConn,
		SendBufferBytes:      DefaultSendBufferBytes,
		MsgRate:              ratelimit.Rate{PerSecond: l.MsgRate.Rate, Burst: l.MsgRate.Burst},
		MessageTimeout:       l.MessageTimeout,
		InboundBufferPerIP:   l.InboundBufferPerIP,
		InboundBufferTotal:   l.InboundBufferTotal,
		BytesRate:            ratelimit.Rate{PerSecond: l.BytesRate.Rate, Burst: l.BytesRate.Burst},
	}
}

// defaults is the embedded default config, parsed once.
var defaults = sync.OnceValue(config.Default)

// setDefaults fills every zero limit from the embedded default config.
// The two rates keep a zero PerSecond: unlimited, as documented.
func (l *Limits) setDefaults() {
	d := LimitsFrom(defaults().Limits)
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&l.MaxConnections, d.MaxConnections)
	def(&l.MaxFrameBytes, d.MaxFrameBytes)
	def(&l.MaxMessageBytes, d.MaxMessageBytes)
	def(&l.HandshakeBytes, d.HandshakeBytes)
	def(&l.WriteQueueBytes, d.WriteQueueBytes)
	def(&l.MaxSubscriptionsConn, d.MaxSubscriptionsConn)
	def(&l.SendBufferBytes, d.SendBufferBytes)
	defd(&l.HandshakeTimeout, d.HandshakeTimeout)
	defd(&l.PingInterval, d.PingInterval)
	defd(&l.WriteStallTimeout, d.WriteStallTimeout)
	defd(&l.MessageTimeout, d.MessageTimeout)
	def(&l.InboundBufferPerIP, d.InboundBufferPerIP)
	def(&l.InboundBufferTotal, d.InboundBufferTotal)
	l.InboundBufferTotal = max(l.InboundBufferTotal, l.InboundBufferPerIP)
}

// Options configure a Server.
type Options struct {
	Listen  string // "host:port"; ignored when Listeners is set
	Path    string // WebSocket path; empty: the default config's
	Version string // reported in welcome frames
	Loops   int    // event loops; 0 means GOMAXPROCS (or len(Listeners))
	// WriteSyscalls makes the loops send with write(2) and writev(2)
	// even where the kernel offers io_uring (config io_uring: false).
	WriteSyscalls bool
	Limits        Limits
	// Listeners are sockets bound beforehand with Bind, one per loop;
	// nil: New binds Listen itself.
	Listeners *Listeners
	// TLS serves wss:// on the listeners through the TLS front
	// (gateway/tlsfront, tls.go); nil: plain ws://.
	TLS *TLS

	Guard         Guard              // blocklist, bans, per-address limits; nil admits everyone
	ClientIP      *clientip.Resolver // trusted proxies and the forwarding header; nil trusts none
	ProxyProtocol bool               // require a PROXY v1/v2 header from trusted proxies
	// AuditHealthy reports whether new connections may be admitted as far
	// as the audit trail goes (false under audit.on_failure: fail_closed
	// while it cannot be written). Nil: always.
	AuditHealthy func() bool
	// ClusterHealthy reports whether new connections may be admitted as
	// far as the cluster goes (false under cluster.on_redis_down: refuse
	// while Redis is unreachable). Nil: always.
	ClusterHealthy func() bool

	Origins *origin.Checker // Origin policy
	Topics  *topics.Set     // topic rules
	// DataSchemas validate client-published data, keyed by the pattern
	// of the rule (topics[].data_schema).
	DataSchemas map[string]schema.DataSchema
	// Feeds runs the pollers of `feed:` topics; nil: none.
	Feeds Feeds
	// Broker carries every publication to the subscribers (see Broker);
	// nil: an InProcess broker, this node alone. Run starts it.
	Broker Broker
	Tokens TokenSource // token source: policy/tokens (store) or policy/jwt
	// Messages counts client messages by protocol and op
	// (portcullis_messages_total); nil counts nothing.
	Messages *metrics.Messages
	Schema   *schema.Validator // client message validation (JSON Schema)
	Audit    audit.Sink
	Log      *logrus.Logger
}

// TokenSource redeems client tokens: policy/tokens.Store or
// policy/jwt.Source. Redeem presents token for the connection p describes
// (its id, client address, counted prefix and claimed user). The first
// connection that presents a valid token redeems it and gets its Grant
// (shared, read-only); that connection may present it again. On any other
// connection the token is spent: reason.TokenReplayed from the redeemer's
// counted address as the token's user (a reconnect), reason.TokenTheft
// otherwise, with Result.Spent naming the redeemer. Result.Detail says
// why a token was refused, for the audit trail only. Safe for concurrent
// use. A source whose Redeem waits for the network says so with a
// RedeemsRemotely() bool method (policy/tokens/redistokens): it is then
// called off the event loops (redeem_async.go).
type TokenSource interface {
	Redeem(token string, p tokens.Presenter, now time.Time) tokens.Result
}

// Server is a gateway: built with New, run with Run.
type Server struct {
	opts       Options
	rules      atomic.Pointer[rules] // the policy that can change live (rules.go)
	fwdNotices *clientip.Notices     // peers reported for untrusted forwarding (forwarding.go)
	inbound    *ratelimit.Inbound    // inbound bytes held and byte rate per counted address
	loops      []*loopState
	bootID     string
	nextID     atomic.Uint64
	addr       netip.AddrPort

	conns         atomic.Int64 // open (upgraded or handshaking) connections
	upgraded      atomic.Int64
	accepted      atomic.Uint64
	rejected      atomic.Uint64
	subscriptions atomic.Int64
	published     atomic.Uint64
	delivered     atomic.Uint64
	slowConsumers atomic.Uint64
	droppedEvents atomic.Uint64 // dropped under drop_oldest / keep_latest

	fds fdShortage // reserve descriptor and exhaustion episodes (loop.go)
	tls *tlsFront  // the TLS front when Options.TLS is set (tls.go); nil: plain

	broker      Broker
	topicMu     sync.Mutex
	localTopics map[string]*localTopic // topics with subscribers on this node; guarded by topicMu

	shutdownOnce sync.Once
	closing      atomic.Bool
	draining     atomic.Bool // set when a drain starts: readiness probes answer 503
	started      atomic.Bool // Run has started the loops: readiness probes answer 200 until draining
}

// setDefaults fills zero options with their defaults and checks the rest.
func (o *Options) setDefaults() error {
	o.Limits.setDefaults()
	switch {
	case o.Listeners != nil:
		o.Loops = len(o.Listeners.fds)
	case o.Loops <= 0:
		o.Loops = runtime.GOMAXPROCS(0)
	}
	if o.Path == "" {
		o.Path = defaults().Path
	}
	if o.Audit == nil {
		o.Audit = audit.Discard{}
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if o.Guard == nil {
		o.Guard = openGuard{}
	}
	if o.Broker == nil {
		o.Broker = &InProcess{}
	}
	if o.AuditHealthy == nil {
		o.AuditHealthy = func() bool { return true }
	}
	if o.ClientIP == nil {
		r, err := clientip.NewResolver(nil, "")
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		o.ClientIP = r
	}
	if o.ProxyProtocol && !o.ClientIP.HasTrusted() {
		return errors.New("gateway: ProxyProtocol needs trusted proxies")
	}
	if o.Tokens == nil || o.Topics == nil || o.Origins == nil || o.Schema == nil {
		return errors.New("gateway: Tokens, Topics, Schema and Origins are required")
	}
	return nil
}

// New builds a server from o: its event loops, each with its listening
// socket (o.Listeners, or bound now on o.Listen), not yet running, so that
// whatever refers to the server can be wired before a connection is
// served. Until Run, connections wait in the kernel's accept queue. A
// server that will never run is released with Abandon.
func New(o Options) (*Server, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	var boot [4]byte
	_, _ = rand.Read(boot[:])
	s := &Server{opts: o, bootID: hex.EncodeToString(boot[:]),
		broker:      o.Broker,
		localTopics: make(map[string]*localTopic)}
	inbound, err := ratelimit.NewInbound(ratelimit.InboundConfig{
		HeldPerKey: int64(o.Limits.InboundBufferPerIP), HeldTotal: int64(o.Limits.InboundBufferTotal),
		Rate: o.Limits.BytesRate})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	s.inbound = inbound
	if err := s.initRules(&s.opts); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if err := s.fds.openReserve(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}

	lns := o.Listeners
	if lns == nil {
		if lns, err = Bind(o.Listen, o.Loops); err != nil {
			s.fds.closeReserve()
			return nil, err
		}
	}
	s.addr = lns.addr
	if o.TLS != nil {
		// The front accepts on the sockets; the loops get none.
		if err := s.initTLS(lns); err != nil {
			s.fds.closeReserve()
			lns.Close()
			return nil, err
		}
	}
	for i, fd := range lns.fds {
		ls, err := newLoopState(s, i, fd)
		if err != nil {
			s.closeLoops()
			lns.closeFrom(i)
			return nil, fmt.Errorf("gateway: %w", err)
		}
		s.loops = append(s.loops, ls)
	}
	lns.fds = nil // the loops own them now
	s.reportRings()
	return s, nil
}

// reportRings logs, once, that loops send with write(2) because the kernel
// refused them an io_uring (each loop asks for its own: one may be refused
// where another was not, over a memory-lock limit on a kernel before 5.12).
func (s *Server) reportRings() {
	var refused error
	n := 0
	for _, ls := range s.loops {
		if ls.ringErr != nil {
			refused = ls.ringErr
			n++
		}
	}
	if n > 0 {
		s.opts.Log.WithError(refused).WithField("loops", fmt.Sprintf("%d of %d", n, len(s.loops))).
			Warn("io_uring unavailable: these event loops send with write(2) and writev(2)")
	}
}

// Run starts the broker and the event loops. It is called once.
func (s *Server) Run() error {
	if err := s.broker.Start(localHub{s}); err != nil {
		s.closeLoops()
		return fmt.Errorf("gateway: start the broker: %w", err)
	}
	for _, ls := range s.loops {
		go func(ls *loopState) {
			if err := ls.loop.Run(); err != nil {
				s.opts.Log.WithError(err).Error("event loop stopped")
			}
		}(ls)
	}
	s.runTLS()
	s.started.Store(true)
	return nil
}

// Abandon releases a server New built that never ran: its listening
// sockets and descriptor reserve.
func (s *Server) Abandon() { s.closeLoops() }

func portOf(hostport string) string {
	for i := len(hostport) - 1; i >= 0; i-- {
		if hostport[i] == ':' {
			return hostport[i+1:]
		}
	}
	return ""
}

func (s *Server) closeLoops() {
	for _, ls := range s.loops {
		if ls.lfd >= 0 {
			ls.loop.Remove(ls.lfd)
		}
		ls.loop.DropRing()
	}
	s.closeTLS()
	s.fds.closeReserve()
}

// Reload applies the live parts of o — topic rules and their data
// schemas, origins, trusted proxies and the client IP header, the
// per-connection limits — atomically: new connections and new messages
// see them, live connections keep their subscriptions. o is complete, as
// for New; what cannot change without a restart (the listeners, the
// loops, the global caps) is the caller's to refuse before it calls.
func (s *Server) Reload(o Options) error {
	if err := o.setDefaults(); err != nil {
		return err
	}
	if err := s.swapRules(&o); err != nil {
		return fmt.Errorf("gateway: reload: %w", err)
	}
	return nil
}

// Addr is the address the WebSocket listener is bound to.
func (s *Server) Addr() netip.AddrPort { return s.addr }

// BootID identifies this run of the server.
func (s *Server) BootID() string { return s.bootID }

// Publish publishes data (valid JSON, not modified afterwards) to topic
// through the Broker, for every subscriber. It returns once the
// publication is queued on every event loop, before any subscriber is
// written to, with the number of this node's subscriptions to topic it was
// queued for (see Hub.Deliver); the frame is encoded once per protocol and
// shared by every subscriber. An error is the Broker's.
func (s *Server) Publish(topic string, data []byte) (int, error) {
	n, err := s.broker.Publish(newPublication(topic, data))
	if err != nil {
		return n, fmt.Errorf("publish to %s: %w", topic, err)
	}
	return n, nil
}

// post publishes p, made by a client on an event loop, through the
// Broker. The publisher has had its answer; a failure is logged.
func (s *Server) post(p *Publication) {
	if _, err := s.broker.Publish(p); err != nil {
		s.opts.Log.WithError(err).WithField("topic", p.Topic()).Error("a client publication was not delivered")
	}
}

// Duration is a time.Duration written as its String form ("1.5ms") in
// JSON, so /v1/stats stays readable while Go callers keep a typed value.
type Duration time.Duration

// MarshalText writes d as time.Duration.String.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Stats is a snapshot of the server's counters.
type Stats struct {
	Connections   int64    `json:"connections"`
	WebSockets    int64    `json:"websockets"`
	Subscriptions int64    `json:"subscriptions"`
	Topics        int64    `json:"topics"`
	Accepted      uint64   `json:"accepted"`
	Rejected      uint64   `json:"rejected"`
	Published     uint64   `json:"published"`
	Delivered     uint64   `json:"delivered"`
	SlowConsumers uint64   `json:"slow_consumers"`
	DroppedEvents uint64   `json:"dropped_events"` // under slow_consumer: drop_oldest / keep_latest
	Loops         int      `json:"loops"`
	MaxLoopStall  Duration `json:"max_loop_stall"` // the longest an event loop spent on one batch of work
	Goroutines    int      `json:"goroutines"`
	HeapLiveBytes uint64   `json:"heap_live_bytes"` // heap objects, live and not yet swept (MemStats.HeapAlloc)
	HeapSysBytes  uint64   `json:"heap_sys_bytes"`
	HeapInuse     uint64   `json:"heap_inuse_bytes"`
	HeapReleased  uint64   `json:"heap_released_bytes"`
	RuntimeSys    uint64   `json:"runtime_sys_bytes"` // all memory the Go runtime obtained

	// InboundHeldBytes is what unfinished messages and WAMP v1 tables
	// hold against limits.inbound_buffer_total.
	InboundHeldBytes int64 `json:"inbound_held_bytes"`

	// LoopTurns is how long the event loops' turns that did work took,
	// over every loop since start.
	LoopTurns LoopTurns `json:"loop_turns"`
	// Syscalls counts the system calls the event loops made since start
	// (and the wake-ups posted to them), summed over the loops.
	Syscalls reactor.Syscalls `json:"syscalls"`
}

// LoopTurns is the distribution of the event loops' turn durations: P50
// and P99 are the upper bounds of the buckets holding those quantiles (the
// longest turn when beyond the last bound).
type LoopTurns struct {
	Count   uint64       `json:"count"`
	Max     Duration     `json:"max"`
	P50     Duration     `json:"p50"`
	P99     Duration     `json:"p99"`
	Buckets []TurnBucket `json:"buckets"`
	// Sum is the turns' total time (the metric's _sum).
	Sum time.Duration `json:"-"`
}

// TurnBucket is a cumulative bucket of LoopTurns: Count turns took at most
// Le.
type TurnBucket struct {
	Le    TurnBound `json:"le"`
	Count uint64    `json:"count"`
}

// TurnBound is a bucket's upper bound, written like Duration; InfBound,
// the last bucket's, is written "+Inf".
type TurnBound time.Duration

// InfBound is the bound of the last bucket, which takes every turn.
const InfBound = TurnBound(math.MaxInt64)

// MarshalText writes b as time.Duration.String, or "+Inf".
func (b TurnBound) MarshalText() ([]byte, error) {
	if b == InfBound {
		return []byte("+Inf"), nil
	}
	return []byte(time.Duration(b).String()), nil
}

// loopTurns sums the loops' turn histograms.
func loopTurns(t reactor.Turns) LoopTurns {
	lt := LoopTurns{Count: t.Count(), Max: Duration(t.Max), P50: Duration(t.Quantile(0.5)),
		P99: Duration(t.Quantile(0.99)), Sum: t.Sum, Buckets: make([]TurnBucket, 0, len(t.Counts))}
	var cum uint64
	for i, n := range t.Counts {
		cum += n
		le := InfBound
		if i < len(reactor.TurnBounds) {
			le = TurnBound(reactor.TurnBounds[i])
		}
		lt.Buckets = append(lt.Buckets, TurnBucket{Le: le, Count: cum})
	}
	return lt
}

// Stats returns current counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Connections:   s.conns.Load(),
		WebSockets:    s.upgraded.Load(),
		Subscriptions: s.subscriptions.Load(),
		Accepted:      s.accepted.Load(),
		Rejected:      s.rejected.Load(),
		Published:     s.published.Load(),
		Delivered:     s.delivered.Load(),
		SlowConsumers: s.slowConsumers.Load(),
		DroppedEvents: s.droppedEvents.Load(),
		Loops:         len(s.loops),
		Goroutines:    runtime.NumGoroutine(),
	}
	st.InboundHeldBytes = s.inbound.HeldTotal()
	var stall int64
	var turns reactor.Turns
	for _, ls := range s.loops {
		st.Topics += ls.hub.topicCount.Load()
		if v := ls.loop.Stall.Load(); v > stall {
			stall = v
		}
		turns.Add(ls.loop.Turns())
		st.Syscalls.Add(ls.loop.Syscalls())
	}
	st.MaxLoopStall = Duration(stall)
	st.LoopTurns = loopTurns(turns)
	readMemory(&st)
	return st
}

// Shutdown stops accepting, sends 1001 (going away) to every client, lets
// queued frames flush, and stops the loops. It returns when every loop has
// stopped or ctx is done (then remaining connections are reset).
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.draining.Store(true)
		s.closing.Store(true)
		s.stopTLSAccepting()
		for _, ls := range s.loops {
			ls.loop.Post(ls.beginShutdown)
		}
	})
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for s.conns.Load() > 0 {
		select {
		case <-ctx.Done():
			for _, ls := range s.loops {
				ls.loop.Post(ls.forceClose)
			}
			s.stopLoops()
			s.shutdownTLS(ctx)
			return ctx.Err()
		case <-tick.C:
		}
	}
	s.stopLoops()
	return s.shutdownTLS(ctx)
}

func (s *Server) stopLoops() {
	for _, ls := range s.loops {
		ls.loop.Stop()
	}
	for _, ls := range s.loops {
		<-ls.loop.Done()
	}
	s.fds.closeReserve()
}

// DisconnectPrefix closes, with 1008, every connection whose client address
// is inside p (used when an address is banned). It returns how many.
func (s *Server) DisconnectPrefix(p netip.Prefix, r string) int {
	var total atomic.Int64
	var wg sync.WaitGroup
	for _, ls := range s.loops {
		wg.Add(1)
		if !ls.loop.Post(func() {
			total.Add(int64(ls.disconnectPrefix(p, r)))
			wg.Done()
		}) {
			wg.Done()
		}
	}
	wg.Wait()
	return int(total.Load())
}

// DropInKernel makes the kernel drop, before a connection exists, every
// packet to the WebSocket listeners from inside prefixes (a socket filter
// on each listener; the sender gets no answer). It replaces the previous
// set; an empty set removes the filter. At most reactor.MaxDropPrefixes
// prefixes are used. It does not wait for the loops.
func (s *Server) DropInKernel(prefixes []netip.Prefix) {
	prog := reactor.DropFilter(prefixes)
	if len(prefixes) == 0 {
		prog = nil
	}
	s.dropInKernelTLS(prog)
	for _, ls := range s.loops {
		ls.loop.Post(func() {
			if ls.lfd < 0 {
				return
			}
			if err := reactor.AttachDropFilter(ls.lfd, prog); err != nil {
				s.opts.Log.WithError(err).Error("cannot install the kernel drop filter; banned addresses are still refused at accept")
			}
		})
	}
}
