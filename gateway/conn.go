package gateway

import (
	"bytes"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/frame"
	"github.com/portcullis-gw/portcullis/gateway/reactor"
	"github.com/portcullis-gw/portcullis/policy/clientip"
	"github.com/portcullis-gw/portcullis/policy/decision"
	"github.com/portcullis-gw/portcullis/policy/ratelimit"
	"github.com/portcullis-gw/portcullis/policy/tokens"
)

type connState uint8

const (
	stateHandshake connState = iota
	stateOpen
	stateClosing // close frame queued or sent; waiting for flush and the peer
)

// conn is one client connection. An idle connection is this struct and its
// kernel socket: no goroutine, no buffer. Loop goroutine only.
type conn struct {
	fd     int32 // -1 once closed
	gen    uint32
	state  connState
	proto  proto
	dirty  bool
	missed uint8     // pings sent without a pong since
	flags  connFlags // close frame sent, slot held, rate-limit denials

	closeReason reason.Reason // why it closed, once known
	closeCode   uint16        // close code sent or received

	peer4 bool  // the peer is an IPv4 address (peerIP holds it mapped)
	unsup uint8 // unsupported requests in a row; see unsupported
	// pollOut says the socket is registered for EPOLLOUT: set when a write
	// leaves bytes queued, cleared when the queue drains, so epoll_ctl is
	// called on those two transitions only (it fits in padding).
	pollOut bool
	// hungUp says the peer hung up and the socket has left epoll: what
	// it sent last is read, and the connection finished, later in the
	// turn (readHungUp); it fits in padding too.
	hungUp bool
	msg    ratelimit.ConnBucket // message-rate bucket
	// held is how many inbound bytes this connection has charged to its
	// address's budget (Server.inbound): its parser's partial frame and
	// message, its WAMP v1 PREFIX table and stored topic strings.
	held int32

	id      uint64
	peerIP  [16]byte    // raw socket peer address; see peer
	proxied *netip.Addr // client address from a trusted proxy; nil: the peer
	opened  int64       // unix nanoseconds
	timerAt int64       // the live timer, 0 if none
	// nextPing is when the next ping is due; while closing, when to stop
	// waiting for the peer.
	nextPing int64

	hs *[]byte // pooled partial handshake; nil when none

	parser frame.Parser

	out *backlog // frames waiting for the socket; nil when none

	subs  subscriptions // the topics it is subscribed to on its loop's hub
	grant *tokens.Grant // newest token redeemed here; older ones in loopState.older
}

// Every open connection costs one conn: keep it at 192 bytes, a Go size
// class (the idle bar is 1 KiB per connection, its token included).
const connSize = 192

// backlog is what a connection has queued to write. Only a connection with
// frames waiting holds one; a drained backlog goes back to its loop's free
// list, so an idle connection carries a nil pointer instead of 40 bytes.
type backlog struct {
	frames   [][]byte // frames[0][off:] goes next
	off      int32
	bytes    int32 // bytes queued
	progress int64 // last write progress, unix nanoseconds
}

// queued is the number of bytes c has waiting for the socket.
func (c *conn) queued() int32 {
	if c.out == nil {
		return 0
	}
	return c.out.bytes
}

// push appends f to c's backlog, taking one from the loop if c has none.
func (c *conn) push(ls *loopState, f []byte) {
	if c.out == nil {
		c.out = ls.takeBacklog()
	}
	c.out.frames = append(c.out.frames, f)
	c.out.bytes += int32(len(f))
}

// dropBacklog gives c's backlog, drained or not, back to the loop.
func (c *conn) dropBacklog(ls *loopState) {
	if c.out != nil {
		ls.returnBacklog(c.out)
		c.out = nil
	}
}

// setPeer records the socket peer address.
func (c *conn) setPeer(a netip.Addr) {
	c.peerIP = a.As16()
	c.peer4 = a.Is4() || a.Is4In6()
}

// peer is the raw socket peer address.
func (c *conn) peer() netip.Addr {
	a := netip.AddrFrom16(c.peerIP)
	if c.peer4 {
		return a.Unmap()
	}
	return a
}

// connFlags packs small per-connection state into one byte.
type connFlags uint8

const (
	flagSent      connFlags = 1 << iota // close frame sent
	flagSlot                            // holds a per-address slot of the Guard for client() (refused, awaiting its answer: a refusal hold; see releaseSlot)
	flagProxyDone                       // the PROXY protocol header has been read
	flagBanned                          // a strike on this connection banned its address
	// the high nibble counts messages refused for rate since the last
	// accepted one
	deniedShift = 4
)

// denials is how many messages in a row were refused for rate.
func (f connFlags) denials() int { return int(f >> deniedShift) }

func (f *connFlags) setDenials(n int) {
	*f = *f&0x0f | connFlags(min(n, 15))<<deniedShift
}

