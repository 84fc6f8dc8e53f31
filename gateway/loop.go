package gateway

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/reactor"
	"github.com/portcullis-gw/portcullis/policy/decision"
	"github.com/portcullis-gw/portcullis/policy/tokens"
)

// readBufSize is the per-loop read buffer shared by all its connections.
const readBufSize = 64 << 10

// acceptBatch bounds the accepts handled per readiness event, for fairness:
// in a connect burst a turn takes this many, the listener (level-triggered)
// reports the rest again next turn, and the connections ready meanwhile are
// served in between.
const acceptBatch = 64

// Accept back-off while the process is out of file descriptors: the
// listener leaves epoll for acceptPauseMin, doubling up to acceptPauseMax
// while every resume finds descriptors still exhausted.
const (
	acceptPauseMin = 250 * time.Millisecond
	acceptPauseMax = time.Second
)

// An exhaustion episode ends once the process has fdHeadroom spare
// descriptors and no accept has failed for want of one for fdQuiet: a
// freed descriptor taken at once by the next connection, or a backlog of
// waiting connections drained in a burst, does not end and restart it.
const (
	fdHeadroom = 8
	fdQuiet    = 2 * time.Second
)

// shedBatch bounds the waiting connections reset in one go while out of
// descriptors: the listen backlog (reactor.Listen's 4096) drains at once.
const shedBatch = 4096

// refusalHolder is the part of a Guard that bounds the refused sockets of
// an address left open until their refusal is answered (policy/guard
// implements it). Without it every refused socket is reset at accept.
type refusalHolder interface {
	// HoldRefused counts a refused socket from addr that stays open until
	// it is answered, or reports false when the address already has as
	// many as it may: the socket is then reset. Each true is paired with
	// one ReleaseRefused.
	HoldRefused(addr netip.Addr) bool
	// ReleaseRefused gives back a socket held by HoldRefused.
	ReleaseRefused(addr netip.Addr)
}

// loopState is the gateway side of one reactor loop. Loop goroutine only,
// except hub.topicCount.
type loopState struct {
	srv  *Server
	loop *reactor.Loop
	iov  []unix.Iovec // conn.write's writev vector, reused
	// sending are the connections whose sends wait in the loop's ring,
	// each at the index its send is tagged with (conn.queueWrite);
	// onSent is ls.sent, bound once.
	sending []*conn
	onSent  func(reactor.Completion)
	ringErr error // why the loop has no ring although one was asked for
	// flushing is set while flushUntil runs: a flush that the handling
	// of a send's result sets off does nothing, and what it would have
	// written is taken by the flush in progress, whose walk of dirty
	// reaches the end of the list as it grows.
	flushing bool
	lfd      int    // listener; -1 once closed
	lgen     uint32 // the listener's reactor generation, for its back-off timer

	held refusalHolder // the Guard's, nil if it has none
	// acceptPause is the current back-off of the listener while the
	// process is out of file descriptors (0: accepting normally);
	// acceptPaused says the listener is out of epoll until its timer;
	// listenerAt is that timer's time (unix ns), 0 if none, so that a
	// superseded one is ignored.
	acceptPause  time.Duration
	acceptPaused bool
	listenerAt   int64

	conns   []*conn // by fd
	nconns  int
	readBuf []byte
	hub     hub     // this loop's topics and their subscribers
	dirty   []*conn // connections with queued frames to flush
	closing []int32 // sockets of finished connections, out of epoll, to close at the end of the turn (closing.go)
	hungUp  []*conn // connections whose peer hung up, out of epoll, to read and finish at the end of the turn (closing.go)
	scratch []byte  // reply encoding buffer
	// wamp holds the WAMP session state of the connections that have any
	// (a v1 PREFIX table, a v2 session awaiting its ticket), by conn id;
	// an established v2 session or a plain v1 one has no entry.
	wamp map[uint64]*wampState
	// older holds, by conn id, the grants of tokens a connection redeemed
	// before its newest (conn.grant), oldest first; most connections
	// redeem one token and have no entry.
	older map[uint64][]*tokens.Grant
	// backlogs are drained write backlogs, kept for reuse (see
	// takeBacklog); sparesLow is the fewest there were since the last trim,
	// and sparesAt when the next one is due (trimSpares).
	backlogs  []*backlog
	sparesLow int
	sparesAt  int64
	// redeeming holds, by conn id, the connections waiting for a token
	// source that redeems off the loop (redeem_async.go), with the
	// messages they sent meanwhile; redeemsInFlight counts this loop's
	// redemptions not yet answered; current is the message being handled
	// and replaying says it is one handled again after its redemption.
	redeeming       map[uint64]*redeemWait
	redeemsInFlight int
	redeemQueue     []redeemJob   // redemptions waiting for one of the redeemSlots slots, oldest first
	redeemSlots     int           // how many redemptions may be in flight (redeemSlots)
	redeemWaitMax   time.Duration // the longest a queued one may wait (redeemQueueTimeout); 0: no bound
	current         []byte
	replaying       bool

	upgrader upgrader

	shuttingDown bool
	drainNext    int // index into conns where a drain's next closeOpen looks (drain.go)
}

