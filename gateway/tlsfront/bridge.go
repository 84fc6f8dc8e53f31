package tlsfront

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portcullis-gw/portcullis/gateway/reactor"
)

// A dispatcher copies the plaintext of its bridged connections between the
// TLS connection to the client and the front's end of the socket pair
// whose other end the gateway serves. It is an epoll loop
// (gateway/reactor) over both descriptors of every connection it holds,
// so that an idle connection costs no goroutine and no buffer: only its
// tls.Conn and a bridge. Every bridge and its tls.Conn are touched only
// by their dispatcher's goroutine once handed over (Post).
type dispatcher struct {
	f     *Front
	loop  *reactor.Loop
	conns []*bridge // by descriptor: both of a bridge's
	buf   []byte    // the copy buffer, shared by the loop's connections
}

func newDispatcher(f *Front, id int) (*dispatcher, error) {
	d := &dispatcher{f: f, buf: make([]byte, f.o.BufferBytes)}
	l, err := reactor.New(id, d)
	if err != nil {
		return nil, fmt.Errorf("tlsfront: %w", err)
	}
	d.loop = l
	return d, nil
}

// bridge is one connection on a dispatcher. It is also the net.Conn its
// tls.Conn reads and writes once the handshake is done (through
// recordConn): reads are non-blocking (errWouldBlock until epoll reports
// the socket readable), and writes never block: what the socket does not
// take is kept in out and written when it is writable, while nothing more
// is read from the gateway.
//
// Ending: an EOF from the client (close_notify or FIN) half-closes the
// pair towards the gateway, which then has WriteStallTimeout to close its
// end; an EOF from the gateway (it closed its end) sends close_notify to
// the client and closes; any error, or a client that accepts nothing for
// WriteStallTimeout while something waits for it, resets both.
type bridge struct {
	d        *dispatcher
	tc       *tls.Conn
	rc       *recordConn // under tc
	tcp      int         // the client's TCP socket
	pair     int         // the front's end of the socket pair
	tcpGen   uint32
	pairGen  uint32
	tcpEv    reactor.Events // what tcp and pair are registered for
	pairEv   reactor.Events
	toClient []byte // TLS records the client's socket has not taken yet
	toGW     []byte // plaintext the socket pair has not taken yet
	deadline int64  // unix ns: the stall, half-close or close timer; 0: none
	werr     error  // a write to the client failed
	peerDone bool   // the client sent its EOF (or the gateway stopped reading)
	halfShut bool   // the pair is half-closed towards the gateway
	pairHung bool   // the gateway hung up while its data waited: the pair is out of epoll
	closing  bool   // close_notify queued: close once toClient is out
	closed   bool
	local    net.Addr
	remote   net.Addr
}

// errWouldBlock is what a bridge's Read returns while the socket has
// nothing: temporary, so tls.Conn keeps the part of a record it has read
// and resumes it on the next Read.
var errWouldBlock = &wouldBlock{}

type wouldBlock struct{}

func (*wouldBlock) Error() string   { return "tlsfront: would block" }
func (*wouldBlock) Timeout() bool   { return true }
func (*wouldBlock) Temporary() bool { return true }