var hsPool = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// client is the connection's client address: the peer, or the address a
// trusted proxy vouched for.
func (c *conn) client() netip.Addr {
	if c.proxied != nil {
		return *c.proxied
	}
	return c.peer()
}

// schedule asks for onTimer at t unless an earlier timer is already set.
func (c *conn) schedule(ls *loopState, t time.Time) {
	at := t.UnixNano()
	if c.timerAt != 0 && c.timerAt <= at {
		return
	}
	c.timerAt = at
	ls.loop.SetTimer(int(c.fd), c.gen, t)
}

func (c *conn) onTimer(ls *loopState, now time.Time) {
	lim := &ls.rules().limits
	ns := now.UnixNano()
	switch c.state {
	case stateHandshake:
		if ns-c.opened >= int64(lim.HandshakeTimeout) {
			c.refuse(ls, audit.Event{}, decision.Deny(reason.HandshakeTimeout), nil)
			return
		}
		c.schedule(ls, time.Unix(0, c.opened+int64(lim.HandshakeTimeout)))
	case stateOpen:
		if !c.parser.Idle() && ns >= c.messageDeadline(ls, lim) {
			c.messageTimedOut(ls, lim)
			return
		}
		if c.queued() > 0 && ns-c.out.progress >= int64(lim.WriteStallTimeout) {
			c.slowConsumer(ls, "no write progress")
			return
		}
		if ns >= c.nextPing {
			if c.missed >= 2 {
				c.fail(ls, 1008, reason.PingTimeout, "no pong to two pings")
				return
			}
			c.missed++
			c.enqueue(ls, pingFrame, false)
			c.msg.Settle(lim.MsgRate, time.Duration(ns-c.opened)) // keeps its clock from wrapping
			c.nextPing = ns + int64(lim.PingInterval)
		}
		c.rescheduleOpen(ls, lim)
	case stateClosing:
		if ns >= c.nextPing {
			c.finish(ls, c.closeReason, c.closeCode, true)
			return
		}
		c.schedule(ls, time.Unix(0, c.nextPing))
	}
}

func (c *conn) rescheduleOpen(ls *loopState, lim *Limits) {
	at := c.nextPing
	if c.queued() > 0 {
		if stall := c.out.progress + int64(lim.WriteStallTimeout); stall < at {
			at = stall
		}
	}
	if !c.parser.Idle() {
		at = min(at, c.messageDeadline(ls, lim))
	}
	c.schedule(ls, time.Unix(0, at))
}

var pingFrame = frame.AppendFrame(nil, ws.OpPing, nil)

// onReadable reads what the socket has (one read per readiness event; epoll
// is level-triggered, so more data reports again). It reports whether it
// read bytes and the connection is still open: another read may find more.
func (c *conn) onReadable(ls *loopState) bool {
	fd := int(c.fd)
	buf := ls.readBuf
	if c.state == stateHandshake && c.hs != nil {
		// handshake() rejects a request that reaches the cap, so there is
		// room here unless a reload lowered the cap meanwhile.
		hs := *c.hs
		buf = hs[len(hs):cap(hs)]
		room := ls.rules().limits.HandshakeBytes - len(hs)
		if room <= 0 {
			c.refuse(ls, audit.Event{}, decision.Deny(reason.HandshakeTooLarge), nil)
			return false
		}
		if len(buf) > room {
			buf = buf[:room]
		}
	}
	ls.loop.Sys.Read++
	n, err := reactor.Read(fd, buf)
	if err != nil {
		if err == unix.EAGAIN || err == unix.EINTR {
			return false
		}
		c.finish(ls, reason.ReadError, 1006, true)
		return false
	}
	if n == 0 {
		// EOF: the peer hung up.
		switch c.state {
		case stateHandshake:
			// Nobody is left to read an answer: audited and struck only.
			c.emit(ls, audit.Event{Event: audit.KindConnRejected, Severity: audit.Warning, Stage: audit.StageHandshake,
				Detail: "connection closed during handshake"}, reason.BadHandshake)
			c.finish(ls, reason.BadHandshake, 0, false)
		case stateClosing:
			c.finish(ls, c.closeReason, c.closeCode, false)
		default:
			c.finish(ls, reason.ClientClosed, 1006, false)
		}
		return false
	}
	switch c.state {
	case stateHandshake:
		if c.hs != nil {
			*c.hs = (*c.hs)[:len(*c.hs)+n]
			c.handshake(ls, *c.hs)
		} else {
			c.handshake(ls, buf[:n])
		}
	case stateOpen:
		if ls.srv.opts.Limits.BytesRate.PerSecond > 0 && !ls.srv.inbound.Take(c.counted(ls), n, ls.loop.Now) {
			c.overBytesRate(ls)
			return false
		}
		c.feed(ls, buf[:n])
	case stateClosing:
		// Draining until the peer's close or EOF; frames are ignored.
	}
	return c.fd >= 0
}