func newLoopState(s *Server, id int, lfd int) (*loopState, error) {
	ls := &loopState{
		srv:     s,
		lfd:     lfd,
		readBuf: make([]byte, readBufSize),
		hub:     hub{topics: make(map[string]*topicSubs)},
	}
	ls.redeemSlots = redeemSlots(s.opts.Tokens, s.opts.Loops)
	ls.redeemWaitMax = redeemQueueTimeout(s.opts.Tokens)
	loop, err := reactor.New(id, ls)
	if err != nil {
		return nil, err
	}
	ls.loop = loop
	ls.onSent = ls.sent
	if !s.opts.WriteSyscalls {
		ls.ringErr = loop.UseRing() // reported by Server.reportRings
	}
	ls.upgrader.init(ls)
	ls.held, _ = s.opts.Guard.(refusalHolder)
	if lfd < 0 {
		return ls, nil // wss://: the TLS front accepts (tls.go)
	}
	gen, err := loop.Add(lfd, reactor.Readable)
	if err != nil {
		return nil, err
	}
	ls.lgen = gen
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
	if ev&reactor.HangUp != 0 && c.fd >= 0 && !c.hungUp {
		ls.hangUp(c) // read and finished at the end of the turn (closing.go)
		return
	}
	if ev&reactor.Writable != 0 {
		c.onWritable(ls)
	}
	if ev&(reactor.Readable|reactor.HangUp) != 0 && c.fd >= 0 {
		c.onReadable(ls)
	}
	// What the event queued is written at the end of the turn (EndTurn).
}

// OnTimer implements reactor.Handler.
func (ls *loopState) OnTimer(fd int, at int64) {
	if fd == ls.lfd {
		if at == ls.listenerAt {
			ls.listenerAt = 0
			ls.onListenerTimer()
		}
		return
	}
	c := ls.conn(fd)
	if c == nil || c.timerAt != at {
		return // superseded timer
	}
	c.timerAt = 0
	c.onTimer(ls, ls.loop.Now)
}

// EndTurn implements reactor.TurnEnder: it reads and finishes the
// connections whose peers hung up (readHungUp), writes what the turn queued
// (flushUntil), then closes the sockets of the connections the turn
// finished (closeDeferred).
func (ls *loopState) EndTurn(deadline time.Time) bool {
	more := ls.readHungUp(deadline)
	more = ls.flushUntil(deadline) || more
	ls.trimSpares(ls.loop.Now.UnixNano())
	return ls.closeDeferred(deadline) || more
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
		ls.loop.Sys.Accept++
		fd, peer, err := s.fds.accept(ls.lfd)
		if err != nil {
			if err == unix.EMFILE || err == unix.ENFILE {
				ls.outOfFDs(err)
			}
			// EAGAIN, EINTR, or an error of one connection that aborted
			// before it was accepted: the next readiness event retries.
			return
		}
		s.accepted.Add(1)
		if ls.acceptPause != 0 || s.fds.short.Load() {
			ls.acceptedAgain()
		}
		if ls.shuttingDown {
			ls.loop.Sys.Close++
			_ = reactor.Close(fd)
			continue
		}
		ls.admit(fd, peer)
	}
}

