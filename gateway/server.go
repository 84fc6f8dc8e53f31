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
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/frame"
	"github.com/portcullis-gw/portcullis/gateway/reactor"
	"github.com/portcullis-gw/portcullis/policy/clientip"
	"github.com/portcullis-gw/portcullis/policy/origin"
	"github.com/portcullis-gw/portcullis/policy/ratelimit"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// Limits are the per-connection and global limits of docs/CONFIG.md. A zero field
// means the default, never "unlimited".
type Limits struct {
	MaxConnections       int            // open connections in all (100,000)
	MaxFrameBytes        int            // largest accepted frame payload (64 KiB)
	MaxMessageBytes      int            // largest reassembled message (1 MiB)
	HandshakeTimeout     time.Duration  // time to send a complete upgrade request (10 s)
	HandshakeBytes       int            // largest upgrade request (8 KiB)
	PingInterval         time.Duration  // server pings (25 s); two missed pongs close
	WriteQueueBytes      int            // bytes queued for one slow client before it is a slow consumer (256 KiB)
	WriteStallTimeout    time.Duration  // time without write progress before it is a slow consumer (10 s)
	MaxSubscriptionsConn int            // subscriptions per connection (100)
	SendBufferBytes      int            // SO_SNDBUF per connection (64 KiB)
	MsgRate              ratelimit.Rate // messages (and pings) per connection; zero PerSecond: unlimited
	MessageTimeout       time.Duration  // a message (or frame) whose first byte arrived must complete within it (10 s)
	InboundBufferPerIP   int            // inbound bytes held per counted address: unfinished messages, WAMP v1 tables (4 MiB)
	InboundBufferTotal   int            // inbound bytes held in all (256 MiB)
	BytesRate            ratelimit.Rate // inbound bytes per second per counted address (Burst in bytes); zero PerSecond: unlimited
}

func (l *Limits) setDefaults() {
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
	def(&l.MaxConnections, 100000)
	def(&l.MaxFrameBytes, 64<<10)
	def(&l.MaxMessageBytes, 1<<20)
	def(&l.HandshakeBytes, 8<<10)
	def(&l.WriteQueueBytes, 256<<10)
	def(&l.MaxSubscriptionsConn, 100)
	def(&l.SendBufferBytes, 64<<10)
	defd(&l.HandshakeTimeout, 10*time.Second)
	defd(&l.PingInterval, 25*time.Second)
	defd(&l.WriteStallTimeout, 10*time.Second)
	defd(&l.MessageTimeout, 10*time.Second)
	def(&l.InboundBufferPerIP, 4<<20)
	def(&l.InboundBufferTotal, 256<<20)
	l.InboundBufferTotal = max(l.InboundBufferTotal, l.InboundBufferPerIP)
}