// feed runs the frame parser over freshly read bytes, then charges what
// the parser holds to the address's inbound budget and starts the clock of
// a message left unfinished.
func (c *conn) feed(ls *loopState, b []byte) {
	before, wasIdle := c.parser.Buffered(), c.parser.Idle()
	h := connFrames{c: c, ls: ls}
	rl := ls.rules()
	err := c.parser.Feed(b, &rl.frame, &h)
	switch {
	case c.fd < 0:
		return // finished while parsing: everything is released
	case err == nil && c.state == stateOpen:
		if !c.hold(ls, c.parser.Buffered()-before) {
			c.dropParser(ls, before)
			return
		}
		if !c.parser.Idle() && (wasIdle || h.done) {
			// A new frame or message is in progress: its clock starts now.
			c.parser.MarkStarted(c.sinceOpen(ls))
			c.schedule(ls, time.Unix(0, c.messageDeadline(ls, &rl.limits)))
		}
		return
	default:
		// Closing: nothing more is parsed, so the partial input goes now
		// (before is what the parser had charged).
		c.dropParser(ls, before)
	}
	if err != nil {
		if ce, ok := err.(*frame.CloseError); ok {
			r := reason.ProtocolError
			switch ce.Code {
			case ws.StatusInvalidFramePayloadData:
				r = reason.InvalidUTF8
			case ws.StatusMessageTooBig:
				r = reason.FrameTooLarge
				if ce.Reason == frame.ReasonMessageTooLarge {
					r = reason.MessageTooLarge
				}
			}
			c.refuse(ls, audit.Event{Detail: ce.Reason}, decision.Deny(r).Closing(uint16(ce.Code), ce.Reason), nil)
			return
		}
		// A handler error has already closed the connection.
	}
}

// connFrames adapts a conn to frame.Handler without allocating.
type connFrames struct {
	c    *conn
	ls   *loopState
	done bool // a data message completed in this Feed
}

// errStop stops the parser once the connection has stopped reading; it is
// not a protocol violation.
var errStop = errors.New("connection no longer open")

func (h *connFrames) OnMessage(op ws.OpCode, payload []byte) error {
	c, ls := h.c, h.ls
	h.done = true
	if c.state != stateOpen {
		return errStop
	}
	if !c.takeMessage(ls, "kept sending over the message rate", true) {
		if c.banNow(ls) || c.state != stateOpen {
			return errStop
		}
		return nil
	}
	if op != ws.OpText {
		c.refuse(ls, audit.Event{Detail: "binary frame"},
			decision.Deny(reason.Unsupported).Closing(1003, "binary frames are not supported"), nil)
		return errStop
	}
	c.handleMessage(ls, payload)
	if c.unsup&unsupThis != 0 {
		c.unsup &^= unsupThis
	} else {
		c.unsup = 0
	}
	if c.banNow(ls) || c.state != stateOpen {
		return errStop
	}
	return nil
}

// banNow closes the connection (1008) after its queued replies if one of
// its strikes banned its address; it reports whether it did.
func (c *conn) banNow(ls *loopState) bool {
	if c.flags&flagBanned == 0 {
		return false
	}
	c.flags &^= flagBanned
	c.closeWith(ls, 1008, reason.Banned, "banned", closeGrace)
	return true
}

// maxDenials is how many messages (or pings) in a row a client may send
// over its rate before it is closed with 1008.
const maxDenials = 10

// takeMessage takes one message (or ping) from the connection's message
// rate and reports whether it may be handled. Over the rate, a message is
// refused (audited, struck, and answered rate_limited when answered is
// set; a ping gets no pong and nothing else), and the one after
// maxDenials in a row closes the connection with 1008 (detail says why).
func (c *conn) takeMessage(ls *loopState, detail string, answered bool) bool {
	if c.msg.Allow(ls.rules().limits.MsgRate, time.Duration(ls.loop.Now.UnixNano()-c.opened)) {
		c.flags.setDenials(0)
		return true
	}
	n := c.flags.denials() + 1
	c.flags.setDenials(n)
	switch {
	case n > maxDenials:
		c.refuse(ls, audit.Event{Detail: detail}, decision.Deny(reason.MsgRate).Closing(1008, "message rate exceeded"), nil)
	case answered:
		c.refuse(ls, audit.Event{}, decision.Deny(reason.MsgRate), nil)
	}
	return false
}