// admit runs the accept stage of the pipeline (pipeline step 1,
// docs/ARCHITECTURE.md) for a new socket and acts on its decision: blocked
// and banned addresses are reset before a byte is read; over a rate or a
// connection cap the request is read and answered (see refuseLater); at
// max_connections the 503 is written at once.
func (ls *loopState) admit(fd int, peer netip.AddrPort) {
	s := ls.srv
	addr := peer.Addr()
	proxy := ls.rules().clientIP.Trusted(addr)
	d := s.admission(addr, proxy, ls.loop.Now)
	switch d.Why() {
	case reason.None:
		if s.conns.Load() >= int64(ls.rules().limits.MaxConnections) {
			if !proxy {
				s.opts.Guard.Release(addr)
			}
			ls.countReset(true)
			s.resetAtAccept(fd, peer, decision.Deny(reason.GlobalConnections), "", true)
			return
		}
		ls.open(fd, peer, !proxy, d)
	case reason.Blocked, reason.Banned, reason.ProxyHeader:
		ls.countReset(false)
		s.resetAtAccept(fd, peer, d, "", false)
	case reason.AuditUnavailable, reason.ClusterUnavailable:
		if s.opts.Guard.Exempt(addr) {
			// An allow-listed address has no count and is always answered.
			ls.open(fd, peer, false, d)
			return
		}
		ls.refuseLater(fd, peer, d)
	default:
		ls.refuseLater(fd, peer, d)
	}
}

// admission is the accept stage's decision for a socket from addr (proxy:
// addr is a trusted proxy, whose clients are limited one by one once the
// handshake names them). Admitted, it holds a Guard slot for addr unless
// proxy; refused, nothing. Safe for concurrent use (the TLS front calls it
// from its accept goroutines).
func (s *Server) admission(addr netip.Addr, proxy bool, now time.Time) decision.Decision {
	if s.opts.ProxyProtocol && !proxy {
		return decision.Deny(reason.ProxyHeader).WithMessage("PROXY protocol required; peer is not a trusted proxy")
	}
	if !s.opts.AuditHealthy() {
		// fail_closed: nobody is admitted while refusals cannot be
		// recorded; answered 503 once the request is in, within the same
		// allowance of waiting refused sockets per address.
		return decision.Deny(reason.AuditUnavailable).WithRetry(5 * time.Second)
	}
	if s.opts.ClusterHealthy != nil && !s.opts.ClusterHealthy() {
		// on_redis_down: refuse, answered like fail_closed above.
		return decision.Deny(reason.ClusterUnavailable).WithRetry(5 * time.Second)
	}
	r, retry, counted := s.opts.Guard.Admit(addr, !proxy, now)
	if r != reason.None {
		return decision.Deny(r).WithRetry(retry).WithCounted(counted)
	}
	return decision.Allow()
}

// refuseLater handles a socket refused for a rate or cap. A few per
// address (policy/ratelimit.RefusedAllowance) stay open, counted against
// the address's connection cap and against max_connections, until the
// request is in and the refusal can be answered with a 429 the client
// reads; the strike comes with that answer. Beyond them, or at
// max_connections, the socket is reset now without a byte read, audited,
// and struck now: a burst of silent sockets is counted as it arrives,
// not when the handshake timeout would have fired.
func (ls *loopState) refuseLater(fd int, peer netip.AddrPort, d decision.Decision) {
	s := ls.srv
	addr := peer.Addr()
	detail := "reset at accept: the server is at its connection limit"
	if s.conns.Load() < int64(ls.rules().limits.MaxConnections) {
		if d.Reason != reason.GlobalConnections && ls.held != nil && ls.held.HoldRefused(addr) {
			ls.open(fd, peer, true, d)
			return
		}
		detail = "reset at accept: too many refused connections of this address await their answer"
		if d.Reason == reason.GlobalConnections {
			detail = "reset at accept: the per-address limiter table is full"
		}
	}
	ls.countReset(false)
	s.resetAtAccept(fd, peer, d, detail, false)
	s.opts.Guard.Strike(addr, d.Reason, ls.loop.Now)
}

// countReset counts the syscalls of a resetAtAccept on this loop: the
// close, and the answer's write.
func (ls *loopState) countReset(answer bool) {
	ls.loop.Sys.Close++
	if answer {
		ls.loop.Sys.Write++
	}
}

