package gateway

import (
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/reactor"
	"github.com/portcullis-gw/portcullis/policy/reason"
	"github.com/portcullis-gw/portcullis/policy/tokens"
)

// readBufSize is the per-loop read buffer shared by all its connections.
const readBufSize = 64 << 10

// acceptBatch bounds the accepts handled per readiness event, for fairness.
const acceptBatch = 128

// loopState is the gateway side of one reactor loop. Loop goroutine only,
// except topicCount.
type loopState struct {
	srv  *Server
	loop *reactor.Loop
	lfd  int // listener; -1 once closed

	conns   []*conn // by fd
	nconns  int
	readBuf []byte
	topics  map[string]*topicSubs
	dirty   []*conn // connections with queued frames to flush
	scratch []byte  // reply encoding buffer
	// wamp holds the WAMP session state of the connections that have any
	// (a v1 PREFIX table, a v2 session awaiting its ticket), by conn id;
	// an established v2 session or a plain v1 one has no entry.
	wamp map[uint64]*wampState
	// older holds, by conn id, the grants of tokens a connection redeemed
	// before its newest (conn.grant), oldest first; most connections
	// redeem one token and have no entry.
	older map[uint64][]*tokens.Grant
	// backlogs are drained write backlogs, kept for reuse.
	backlogs []*backlog

	upgrader upgrader

	shuttingDown bool
	topicCount   atomic.Int64
}

func newLoopState(s *Server, id int, lfd int) (*loopState, error) {
	ls := &loopState{
		srv:     s,
		lfd:     lfd,
		readBuf: make([]byte, readBufSize),
		topics:  make(map[string]*topicSubs),
	}
	loop, err := reactor.New(id, ls)
	if err != nil {
		return nil, err
	}
	ls.loop = loop
	ls.upgrader.init(ls)
	if _, err := loop.Add(lfd, reactor.Readable); err != nil {
		return nil, err
	}
	return ls, nil
}

// OnEvent implements reactor.Handler.
func (ls *loopState) OnEvent(fd int, ev reactor.Events) {
	if fd == ls.lfd {
		ls.accept()
		return
	}
	c := ls.conn(fd)
	if c == nil {
		return
	}
	if ev&reactor.Writable != 0 {
		c.onWritable(ls)
	}
	if ev&(reactor.Readable|reactor.HangUp) != 0 && c.fd >= 0 {
		c.onReadable(ls)
	}
	ls.flush()
}

// OnTimer implements reactor.Handler.
func (ls *loopState) OnTimer(fd int, at int64) {
	c := ls.conn(fd)
	if c == nil || c.timerAt != at {
		return // superseded timer
	}
	c.timerAt = 0
	c.onTimer(ls, ls.loop.Now)
	ls.flush()
}

func (ls *loopState) conn(fd int) *conn {
	if fd < 0 || fd >= len(ls.conns) {
		return nil
	}
	return ls.conns[fd]
}

func (ls *loopState) accept() {
	s := ls.srv
	for i := 0; i < acceptBatch; i++ {
		fd, sa, err := unix.Accept4(ls.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			if err == unix.EAGAIN || err == unix.EINTR {
				return
			}
			if err == unix.EMFILE || err == unix.ENFILE {
				s.opts.Log.WithError(err).Warn("accept: out of file descriptors")
			}
			return
		}
		s.accepted.Add(1)
		peer := reactor.SockaddrToAddrPort(sa)
		if ls.shuttingDown {
			unix.Close(fd)
			continue
		}
		ls.admit(fd, peer)
	}
}

// admit runs the accept stage of the pipeline (SPEC §8 step 1) for a new
// socket: blocked and banned addresses are reset before a byte is read;
// over a rate or connection cap the request is read and answered 429.
func (ls *loopState) admit(fd int, peer netip.AddrPort) {
	s := ls.srv
	addr := peer.Addr()
	proxy := s.opts.ClientIP.Trusted(addr)
	if s.opts.ProxyProtocol && !proxy {
		s.refuse(fd, peer, reason.ProxyHeader, s.opts.Guard.Counted(addr), "PROXY protocol required; peer is not a trusted proxy")
		return
	}
	if !s.opts.AuditHealthy() {
		// fail_closed: nobody is admitted while refusals cannot be
		// recorded; answered 503 once the request is in.
		ls.open(fd, peer, false, Verdict{Reason: reason.AuditUnavailable, RetryAfter: 5 * time.Second})
		return
	}
	r, retry, counted := s.opts.Guard.Admit(addr, !proxy, ls.loop.Now)
	v := Verdict{Reason: r, RetryAfter: retry}
	switch v.Reason {
	case reason.None:
	case reason.Blocked, reason.Banned:
		s.refuse(fd, peer, v.Reason, counted, "")
		return
	default:
		// A rate or cap: answer 429 once the request is in, so the
		// client reads why instead of a reset.
		ls.open(fd, peer, false, v)
		return
	}
	if s.conns.Load() >= int64(s.opts.Limits.MaxConnections) {
		if !proxy {
			s.opts.Guard.Release(addr)
		}
		s.rejected.Add(1)
		writeRaw(fd, httpReject(503, reason.GlobalConnections, "server at its connection limit", 0))
		unix.Close(fd)
		s.emit(audit.Event{Event: "conn_rejected", Severity: audit.Warning, IP: addr.String(), PeerIP: addr.String(),
			CountedPrefix: s.opts.Guard.Counted(addr).String(), Stage: audit.StageAccept,
			Reason: reason.GlobalConnections.String(), Code: 503})
		return
	}
	ls.open(fd, peer, !proxy, Verdict{})
}