// Options configure a Server.
type Options struct {
	Listen  string // "host:port"
	Path    string // WebSocket path, "/ws"
	Version string // reported in welcome frames
	Loops   int    // event loops; 0 means GOMAXPROCS
	Limits  Limits

	Guard         Guard              // blocklist, bans, per-address limits; nil admits everyone
	ClientIP      *clientip.Resolver // trusted proxies and the forwarding header; nil trusts none
	ProxyProtocol bool               // require a PROXY v1/v2 header from trusted proxies
	// AuditHealthy reports whether new connections may be admitted as far
	// as the audit trail goes (false under audit.on_failure: fail_closed
	// while it cannot be written). Nil: always.
	AuditHealthy func() bool

	Origins *origin.Checker // Origin policy
	Topics  *topics.Set     // topic rules
	// DataSchemas validate client-published data, keyed by the pattern
	// of the rule (topics[].data_schema).
	DataSchemas map[string]schema.DataSchema
	// Feeds runs the pollers of `feed:` topics; nil: none.
	Feeds Feeds
	// Broker carries every publication to the subscribers (see Broker);
	// nil: an InProcess broker, this node alone. Start starts it.
	Broker Broker
	Tokens TokenSource       // token source: policy/tokens (store) or policy/jwt
	Schema *schema.Validator // client message validation (JSON Schema)
	Audit  audit.Sink
	Log    *logrus.Logger
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
// use.
type TokenSource interface {
	Redeem(token string, p tokens.Presenter, now time.Time) tokens.Result
}

// Server is a running gateway. Create with Start.
type Server struct {
	opts        Options
	frameLimits frame.Limits       // shared by every connection's parser
	inbound     *ratelimit.Inbound // inbound bytes held and byte rate per counted address
	loops       []*loopState
	bootID      string
	nextID      atomic.Uint64
	addr        netip.AddrPort

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

	broker      Broker
	topicMu     sync.Mutex
	localTopics map[string]*localTopic // topics with subscribers on this node; guarded by topicMu

	shutdownOnce sync.Once
	closing      atomic.Bool
}

// setDefaults fills zero options with their defaults and checks the rest.
func (o *Options) setDefaults() error {
	o.Limits.setDefaults()
	if o.Loops <= 0 {
		o.Loops = runtime.GOMAXPROCS(0)
	}
	if o.Path == "" {
		o.Path = "/ws"
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

// Start opens the listeners and runs the event loops.
func Start(o Options) (*Server, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	var boot [4]byte
	_, _ = rand.Read(boot[:])
	s := &Server{opts: o, bootID: hex.EncodeToString(boot[:]),
		frameLimits: frame.Limits{MaxFrame: o.Limits.MaxFrameBytes, MaxMessage: o.Limits.MaxMessageBytes},
		broker:      o.Broker,
		localTopics: make(map[string]*localTopic)}
	inbound, err := ratelimit.NewInbound(ratelimit.InboundConfig{
		HeldPerKey: int64(o.Limits.InboundBufferPerIP), HeldTotal: int64(o.Limits.InboundBufferTotal),
		Rate: o.Limits.BytesRate})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	s.inbound = inbound
	if err := s.fds.openReserve(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}

	listen := o.Listen
	for i := 0; i < o.Loops; i++ {
		fd, bound, err := reactor.Listen(listen, 4096)
		if err != nil {
			s.closeLoops()
			return nil, fmt.Errorf("gateway: %w", err)
		}
		if i == 0 {
			s.addr = bound
			// Every further loop binds the port the first one got, so that
			// ":0" in tests still means one port shared by SO_REUSEPORT.
			host := o.Listen[:len(o.Listen)-len(portOf(o.Listen))]
			listen = host + strconv.Itoa(int(bound.Port()))
		}
		ls, err := newLoopState(s, i, fd)
		if err != nil {
			s.closeLoops()
			return nil, fmt.Errorf("gateway: %w", err)
		}
		s.loops = append(s.loops, ls)
	}
	if err := s.broker.Start(localHub{s}); err != nil {
		s.closeLoops()
		return nil, fmt.Errorf("gateway: start the broker: %w", err)
	}
	for _, ls := range s.loops {
		go func(ls *loopState) {
			if err := ls.loop.Run(); err != nil {
				s.opts.Log.WithError(err).Error("event loop stopped")
			}
		}(ls)
	}
	return s, nil
}

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
		ls.loop.Remove(ls.lfd)
	}
	s.fds.closeReserve()
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

// Stats is a snapshot of the server's counters.
type Stats struct {
	Connections   int64  `json:"connections"`
	WebSockets    int64  `json:"websockets"`
	Subscriptions int64  `json:"subscriptions"`
	Topics        int64  `json:"topics"`
	Accepted      uint64 `json:"accepted"`
	Rejected      uint64 `json:"rejected"`
	Published     uint64 `json:"published"`
	Delivered     uint64 `json:"delivered"`
	SlowConsumers uint64 `json:"slow_consumers"`
	DroppedEvents uint64 `json:"dropped_events"` // under slow_consumer: drop_oldest / keep_latest
	Loops         int    `json:"loops"`
	MaxLoopStall  string `json:"max_loop_stall"`
	Goroutines    int    `json:"goroutines"`
	HeapLiveBytes uint64 `json:"heap_live_bytes"` // after the last GC
	HeapSysBytes  uint64 `json:"heap_sys_bytes"`
	HeapInuse     uint64 `json:"heap_inuse_bytes"`
	HeapReleased  uint64 `json:"heap_released_bytes"`
	RuntimeSys    uint64 `json:"runtime_sys_bytes"` // all memory the Go runtime obtained

	// InboundHeldBytes is what unfinished messages and WAMP v1 tables
	// hold against limits.inbound_buffer_total.
	InboundHeldBytes int64 `json:"inbound_held_bytes"`
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
	for _, ls := range s.loops {
		st.Topics += ls.topicCount.Load()
		if v := ls.loop.Stall.Load(); v > stall {
			stall = v
		}
	}
	st.MaxLoopStall = time.Duration(stall).String()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st.HeapLiveBytes = ms.HeapAlloc
	st.HeapSysBytes = ms.HeapSys
	st.HeapInuse = ms.HeapInuse
	st.HeapReleased = ms.HeapReleased
	st.RuntimeSys = ms.Sys
	return st
}

// Shutdown stops accepting, sends 1001 (going away) to every client, lets
// queued frames flush, and stops the loops. It returns when every loop has
// stopped or ctx is done (then remaining connections are reset).
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.closing.Store(true)
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
			return ctx.Err()
		case <-tick.C:
		}
	}
	s.stopLoops()
	return nil
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