// releaseSlot gives back what c's flagSlot stands for: a refused socket
// waiting for its answer (still in the handshake with a pending refusal)
// holds a refusal hold, any other an admission slot of the Guard.
func (ls *loopState) releaseSlot(c *conn) {
	if c.state == stateHandshake && c.closeReason != reason.None && ls.held != nil {
		ls.held.ReleaseRefused(c.client())
		return
	}
	ls.srv.opts.Guard.Release(c.client())
}

// resetAtAccept is the accept stage's answer to refusal d of a socket that
// has no connection yet: it is closed without a byte read, reset
// (SO_LINGER 0: no TIME_WAIT under a flood), or with answer, after d's
// HTTP answer written once, best effort; and it is audited. The strike,
// if any, is the caller's.
func (s *Server) resetAtAccept(fd int, peer netip.AddrPort, d decision.Decision, detail string, answer bool) {
	code := 0
	if answer {
		writeRaw(fd, httpReject(d))
		code = d.Status
	} else {
		_ = reactor.SetResetOnClose(fd)
	}
	_ = reactor.Close(fd)
	s.rejectedAtAccept(peer, d, detail, code)
}

// rejectedAtAccept audits refusal d of a connection from peer at the
// accept stage (conn_rejected, stage accept); code is the HTTP status
// written, 0 for none.
func (s *Server) rejectedAtAccept(peer netip.AddrPort, d decision.Decision, detail string, code int) {
	s.rejected.Add(1)
	addr := peer.Addr()
	counted := d.Counted
	if !counted.IsValid() {
		counted = s.opts.Guard.Counted(addr)
	}
	if detail == "" && d.Reason == reason.ProxyHeader {
		detail = d.Message
	}
	s.emit(audit.Event{Event: audit.KindConnRejected, Severity: audit.Warning, IP: addr, PeerIP: addr,
		CountedPrefix: counted, Stage: audit.StageAccept, Reason: d.Why(), Detail: detail, Code: code})
}

// open registers an accepted socket in the handshake state. slot says it
// holds a Guard slot for the peer (with a pending refusal: a refusal
// hold); a pending refusal (pending not allowed) is answered (429, 503)
// as soon as the request is complete.
func (ls *loopState) open(fd int, peer netip.AddrPort, slot bool, pending decision.Decision) {
	s := ls.srv
	lim := &ls.rules().limits
	_ = reactor.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, lim.SendBufferBytes)
	_ = reactor.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	refused := !pending.Allowed()
	gen, err := ls.loop.Add(fd, reactor.Readable|reactor.Events(unix.EPOLLRDHUP))
	if err != nil {
		if slot && refused {
			ls.held.ReleaseRefused(peer.Addr())
		} else if slot {
			s.opts.Guard.Release(peer.Addr())
		}
		ls.loop.Sys.Close++
		_ = reactor.Close(fd)
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
	if refused {
		// Kept until the request is in: the reason in closeReason, the
		// Retry-After in nextPing (unused before the upgrade).
		c.closeReason = pending.Why()
		c.nextPing = int64(pending.Retry)
	}
	ls.conns[fd] = c
	ls.nconns++
	s.conns.Add(1)
	c.schedule(ls, now.Add(lim.HandshakeTimeout))
}

// fdShortage is the process-wide state of file descriptor exhaustion: a
// reserve descriptor that is given up to accept and reset the waiting
// connections, and the current episode, logged and audited once when it
// starts and once when it ends.
type fdShortage struct {
	short atomic.Bool   // an episode is in progress
	last  atomic.Int64  // latest accept that failed for want of a descriptor, unix ns
	shed  atomic.Uint64 // connections reset for want of a descriptor in this episode

	// mu guards the reserve. The loops' accepts hold it for reading, so
	// that no loop takes the descriptor a shed frees between closing the
	// reserve and retaking it: a reserve lost that way would leave the
	// next clients waiting in the backlog, neither answered nor reset.
	mu      sync.RWMutex
	reserve int       // an open /dev/null while held; guarded by mu
	held    bool      // reserve is open; guarded by mu
	since   time.Time // the episode's start; guarded by mu
}

// accept is a loop's accept4 on lfd, never inside a shed's window (mu).
func (f *fdShortage) accept(lfd int) (int, netip.AddrPort, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return reactor.Accept(lfd)
}