// refuse resets a socket at accept without reading from it: SO_LINGER 0
// sends RST and leaves no TIME_WAIT behind, which matters under a flood.
func (s *Server) refuse(fd int, peer netip.AddrPort, r reason.Reason, counted netip.Prefix, detail string) {
	s.rejected.Add(1)
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(fd)
	addr := peer.Addr()
	if !counted.IsValid() {
		counted = s.opts.Guard.Counted(addr)
	}
	s.emit(audit.Event{Event: "conn_rejected", Severity: audit.Warning, IP: addr.String(), PeerIP: addr.String(),
		CountedPrefix: counted.String(), Stage: audit.StageAccept, Reason: r.String(), Detail: detail})
}

// open registers an accepted socket in the handshake state. slot says it
// holds a Guard slot for the peer; a non-zero pending verdict is answered
// (429) as soon as the request is complete.
func (ls *loopState) open(fd int, peer netip.AddrPort, slot bool, pending Verdict) {
	s := ls.srv
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, s.opts.Limits.SendBufferBytes)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	gen, err := ls.loop.Add(fd, reactor.Readable|reactor.Events(unix.EPOLLRDHUP))
	if err != nil {
		if slot {
			s.opts.Guard.Release(peer.Addr())
		}
		unix.Close(fd)
		return
	}
	for fd >= len(ls.conns) {
		ls.conns = append(ls.conns, make([]*conn, len(ls.conns)+1024)...)
	}
	now := ls.loop.Now
	c := &conn{
		fd:     int32(fd),
		gen:    gen,
		id:     s.nextID.Add(1),
		opened: now.UnixNano(),
		state:  stateHandshake,
	}
	c.setPeer(peer.Addr())
	if slot {
		c.flags |= flagSlot
	}
	if pending.Reason != reason.None {
		c.closeReason = pending.Reason
		c.nextPing = int64(pending.RetryAfter)
	}
	ls.conns[fd] = c
	ls.nconns++
	s.conns.Add(1)
	c.schedule(ls, now.Add(s.opts.Limits.HandshakeTimeout))
}

// maxSpareBacklogs bounds the drained backlogs a loop keeps for reuse.
const maxSpareBacklogs = 1024

// takeBacklog returns an empty backlog, reused when one is spare.
func (ls *loopState) takeBacklog() *backlog {
	if n := len(ls.backlogs); n > 0 {
		b := ls.backlogs[n-1]
		ls.backlogs[n-1] = nil
		ls.backlogs = ls.backlogs[:n-1]
		return b
	}
	return &backlog{}
}

// returnBacklog empties b and keeps it for reuse; one grown by a slow
// consumer's queue gives its frame slice up.
func (ls *loopState) returnBacklog(b *backlog) {
	clear(b.frames)
	frames := b.frames[:0]
	if cap(frames) > 16 {
		frames = nil
	}
	*b = backlog{frames: frames}
	if len(ls.backlogs) < maxSpareBacklogs {
		ls.backlogs = append(ls.backlogs, b)
	}
}

// markDirty queues c for the end-of-batch flush.
func (ls *loopState) markDirty(c *conn) {
	if !c.dirty {
		c.dirty = true
		ls.dirty = append(ls.dirty, c)
	}
}

// flush writes what every dirty connection has queued: one write or one
// writev per connection, however many frames were queued in this batch.
func (ls *loopState) flush() {
	for i := 0; i < len(ls.dirty); i++ {
		c := ls.dirty[i]
		ls.dirty[i] = nil
		c.dirty = false
		if c.fd >= 0 {
			c.write(ls)
		}
	}
	ls.dirty = ls.dirty[:0]
}

// deliver queues publication p to every subscriber of its topic on this loop.
func (ls *loopState) deliver(p *publication) int {
	ts := ls.topics[p.topic]
	if ts == nil {
		return 0
	}
	n := 0
	// Walk backwards: a subscriber closed as a slow consumer is swap-removed
	// from ts.conns, which only moves an element already visited.
	for i := len(ts.conns) - 1; i >= 0; i-- {
		if i >= len(ts.conns) {
			continue
		}
		c := ts.conns[i]
		if p.filter != nil && !p.filter.allows(c.id) {
			continue
		}
		if c.enqueueEvent(ls, p.frameFor(c, ts), ts) {
			n++
		}
	}
	ls.flush()
	return n
}

func (ls *loopState) disconnectPrefix(p netip.Prefix, why string) int {
	n := 0
	for _, c := range ls.conns {
		if c != nil && c.fd >= 0 && p.Contains(c.client()) && !ls.srv.opts.Guard.Exempt(c.client()) {
			c.fail(ls, 1008, reason.Banned, why)
			n++
		}
	}
	ls.flush()
	return n
}

func (ls *loopState) beginShutdown() {
	ls.shuttingDown = true
	if ls.lfd >= 0 {
		ls.loop.Remove(ls.lfd)
		ls.lfd = -1
	}
	for _, c := range ls.conns {
		if c == nil || c.fd < 0 {
			continue
		}
		if c.state == stateOpen {
			c.closeWith(ls, 1001, reason.ShuttingDown, "server shutting down", 2*time.Second)
		} else if c.state == stateHandshake {
			c.finish(ls, reason.ShuttingDown, 0, false)
		}
	}
	ls.flush()
}

func (ls *loopState) forceClose() {
	for _, c := range ls.conns {
		if c != nil && c.fd >= 0 {
			c.finish(ls, reason.ShuttingDown, 1001, true)
		}
	}
}