func (h *connFrames) OnControl(op ws.OpCode, payload []byte) error {
	c, ls := h.c, h.ls
	switch op {
	case ws.OpPing:
		// A ping costs a message of the rate: over it there is no pong,
		// and a client that keeps pinging is closed.
		if !c.takeMessage(ls, "kept pinging over the message rate", false) {
			if c.state != stateOpen {
				return errStop
			}
			return nil
		}
		c.enqueue(ls, frame.AppendFrame(make([]byte, 0, len(payload)+2), ws.OpPong, payload), false)
	case ws.OpPong:
		c.missed = 0
	case ws.OpClose:
		code := uint16(1005)
		if len(payload) >= 2 {
			code = uint16(payload[0])<<8 | uint16(payload[1])
		}
		c.closeCode = code
		c.closeReason = reason.ClientClosed
		echo := code
		if echo == 1005 {
			echo = 1000
		}
		c.closeWith(ls, echo, reason.ClientClosed, "", closeGrace)
		return errStop
	}
	return nil
}

// enqueue queues a frame for the end-of-batch flush. shared frames are
// broadcast frames referenced, never copied or mutated. It returns false if
// the connection cannot take it (closing, or dropped as a slow consumer).
func (c *conn) enqueue(ls *loopState, f []byte, shared bool) bool {
	if c.fd < 0 || c.state != stateOpen {
		return false
	}
	// The cap bounds the backlog: one frame larger than the cap still goes
	// out to a client that keeps up (the defaults let a 1 MiB message
	// through a 256 KiB queue).
	q := c.queued()
	if q > 0 && int(q)+len(f) > ls.rules().limits.WriteQueueBytes {
		c.slowConsumer(ls, "write queue full")
		return false
	}
	c.push(ls, f)
	if q == 0 {
		c.out.progress = ls.loop.Now.UnixNano()
	}
	ls.markDirty(c)
	return true
}

// write sends queued frames: write for one, writev for several (every
// frame queued since the last write: the frames of all the publications and
// replies of a turn go out in one syscall), then handles the result
// (wrote). The flush sends through the loop's ring instead where it has
// one (queueWrite).
func (c *conn) write(ls *loopState) {
	if c.out == nil || len(c.out.frames) == 0 || c.fd < 0 {
		c.wantWritable(ls, false)
		return
	}
	fd := int(c.fd)
	b := c.out
	var n int
	var err error
	if len(b.frames) == 1 {
		ls.loop.Sys.Write++
		n, err = reactor.Write(fd, b.frames[0][b.off:])
	} else {
		iov := b.sendable()
		first := iov[0]
		iov[0] = first[b.off:]
		ls.loop.Sys.Writev++
		n, ls.iov, err = reactor.Writev(fd, iov, ls.iov)
		iov[0] = first
	}
	c.wrote(ls, n, err)
}

// send sends c's queue: into the loop's ring where it has one
// (queueWrite), else at once (write).
func (c *conn) send(ls *loopState) {
	if ls.loop.Ring() != nil {
		c.queueWrite(ls)
	} else {
		c.write(ls)
	}
}

// queueWrite is write through the loop's ring: the send goes out with the
// flush's others in one io_uring_enter (loopState.submit), which hands its
// result to wrote. Until then nothing may change c's queue but its growth
// at the tail.
func (c *conn) queueWrite(ls *loopState) {
	if c.out == nil || len(c.out.frames) == 0 || c.fd < 0 {
		c.wantWritable(ls, false)
		return
	}
	r := ls.loop.Ring()
	if r.Queued() == reactor.RingEntries {
		ls.submit()
		if r = ls.loop.Ring(); r == nil {
			c.write(ls) // the submit failed and dropped the ring
			return
		}
	}
	b := c.out
	iov := b.sendable()
	first := iov[0]
	iov[0] = first[b.off:]
	err := r.Queue(int(c.fd), iov, uint64(len(ls.sending)))
	iov[0] = first
	if err != nil {
		c.write(ls) // ErrRingFull, which the submit above rules out
		return
	}
	ls.sending = append(ls.sending, c)
	if len(iov) == 1 {
		ls.loop.Sys.RingSend++
	} else {
		ls.loop.Sys.RingSendmsg++
	}
}

// sendable is the head of the queue one send takes: 64 frames at most.
func (b *backlog) sendable() [][]byte {
	if len(b.frames) > 64 {
		return b.frames[:64]
	}
	return b.frames
}

// wrote handles the result of a send of c's queue: n bytes went out, and
// err is the send's error. On a short write the rest waits for EPOLLOUT:
// the socket is registered for it when bytes are left, and unregistered
// once they are written (pollOut tracks it), and the write stall timer is
// armed on that transition only.
func (c *conn) wrote(ls *loopState, n int, err error) {
	if c.fd < 0 {
		return
	}
	if err != nil && err != unix.EAGAIN && err != unix.EINTR {
		c.finish(ls, reason.ReadError, 1006, true)
		return
	}
	if n > 0 {
		c.out.progress = ls.loop.Now.UnixNano()
		c.consume(ls, n)
	}
	wantOut := c.queued() > 0
	if wantOut {
		if !c.pollOut && c.state == stateOpen {
			c.rescheduleOpen(ls, &ls.rules().limits)
		}
		c.wantWritable(ls, true)
	} else {
		c.wantWritable(ls, false)
		if c.state == stateClosing && c.flags&flagSent != 0 {
			c.afterCloseSent(ls)
		}
	}
}