// openReserve takes the reserve descriptor.
func (f *fdShortage) openReserve() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.retakeLocked() {
		return fmt.Errorf("open the reserve descriptor: %w", unix.EMFILE)
	}
	return nil
}

// retakeLocked opens the reserve if it is not held and reports whether it
// is. Requires that f.mu is held.
func (f *fdShortage) retakeLocked() bool {
	if !f.held {
		if fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			f.reserve, f.held = fd, true
		}
	}
	return f.held
}

// closeReserve gives the reserve descriptor back for good.
func (f *fdShortage) closeReserve() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held {
		unix.Close(f.reserve)
		f.held = false
	}
}

// shedOn frees the reserve descriptor and with it accepts and resets (no
// byte read or written) up to max connections waiting on listener lfd,
// then takes the reserve again. It returns how many it reset.
func (f *fdShortage) shedOn(lfd, max int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held {
		unix.Close(f.reserve)
		f.held = false
	}
	n := 0
	for n < max {
		fd, _, err := reactor.Accept(lfd)
		if err != nil {
			break // EAGAIN: none waiting; EMFILE: the freed descriptor was taken meanwhile
		}
		_ = reactor.SetResetOnClose(fd)
		_ = reactor.Close(fd)
		n++
	}
	f.retakeLocked()
	return n
}

// headroom reports whether the process can open fdHeadroom descriptors
// besides the reserve (duplicates of it, closed at once).
func (f *fdShortage) headroom() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.retakeLocked() {
		return false
	}
	var dups [fdHeadroom]int
	n := 0
	for ; n < fdHeadroom; n++ {
		d, err := unix.FcntlInt(uintptr(f.reserve), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			break
		}
		dups[n] = d
	}
	for _, d := range dups[:n] {
		unix.Close(d)
	}
	return n == fdHeadroom
}

// outOfFDs handles an accept that failed for want of a descriptor: it
// starts an episode (logged and audited once, critical), resets the
// waiting connections with the reserve descriptor so that their clients
// get an answer instead of a hang, and takes the listener out of epoll for
// a back-off: level-triggered, it would otherwise report the same waiting
// connection again and again and spin the loop.
func (ls *loopState) outOfFDs(err error) {
	s := ls.srv
	f := &s.fds
	now := ls.loop.Now
	f.last.Store(now.UnixNano())
	f.mu.Lock()
	started := !f.short.Load()
	if started {
		f.short.Store(true)
		f.since = now
		f.shed.Store(0)
	}
	f.mu.Unlock()
	if started {
		s.opts.Log.WithError(err).Error("accept: out of file descriptors; new connections are reset until descriptors free up")
		s.emit(audit.Event{Time: now, Event: audit.KindFDExhausted, Severity: audit.Critical, Stage: audit.StageSystem,
			Reason: reason.FDExhausted, Detail: audit.Cap("accept failed: " + err.Error() +
				"; new connections are reset at accept and the listener backs off until descriptors free up")})
	}
	if n := f.shedOn(ls.lfd, shedBatch); n > 0 {
		f.shed.Add(uint64(n))
		s.accepted.Add(uint64(n))
		s.rejected.Add(uint64(n))
	}
	ls.pauseAccept(now)
}

// pauseAccept takes the listener out of epoll until its back-off timer.
func (ls *loopState) pauseAccept(now time.Time) {
	ls.acceptPause = min(max(2*ls.acceptPause, acceptPauseMin), acceptPauseMax)
	if !ls.acceptPaused {
		if err := ls.loop.Detach(ls.lfd); err != nil {
			ls.srv.opts.Log.WithError(err).Error("accept: cannot pause the listener")
			return
		}
		ls.acceptPaused = true
	}
	ls.listenerTimer(now.Add(ls.acceptPause))
}

// listenerTimer sets the listener's one live timer for at.
func (ls *loopState) listenerTimer(at time.Time) {
	ls.listenerAt = at.UnixNano()
	ls.loop.SetTimer(ls.lfd, ls.lgen, at)
}