// Read implements net.Conn for tls.Conn: one non-blocking read.
func (b *bridge) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(b.tcp, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, errWouldBlock
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write implements net.Conn for tls.Conn: what the socket does not take
// now is kept and written when it is writable; a failure is kept for the
// dispatcher (tls.Conn makes every write error permanent).
func (b *bridge) Write(p []byte) (int, error) {
	if b.werr != nil {
		return 0, b.werr
	}
	if len(b.toClient) > 0 {
		b.toClient = append(b.toClient, p...)
		return len(p), nil
	}
	w := 0
	for w < len(p) {
		n, err := unix.Write(b.tcp, p[w:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			b.toClient = append(make([]byte, 0, len(p)-w), p[w:]...)
			return len(p), nil
		}
		if err != nil {
			b.werr = err
			return w, err
		}
		w += n
	}
	return len(p), nil
}

// Close implements net.Conn; the dispatcher closes the descriptors itself.
func (b *bridge) Close() error { return nil }

// LocalAddr implements net.Conn.
func (b *bridge) LocalAddr() net.Addr { return b.local }

// RemoteAddr implements net.Conn.
func (b *bridge) RemoteAddr() net.Addr { return b.remote }

// SetDeadline implements net.Conn: bridges have timers instead.
func (b *bridge) SetDeadline(time.Time) error { return nil }

// SetReadDeadline implements net.Conn (see SetDeadline).
func (b *bridge) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline implements net.Conn (see SetDeadline).
func (b *bridge) SetWriteDeadline(time.Time) error { return nil }

// add registers a bridge handed over by its handshake's goroutine. Loop
// goroutine.
func (d *dispatcher) add(b *bridge) {
	var err error
	if b.tcpGen, err = d.loop.Add(b.tcp, 0); err != nil {
		unix.Close(b.tcp)
		unix.Close(b.pair)
		d.f.bridgeEnded()
		return
	}
	if b.pairGen, err = d.loop.Add(b.pair, 0); err != nil {
		d.loop.Remove(b.tcp) // closes it
		unix.Close(b.pair)
		d.f.bridgeEnded()
		return
	}
	for max(b.tcp, b.pair) >= len(d.conns) {
		d.conns = append(d.conns, make([]*bridge, len(d.conns)+1024)...)
	}
	d.conns[b.tcp], d.conns[b.pair] = b, b
	// The client may have sent bytes with its last handshake record.
	d.fromClient(b)
	d.update(b)
}

// OnEvent implements reactor.Handler.
func (d *dispatcher) OnEvent(fd int, ev reactor.Events) {
	if fd >= len(d.conns) || d.conns[fd] == nil {
		return
	}
	b := d.conns[fd]
	// epoll reports a hang-up or an error whatever a descriptor is
	// registered for: one that is not being read is dealt with here, or
	// it would be reported again and again.
	hup := ev&(unix.EPOLLHUP|unix.EPOLLERR) != 0
	if fd == b.tcp {
		if ev&reactor.Writable != 0 || hup && len(b.toClient) > 0 {
			d.flushClient(b)
		}
		if !b.closed && ev&(reactor.Readable|reactor.HangUp) != 0 && b.tcpEv&reactor.Readable != 0 {
			d.fromClient(b)
		}
		if !b.closed && hup && (b.peerDone || len(b.toGW) > 0 || b.closing) {
			d.closeAll(b, true) // the client is gone: nothing can reach it
		}
	} else {
		if ev&reactor.Writable != 0 {
			d.flushGateway(b)
		}
		if !b.closed && ev&(reactor.Readable|reactor.HangUp) != 0 && b.pairEv&reactor.Readable != 0 {
			d.fromGateway(b)
		}
		if !b.closed && hup && b.pair >= 0 && len(b.toClient) > 0 {
			// The gateway closed while the client is slow: what it wrote
			// is still in the pair, read once the client has taken
			// what waits for it (flushClient).
			if d.loop.Detach(b.pair) != nil {
				d.closeAll(b, true)
				return
			}
			b.pairHung = true
		}
	}
	if !b.closed {
		d.update(b)
	}
}

// OnTimer implements reactor.Handler: the bridge's one timer, on its TCP
// descriptor, ran out (a stalled client, a gateway that did not close
// after the client's EOF, a close_notify that could not be written).
func (d *dispatcher) OnTimer(fd int, at int64) {
	if fd >= len(d.conns) || d.conns[fd] == nil {
		return
	}
	b := d.conns[fd]
	if fd != b.tcp || at != b.deadline {
		return // superseded
	}
	d.closeAll(b, true)
}

// fromClient decrypts what the client sent and writes it to the pair,
// until the socket has nothing more or the pair is full.
func (d *dispatcher) fromClient(b *bridge) {
	for !b.closed && !b.peerDone && len(b.toGW) == 0 {
		n, err := b.tc.Read(d.buf)
		if n > 0 {
			d.toGateway(b, d.buf[:n])
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, errWouldBlock):
			return
		case errors.Is(err, io.EOF):
			// The client is done sending: the gateway reads EOF (once
			// what waits for it is written) and closes its end, and gets
			// WriteStallTimeout to do so.
			b.peerDone = true
			d.arm(b)
			d.shutPair(b)
			return
		default:
			d.closeAll(b, true) // an error, a reset, bad records
			return
		}
	}
}

// shutPair half-closes the pair towards the gateway once the client's
// EOF is due and nothing waits for the gateway any more.
func (d *dispatcher) shutPair(b *bridge) {
	if b.closed || b.halfShut || !b.peerDone || len(b.toGW) > 0 {
		return
	}
	b.halfShut = true
	if unix.Shutdown(b.pair, unix.SHUT_WR) != nil {
		d.closeAll(b, true)
	}
}

// toGateway writes p to the pair; what it does not take waits in toGW,
// and the client is not read meanwhile.
func (d *dispatcher) toGateway(b *bridge, p []byte) {
	for len(p) > 0 {
		n, err := unix.Write(b.pair, p)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			b.toGW = append(b.toGW, p...)
			return
		}
		if err != nil {
			// The gateway closed its end (EPIPE): what it wrote before
			// still goes to the client, then close_notify.
			b.toGW, b.peerDone, b.halfShut = nil, true, true
			d.fromGateway(b)
			if !b.closed && !b.closing {
				d.closeAll(b, true)
			}
			return
		}
		p = p[n:]
	}
}