// wantWritable registers the socket for EPOLLOUT (on) or not, calling
// epoll_ctl only when that changes.
func (c *conn) wantWritable(ls *loopState, on bool) {
	if c.pollOut == on || c.fd < 0 {
		return
	}
	if c.hungUp {
		c.pollOut = on // out of epoll: rejoin asks for it (rejoin)
		return
	}
	if err := ls.loop.Modify(int(c.fd), c.gen, c.events(on)); err != nil {
		return // the socket is gone; its hang-up or a failed write finishes it
	}
	c.pollOut = on
}

// events is what the socket is registered in epoll for, with EPOLLOUT
// when out.
func (c *conn) events(out bool) reactor.Events {
	ev := reactor.Readable | reactor.Events(unix.EPOLLRDHUP)
	if out {
		ev |= reactor.Writable
	}
	return ev
}

// consume drops n written bytes from the head of the queue; a drained
// backlog goes back to the loop.
func (c *conn) consume(ls *loopState, n int) {
	b := c.out
	b.bytes -= int32(n)
	k := 0
	for n > 0 && k < len(b.frames) {
		rest := len(b.frames[k]) - int(b.off)
		if n < rest {
			b.off += int32(n)
			break
		}
		n -= rest
		b.off = 0
		k++
	}
	if k == len(b.frames) {
		c.dropBacklog(ls)
		return
	}
	if k > 0 {
		m := copy(b.frames, b.frames[k:])
		clear(b.frames[m:])
		b.frames = b.frames[:m]
	}
}

func (c *conn) onWritable(ls *loopState) {
	c.write(ls)
}

// slowConsumer applies the disconnect policy: a close frame, then a reset so
// no orphaned socket keeps kernel memory.
func (c *conn) slowConsumer(ls *loopState, detail string) {
	ls.srv.slowConsumers.Add(1)
	d := decision.Deny(reason.SlowConsumer)
	d.Reset = true
	c.refuse(ls, audit.Event{Detail: detail}, d, nil)
}

// fail sends a close frame if it fits in the socket right now and resets
// the connection at once.
func (c *conn) fail(ls *loopState, code uint16, r reason.Reason, text string) {
	if c.fd < 0 {
		return
	}
	if c.state == stateOpen || c.state == stateClosing {
		if c.flags&flagSent == 0 {
			ls.loop.Sys.Write++
			writeRaw(int(c.fd), frame.AppendClose(nil, ws.StatusCode(code), text))
		}
	}
	c.finish(ls, r, code, true)
}

// closeWith starts the closing handshake: queue a close frame, flush, then
// half-close and wait up to grace for the peer before closing.
func (c *conn) closeWith(ls *loopState, code uint16, r reason.Reason, text string, grace time.Duration) {
	if c.fd < 0 || c.state != stateOpen {
		return
	}
	if c.closeReason == reason.None {
		c.closeReason = r
	}
	if c.closeCode == 0 {
		c.closeCode = code
	}
	c.push(ls, frame.AppendClose(nil, ws.StatusCode(code), text))
	c.state = stateClosing
	c.flags |= flagSent
	c.nextPing = ls.loop.Now.Add(grace).UnixNano()
	c.schedule(ls, time.Unix(0, c.nextPing))
	ls.markDirty(c)
}

// afterCloseSent half-closes once the close frame is on the wire; the peer's
// EOF (or the grace timer) completes the close.
func (c *conn) afterCloseSent(ls *loopState) {
	_ = reactor.ShutdownWrite(int(c.fd))
}