// onListenerTimer puts a paused listener back into epoll (waiting
// connections report at once) and, during an episode, checks whether it
// is over, again every acceptPauseMax until it is, even when nobody
// connects.
func (ls *loopState) onListenerTimer() {
	if ls.lfd < 0 || ls.shuttingDown {
		return
	}
	now := ls.loop.Now
	if ls.acceptPaused {
		if err := ls.loop.Attach(ls.lfd, reactor.Readable); err != nil {
			ls.srv.opts.Log.WithError(err).Error("accept: cannot resume the listener")
			ls.listenerTimer(now.Add(acceptPauseMax))
			return
		}
		ls.acceptPaused = false
	}
	if ls.srv.fds.short.Load() && !ls.tryRecover(now) && ls.listenerAt == 0 {
		ls.listenerTimer(now.Add(acceptPauseMax))
	}
}

// acceptedAgain runs for a socket accepted while this loop was backing off
// or an episode was in progress: the back-off ends, and so does the
// episode if descriptors are free again.
func (ls *loopState) acceptedAgain() {
	ls.acceptPause = 0
	if ls.srv.fds.short.Load() {
		ls.tryRecover(ls.loop.Now)
	}
}

// tryRecover ends the current episode if no accept has failed for fdQuiet
// and the process has headroom again, and reports whether the episode is
// over.
func (ls *loopState) tryRecover(now time.Time) bool {
	f := &ls.srv.fds
	if now.UnixNano()-f.last.Load() < int64(fdQuiet) || !f.headroom() {
		return false
	}
	ls.recovered(now)
	return true
}

// recovered ends the current episode (if another loop has not already):
// logged and audited once, with how many connections it reset.
func (ls *loopState) recovered(now time.Time) {
	s := ls.srv
	f := &s.fds
	f.mu.Lock()
	ended := f.short.Load()
	f.short.Store(false)
	since := f.since
	f.mu.Unlock()
	if !ended {
		return
	}
	shed := f.shed.Load()
	d := now.Sub(since)
	s.opts.Log.WithField("reset", shed).WithField("lasted", d.Round(time.Millisecond).String()).
		Info("accept: file descriptors available again")
	s.emit(audit.Event{Time: now, Event: audit.KindFDRecovered, Severity: audit.Info, Stage: audit.StageSystem,
		Reason: reason.FDExhausted, Count: int64(shed), DurationMS: d.Milliseconds(),
		Detail: fmt.Sprintf("file descriptors available again after %s; %d connections were reset meanwhile",
			d.Round(time.Millisecond), shed)})
}

// A publication to every subscriber on a loop takes a backlog for each of
// them and gives it back once its frame is written: at 5,000 subscribers
// that is 5,000 backlogs per publication. Keeping them (at most one per
// connection of the loop) spares the collector two objects per delivery;
// those no turn needed for spareTrimPeriod go back to the heap, so a
// gateway whose publications stopped holds none.
const spareTrimPeriod = 10 * time.Second

// takeBacklog returns an empty backlog, reused when one is spare.
func (ls *loopState) takeBacklog() *backlog {
	n := len(ls.backlogs)
	if n == 0 {
		return &backlog{}
	}
	b := ls.backlogs[n-1]
	ls.backlogs[n-1] = nil
	ls.backlogs = ls.backlogs[:n-1]
	ls.sparesLow = min(ls.sparesLow, n-1)
	return b
}

// returnBacklog empties b and keeps it for reuse while the loop has fewer
// spares than connections; one grown by a slow consumer's queue gives its
// frame slice up.
func (ls *loopState) returnBacklog(b *backlog) {
	clear(b.frames)
	frames := b.frames[:0]
	if cap(frames) > 16 {
		frames = nil
	}
	*b = backlog{frames: frames}
	if len(ls.backlogs) < ls.nconns {
		ls.backlogs = append(ls.backlogs, b)
	}
}

// trimSpares gives back to the heap the spare backlogs that no turn took
// since the last trim, at most once per spareTrimPeriod.
func (ls *loopState) trimSpares(now int64) {
	if now < ls.sparesAt {
		return
	}
	ls.sparesAt = now + int64(spareTrimPeriod)
	n := len(ls.backlogs)
	keep := n - min(ls.sparesLow, n)
	clear(ls.backlogs[keep:])
	ls.backlogs = ls.backlogs[:keep]
	if keep == 0 {
		ls.backlogs = nil // the slice itself was sized for a burst
	}
	ls.sparesLow = keep
}