// flushGateway writes what waits for the pair; once it is out, the
// client is read again (or the pair half-closed after its EOF).
func (d *dispatcher) flushGateway(b *bridge) {
	p := b.toGW
	b.toGW = nil
	d.toGateway(b, p)
	if !b.closed && len(b.toGW) == 0 {
		d.shutPair(b)
		d.fromClient(b)
	}
}

// fromGateway reads what the gateway wrote and sends it to the client
// as TLS records, until the pair has nothing more or the client's socket
// is full.
func (d *dispatcher) fromGateway(b *bridge) {
	for !b.closed && len(b.toClient) == 0 {
		n, err := unix.Read(b.pair, d.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return
		case err != nil:
			d.closeAll(b, true)
			return
		case n == 0: // the gateway closed its end
			d.closeAll(b, false)
			return
		}
		if _, err := b.tc.Write(d.buf[:n]); err != nil {
			d.closeAll(b, true)
			return
		}
		d.arm(b)
	}
}

// flushClient writes what waits for the client's socket; once it is out,
// the gateway is read again (or a closing bridge closes).
func (d *dispatcher) flushClient(b *bridge) {
	for len(b.toClient) > 0 {
		n, err := unix.Write(b.tcp, b.toClient)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return
		}
		if err != nil {
			b.werr = err
			d.closeAll(b, true)
			return
		}
		b.toClient = b.toClient[n:]
	}
	b.toClient = nil
	d.arm(b)
	if b.closing {
		d.finish(b)
		return
	}
	d.fromGateway(b)
}

// arm sets or clears the bridge's timer for its current state: while
// something waits for the client, WriteStallTimeout without it all going
// out (progress is not enough: a client reading a byte a minute must not
// hold the bridge); after the client's EOF, the same for the gateway to
// close.
func (d *dispatcher) arm(b *bridge) {
	if len(b.toClient) == 0 && !b.peerDone && !b.closing {
		b.deadline = 0
		return
	}
	if b.deadline != 0 {
		return // the running timer bounds the whole wait
	}
	at := d.loop.Now.Add(d.f.o.WriteStallTimeout)
	b.deadline = at.UnixNano()
	d.loop.SetTimer(b.tcp, b.tcpGen, at)
}

// update registers each descriptor for what the bridge's state waits for.
func (d *dispatcher) update(b *bridge) {
	var tcpEv, pairEv reactor.Events
	if !b.peerDone && len(b.toGW) == 0 && !b.closing {
		tcpEv |= reactor.Readable
	}
	if len(b.toClient) > 0 {
		tcpEv |= reactor.Writable
	}
	if !b.closing {
		if len(b.toClient) == 0 {
			pairEv |= reactor.Readable
		}
		if len(b.toGW) > 0 {
			pairEv |= reactor.Writable
		}
	}
	if tcpEv != b.tcpEv {
		b.tcpEv = tcpEv
		if d.loop.Modify(b.tcp, b.tcpGen, tcpEv) != nil {
			d.closeAll(b, true)
			return
		}
	}
	if pairEv != b.pairEv && b.pair >= 0 && !b.pairHung {
		b.pairEv = pairEv
		if d.loop.Modify(b.pair, b.pairGen, pairEv) != nil {
			d.closeAll(b, true)
		}
	}
}

// closeAll ends the connection: the pair now, and the client's
// connection reset when hard (an error, a stall, a forced shutdown:
// nothing queued for a client that does not read may outlive it), else
// after close_notify has gone out (bounded by WriteStallTimeout).
func (d *dispatcher) closeAll(b *bridge, hard bool) {
	if b.closed || b.closing && !hard {
		return
	}
	if b.pair >= 0 {
		d.conns[b.pair] = nil
		d.loop.Remove(b.pair)
		b.pair = -1
	}
	b.toGW = nil
	if !hard {
		b.closing = true
		b.deadline = 0
		if b.tc.CloseWrite() == nil && b.werr == nil && len(b.toClient) > 0 {
			d.arm(b)
			d.update(b)
			return // finish once it is out
		}
		if b.werr == nil {
			d.finish(b)
			return
		}
	}
	_ = unix.SetsockoptLinger(b.tcp, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	d.finish(b)
}

// finish closes the client's socket and forgets the bridge.
func (d *dispatcher) finish(b *bridge) {
	if b.closed {
		return
	}
	if b.pair >= 0 {
		d.conns[b.pair] = nil
		d.loop.Remove(b.pair)
		b.pair = -1
	}
	b.closed = true
	d.conns[b.tcp] = nil
	d.loop.Remove(b.tcp)
	b.toClient, b.toGW = nil, nil
	d.f.bridgeEnded()
}

// closeEvery resets every bridge of the dispatcher (a forced shutdown).
func (d *dispatcher) closeEvery() {
	for _, b := range d.conns {
		if b != nil && !b.closed {
			d.closeAll(b, true)
		}
	}
}