// finish closes the connection and releases everything it holds: the
// socket leaves epoll at once and is closed at the end of the turn
// (closeLater). rst resets instead of a graceful FIN.
func (c *conn) finish(ls *loopState, r reason.Reason, code uint16, rst bool) {
	if c.fd < 0 {
		return
	}
	fd := int(c.fd)
	s := ls.srv
	if rst {
		_ = reactor.SetResetOnClose(fd)
	}
	wasOpen := c.state != stateHandshake
	for len(c.subs) > 0 {
		ls.hub.unsubscribe(ls, c, len(c.subs)-1)
	}
	// Most loops hold no entry in these maps: skip hashing the id then.
	if len(ls.wamp) > 0 {
		delete(ls.wamp, c.id)
	}
	if len(ls.older) > 0 {
		delete(ls.older, c.id)
	}
	if len(ls.redeeming) > 0 {
		delete(ls.redeeming, c.id)
	}
	// Out of epoll now; the close(2), the costly part, at the end of the
	// turn (closing.go).
	ls.closeLater(fd, !c.hungUp)
	ls.conns[fd] = nil
	ls.nconns--
	c.fd = -1
	if c.state == stateOpen {
		c.state = stateClosing // frames still being parsed are ignored
	}
	c.dropBacklog(ls)
	c.parser.Release()
	c.hold(ls, -int(c.held))
	if c.hs != nil {
		*c.hs = (*c.hs)[:0]
		hsPool.Put(c.hs)
		c.hs = nil
	}
	s.conns.Add(-1)
	if c.flags&flagSlot != 0 {
		c.flags &^= flagSlot
		ls.releaseSlot(c)
	}
	if wasOpen {
		s.upgraded.Add(-1)
		if c.closeReason != reason.None {
			r = c.closeReason
		}
		if c.closeCode != 0 {
			code = c.closeCode
		}
		c.emit(ls, audit.Event{Event: audit.KindConnClose, Severity: audit.Info, Stage: audit.StageClose,
			Code: int(code), UserID: c.userID(),
			DurationMS: (ls.loop.Now.UnixNano() - c.opened) / int64(time.Millisecond)}, r)
	}
}

// emit sends an audit event stamped with this connection's identity and
// with r as its reason (reason.None: none). A refusal (a refusal kind with a
// reason) is also a strike against the client address, weighted by r: the
// pipeline's last step happens here, once, for every path. r stays typed all
// the way, so no reason is parsed back from text on the loop.
func (c *conn) emit(ls *loopState, e audit.Event, r reason.Reason) {
	e.Reason = r
	e.Conn = c.id
	client := c.client()
	if !e.IP.IsValid() {
		e.IP = client
	}
	e.PeerIP = c.peer()
	g := ls.srv.opts.Guard
	e.CountedPrefix = g.Counted(client)
	if c.state != stateHandshake {
		e.Proto = protoNames[c.proto]
	}
	ls.srv.emit(e)
	if r != reason.None && e.Event.Refusal() {
		if r != reason.BadClientIP && g.Strike(client, r, ls.loop.Now) {
			// This strike banned the address: once the current reply is
			// queued the connection closes (see banNow), and nothing more
			// it sent is evaluated.
			c.flags |= flagBanned
		}
	}
}

// closeGrace is how long a closing connection waits for the peer's close
// frame after sending its own.
const closeGrace = 2 * time.Second

// refuse acts on refusal d of c, the one path every refusal of a
// connection takes (pipeline step 5, docs/ARCHITECTURE.md): the audit
// event e, completed here (reason, stage, code, and defaults for its kind
// and severity), with its strike (emit); then the client's answer and the
// close. Before the upgrade the answer is d's HTTP status and JSON error,
// and the socket closes. After it, the codec fits d to the protocol: a
// refusal that keeps the connection open (d.Close 0) gets the protocol's
// error reply to q (nil: the refusal answers no particular request); one
// that ends it gets the protocol's last word, then the close frame (and a
// reset with d.Reset).
func (c *conn) refuse(ls *loopState, e audit.Event, d decision.Decision, q *request) {
	if c.fd < 0 {
		return
	}
	if c.state == stateHandshake {
		r := d.Why()
		ls.srv.rejected.Add(1)
		ls.loop.Sys.Write++
		writeRaw(int(c.fd), httpReject(d))
		if e.Event == 0 {
			e.Event = audit.KindConnRejected
		}
		e.Severity = max(e.Severity, audit.Warning)
		e.Stage, e.Code = audit.StageHandshake, d.Status
		c.emit(ls, e, r)
		c.finish(ls, r, 0, false)
		return
	}
	d = c.codec().answer(d, q)
	r := d.Why()
	if e.Event == 0 {
		e.Event = audit.KindMessageRejected
	}
	if e.Severity == audit.Info {
		e.Severity = audit.Warning
	}
	if e.Stage == "" {
		e.Stage = audit.StageMessage
	}
	if d.Close != 0 {
		e.Code = int(d.Close)
	}
	c.emit(ls, e, r)
	switch {
	case d.Close == 0:
		c.codec().reply(c, ls, q, d)
	case d.Reset:
		c.fail(ls, d.Close, r, d.Message)
	default:
		c.codec().lastWord(c, ls, q, d)
		c.closeWith(ls, d.Close, r, d.Message, closeGrace)
	}
}

func (s *Server) emit(e audit.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	s.opts.Audit.Emit(e)
}