// markDirty queues c for the end-of-batch flush.
func (ls *loopState) markDirty(c *conn) {
	if !c.dirty {
		c.dirty = true
		ls.dirty = append(ls.dirty, c)
	}
}

// flushYield is how many connections a flush writes to before it lets the
// other goroutines of its processor run (runtime.Gosched): a publication
// to thousands of subscribers takes milliseconds of writes, during which
// the admin API answering that publication, or the next one, would
// otherwise wait for a processor.
const flushYield = 256

// flushMin is how many dirty connections a turn writes to at least,
// whatever its budget, so that every turn makes progress.
const flushMin = 64

// flush writes what every dirty connection has queued: one send per
// connection, however many frames were queued since its last one.
func (ls *loopState) flush() {
	if ls.flushing {
		return // the flush in progress takes what is queued (flushing)
	}
	for ls.flushUntil(time.Time{}) {
	}
}

// flushUntil is flush within a turn's budget: past deadline (the zero time:
// none), after at least flushMin connections, it stops and reports that
// connections are left, to be written in the next turn (their frames keep
// their order: a connection's queue only grows at its tail). A connection
// waiting for EPOLLOUT is left to it: writing now would only meet a full
// socket buffer. With a ring the sends go out flushYield at a time, each
// batch in one io_uring_enter.
func (ls *loopState) flushUntil(deadline time.Time) bool {
	if ls.flushing {
		return len(ls.dirty) > 0
	}
	ls.flushing = true
	defer func() { ls.flushing = false }()
	i := 0
	for ; i < len(ls.dirty); i++ {
		if i >= flushMin && i%16 == 0 && !deadline.IsZero() && time.Now().After(deadline) {
			break
		}
		c := ls.dirty[i]
		ls.dirty[i] = nil
		c.dirty = false
		if c.fd >= 0 && !c.pollOut {
			c.send(ls)
		}
		if i%flushYield == flushYield-1 {
			ls.submit()
			runtime.Gosched()
		}
	}
	ls.submit()
	m := copy(ls.dirty, ls.dirty[i:])
	clear(ls.dirty[m:])
	ls.dirty = ls.dirty[:m]
	return m > 0
}

// submit sends what the flush queued in the loop's ring, in one
// io_uring_enter, and hands each result to its connection (sent). Should
// io_uring_enter fail, the loop drops its ring and the sends it did not
// take are queued again, for write(2).
func (ls *loopState) submit() {
	r := ls.loop.Ring()
	if r == nil || r.Queued() == 0 {
		return
	}
	ls.loop.Sys.IOURingEnter++
	err := r.Submit(ls.onSent)
	clear(ls.sending)
	ls.sending = ls.sending[:0]
	if err != nil {
		ls.srv.opts.Log.WithError(err).WithField("loop", ls.loop.ID).
			Error("io_uring failed: this event loop sends with write(2) and writev(2) from now on")
		ls.loop.DropRing()
	}
}

// sent handles one completion of the loop's ring.
func (ls *loopState) sent(done reactor.Completion) {
	c := ls.sending[done.Tag]
	if done.Err == reactor.ErrNotSubmitted {
		ls.markDirty(c)
		return
	}
	c.wrote(ls, done.N, done.Err)
}

// deliver queues publication p to every subscriber of its topic on this
// loop's hub; the turn's end writes them.
func (ls *loopState) deliver(p *Publication) int {
	ts := ls.hub.topics[p.topic]
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
		if c.enqueueEvent(ls, c.codec().eventFrame(c, p, ts), ts) {
			n++
		}
	}
	// Written at the end of the turn, with every other publication and
	// reply the turn queued for the same connections (EndTurn).
	return n
}

func (ls *loopState) disconnectPrefix(p netip.Prefix, why string) int {
	n := 0
	for _, c := range ls.conns {
		// A connection already closing (the one whose strike banned, see
		// banNow) keeps its close frame: a reset now could discard it
		// unread, and the client would see 1006 instead of 1008.
		if c != nil && c.fd >= 0 && c.state != stateClosing && p.Contains(c.client()) && !ls.srv.opts.Guard.Exempt(c.client()) {
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
			c.closeWith(ls, 1001, reason.ShuttingDown, "server shutting down", closeGrace)
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