// proxyHeader consumes the PROXY protocol header at the start of b and
// returns the bytes after it. ok is false when more bytes are needed (b
// has been kept) or the connection was refused.
func (c *conn) proxyHeader(ls *loopState, b []byte) (rest []byte, ok bool) {
	h, n, err := clientip.ParseProxyHeader(b)
	if errors.Is(err, clientip.ErrNeedMore) {
		c.keepPartial(ls, b)
		return nil, false
	}
	var client netip.Addr
	why := reason.None
	if err == nil {
		client, why = ls.rules().clientIP.FromProxyHeader(c.peer(), h)
	}
	if err != nil || why != reason.None {
		detail := "missing or malformed PROXY protocol header"
		if err != nil {
			detail = capString(err.Error(), 200)
		}
		c.refuse(ls, audit.Event{Detail: detail}, decision.Deny(reason.ProxyHeader), nil)
		return nil, false
	}
	c.flags |= flagProxyDone
	if client != c.peer() {
		c.proxied = &client
	}
	rest = b[n:]
	if c.hs != nil {
		// Keep only what follows the header in the pooled buffer.
		*c.hs = (*c.hs)[:copy(*c.hs, rest)]
		rest = *c.hs
	}
	if len(rest) == 0 {
		return nil, false
	}
	return rest, true
}

// keepPartial keeps an incomplete request (or PROXY header) until more
// bytes arrive. b is either the pooled buffer itself or a slice of the
// loop's shared read buffer, which must be copied.
func (c *conn) keepPartial(ls *loopState, b []byte) {
	if c.hs != nil {
		return // b is *c.hs, already kept
	}
	lim := ls.rules().limits.HandshakeBytes
	hs := hsPool.Get().(*[]byte)
	if cap(*hs) < lim {
		*hs = make([]byte, 0, lim)
	}
	*hs = append((*hs)[:0], b...)
	c.hs = hs
}

// writeRaw writes b once, best effort, on a non-blocking socket: used for
// rejections and resets where nothing further is owed to the peer.
func writeRaw(fd int, b []byte) {
	_, _ = unix.Write(fd, b)
}

var crlfcrlf = []byte("\r\n\r\n")

func (c *conn) handshake(ls *loopState, b []byte) {
	rl := ls.rules()
	lim := &rl.limits
	if ls.srv.opts.ProxyProtocol && c.flags&flagProxyDone == 0 {
		var ok bool
		if b, ok = c.proxyHeader(ls, b); !ok {
			return
		}
	} else if c.hs == nil && clientip.LooksLikeProxyHeader(b) {
		// A PROXY header where none is expected: not believed, and said.
		ls.srv.untrustedForwarding(c, "PROXY protocol header", ls.loop.Now)
	}
	end := bytes.Index(b, crlfcrlf)
	if end < 0 {
		if len(b) >= lim.HandshakeBytes {
			c.refuse(ls, audit.Event{}, decision.Deny(reason.HandshakeTooLarge), nil)
			return
		}
		c.keepPartial(ls, b)
		return
	}
	end += len(crlfcrlf)
	if end > lim.HandshakeBytes {
		c.refuse(ls, audit.Event{}, decision.Deny(reason.HandshakeTooLarge), nil)
		return
	}
	if p := probeOf(b[:end]); p != probeNone {
		c.answerProbe(ls, p, b[:end])
		return
	}
	if r := c.closeReason; r != reason.None {
		// Refused at accept for a rate or cap: the request is in, so the
		// answer will be read rather than lost to a reset.
		c.refuse(ls, audit.Event{}, decision.Deny(r).WithRetry(time.Duration(c.nextPing)), nil)
		return
	}
	res := ls.upgrader.upgrade(c, rl, b[:end], ls.loop.Now)
	if res.client.IsValid() && res.client != c.client() {
		a := res.client // the derived client, audited in place of the proxy
		c.proxied = &a
	}
	if res.untrusted != "" {
		ls.srv.untrustedForwarding(c, res.untrusted, ls.loop.Now)
	}
	if !res.decision.Allowed() {
		c.refuse(ls, audit.Event{Detail: res.detail}, res.decision, nil)
		return
	}
	rest := b[end:]
	// The response goes first, then the welcome frame, in one write.
	c.state = stateOpen
	c.proto = res.proto
	if res.slot {
		c.flags |= flagSlot
	}
	if res.badFwd {
		c.emit(ls, audit.Event{Event: audit.KindConnRejected, Severity: audit.Warning, Stage: audit.StageHandshake,
			Detail: "garbage forwarding header from a trusted proxy; its own address is used"}, reason.BadClientIP)
	}
	ls.srv.upgraded.Add(1)
	c.push(ls, res.response)
	c.out.progress = ls.loop.Now.UnixNano()
	ls.markDirty(c)
	c.emit(ls, audit.Event{Event: audit.KindConnOpen, Severity: audit.Info, Stage: audit.StageHandshake}, reason.None)
	c.codec().welcome(c, ls)
	c.nextPing = ls.loop.Now.Add(lim.PingInterval).UnixNano()
	c.timerAt = 0 // drop the handshake timer
	c.rescheduleOpen(ls, lim)
	if len(rest) > 0 {
		// Frames that arrived with the request. They may live in the pooled
		// handshake buffer, so feed them before returning it.
		c.feed(ls, rest)
	}
	if c.hs != nil {
		*c.hs = (*c.hs)[:0]
		hsPool.Put(c.hs)
		c.hs = nil
	}
}

// counted is the prefix c's client address is limited under: the key of
// its inbound byte budget and byte rate.
func (c *conn) counted(ls *loopState) netip.Prefix {
	return ls.srv.opts.Guard.Counted(c.client())
}

// sinceOpen is the loop's time in milliseconds since c opened: the clock
// of the parser's MarkStarted (it wraps after 49 days; messageDeadline
// only ever takes differences).
func (c *conn) sinceOpen(ls *loopState) uint32 {
	return uint32((ls.loop.Now.UnixNano() - c.opened) / int64(time.Millisecond))
}

// messageDeadline is when the frame or message in progress must be
// complete, in unix nanoseconds: limits.message_timeout after it began.
func (c *conn) messageDeadline(ls *loopState, lim *Limits) int64 {
	elapsed := c.sinceOpen(ls) - c.parser.Started()
	return ls.loop.Now.UnixNano() - int64(elapsed)*int64(time.Millisecond) + int64(lim.MessageTimeout)
}

// messageTimedOut closes a connection whose message did not complete in
// time, whatever control frames kept it busy, and frees what it held.
func (c *conn) messageTimedOut(ls *loopState, lim *Limits) {
	c.refuse(ls, audit.Event{Detail: "message not complete within " + lim.MessageTimeout.String()},
		decision.Deny(reason.MessageTimeout), nil)
	c.dropParser(ls, c.parser.Buffered())
}

// dropParser frees the parser's partial input and gives back charged, the
// bytes charged for it (its Buffered at the last charge); for a connection
// that will parse nothing more.
func (c *conn) dropParser(ls *loopState, charged int) {
	c.parser.Release()
	c.hold(ls, -charged)
}

// hold charges n more inbound bytes held by c (negative: gives them back)
// to its address's budget and the global one. Over either budget nothing
// is charged: the refusal is audited, the connection closed with 1008 and
// hold returns false; the caller frees what it was about to keep.
func (c *conn) hold(ls *loopState, n int) bool {
	if n == 0 {
		return true
	}
	if n < 0 {
		n = max(n, -int(c.held))
		ls.srv.inbound.Release(c.counted(ls), int64(-n))
		c.held += int32(n)
		return true
	}
	v := ls.srv.inbound.Hold(c.counted(ls), int64(n))
	if v == ratelimit.HoldOK {
		c.held += int32(n)
		return true
	}
	// Over the address's own budget it is a strike; over the global one
	// the client that tipped it may be innocent (like global_connections),
	// so it is refused without one.
	r, detail := reason.InboundBudget, "the address holds limits.inbound_buffer_per_ip in unfinished messages and tables"
	if v == ratelimit.HoldOverTotal {
		r, detail = reason.GlobalInbound, "the server holds limits.inbound_buffer_total in unfinished messages and tables"
	}
	c.refuse(ls, audit.Event{Detail: detail}, decision.Deny(r), nil)
	return false
}

// overBytesRate closes a connection whose address sends more bytes than
// limits.bytes_rate allows; the bytes just read are not parsed.
func (c *conn) overBytesRate(ls *loopState) {
	c.refuse(ls, audit.Event{Detail: "address over limits.bytes_rate"}, decision.Deny(reason.BytesRate), nil)
	c.dropParser(ls, c.parser.Buffered())
}

// Unsupported requests (RPC over WAMP) are answered while they stay few:
// the one after maxUnsupported in a row closes the connection.
const (
	maxUnsupported = 3
	unsupThis      = 0x80 // c.unsup: this message was unsupported (the low bits count)
)

// unsupported refuses request q for an operation Portcullis lacks (a
// strike, weighted by policy/bans): answered with the protocol's error
// reply (CALLERROR, ERROR) while such requests stay few, closed with 1008
// after maxUnsupported in a row.
func (c *conn) unsupported(ls *loopState, detail string, q *request) {
	n := c.unsup&^unsupThis + 1
	c.unsup = n | unsupThis
	if n > maxUnsupported {
		c.refuse(ls, audit.Event{Detail: "kept sending unsupported requests: " + detail},
			decision.Deny(reason.Unsupported).Closing(1008, "unsupported requests"), nil)
		return
	}
	c.refuse(ls, audit.Event{Severity: audit.Notice, Detail: detail}, decision.Deny(reason.Unsupported), q)
}
