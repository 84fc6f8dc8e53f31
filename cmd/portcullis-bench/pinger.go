package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// The bystanders' pinger times a server's ping→pong round trip from one
// OS thread with an epoll of its own, over non-blocking sockets: no
// goroutine, timer or netpoller of the Go runtime stands between the
// server's pong and its timestamp, so a round trip says how long the
// server took, not how long the load generator's scheduler did. (With a
// goroutine per bystander the bench's own p99 at rest was 3–8 ms.)

// pingConn is one bystander socket.
type pingConn struct {
	fd       int
	inFlight bool
	sent     int64  // when the ping in flight left, ns on the pinger's clock
	next     int64  // when the next ping leaves
	in       []byte // bytes read that are not yet a whole frame
	dead     bool
}

// pinger pings its connections until stopped.
type pinger struct {
	epfd     int
	conns    []*pingConn
	rec      *rttRecorder
	epoch    time.Time
	interval time.Duration
	cent     bool // the server is Centrifugo: answer its {} pings
	pinging  atomic.Bool
	stop     atomic.Bool
	done     chan struct{}
	out      []byte // the frame being written
}

// newPinger takes over the sockets of conns (plain TCP, subscribed):
// their descriptors are duplicated and the Go connections closed, so
// that only the pinger reads them. Bytes already read past the
// handshake (a prefixedConn's) go first.
func newPinger(conns []net.Conn, rec *rttRecorder, interval time.Duration, cent bool) (*pinger, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("pinger: epoll: %w", err)
	}
	p := &pinger{epfd: epfd, rec: rec, epoch: time.Now(), interval: interval, cent: cent, done: make(chan struct{})}
	for _, c := range conns {
		pc, err := takeSocket(c)
		if err != nil {
			p.close()
			return nil, err
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(len(p.conns))}
		p.conns = append(p.conns, pc)
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, pc.fd, &ev); err != nil {
			p.close()
			return nil, fmt.Errorf("pinger: epoll_ctl: %w", err)
		}
	}
	return p, nil
}

// takeSocket duplicates c's descriptor (non-blocking, as the runtime left
// it) and closes c.
func takeSocket(c net.Conn) (*pingConn, error) {
	pc := &pingConn{fd: -1}
	if pre, ok := c.(*prefixedConn); ok {
		pc.in = append(pc.in, pre.rest()...)
		c = pre.Conn
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, fmt.Errorf("pinger: %T is not a plain TCP connection", c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("pinger: %w", err)
	}
	var derr error
	if err := raw.Control(func(fd uintptr) { pc.fd, derr = unix.Dup(int(fd)) }); err != nil {
		return nil, fmt.Errorf("pinger: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("pinger: dup: %w", derr)
	}
	if err := unix.SetNonblock(pc.fd, true); err != nil {
		unix.Close(pc.fd)
		return nil, fmt.Errorf("pinger: %w", err)
	}
	tc.Close()
	return pc, nil
}

func (p *pinger) now() int64 { return int64(time.Since(p.epoch)) }

// start starts the pings, spread evenly over one interval.
func (p *pinger) start() {
	if p.pinging.Load() {
		return
	}
	now := p.now()
	for i, c := range p.conns {
		c.next = now + int64(p.interval)*int64(i)/int64(len(p.conns))
	}
	p.pinging.Store(true)
}

// run answers the server and, once started, pings every connection every
// interval, one ping in flight each, until halt. It runs on a thread of
// its own.
func (p *pinger) run() {
	runtime.LockOSThread()
	defer close(p.done)
	events := make([]unix.EpollEvent, max(len(p.conns), 1))
	buf := make([]byte, 64<<10)
	for !p.stop.Load() {
		wait := p.sendDue()
		n, err := unix.EpollWait(p.epfd, events, int((wait+int64(time.Millisecond)-1)/int64(time.Millisecond)))
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		for _, ev := range events[:max(n, 0)] {
			p.readable(p.conns[ev.Fd], buf)
		}
	}
}

// sendDue sends the pings that are due, counts those whose pong is
// overdue as missing, and returns how long until the next is due (at
// most 10 ms, so that halt is noticed).
func (p *pinger) sendDue() int64 {
	wait := int64(10 * time.Millisecond)
	if !p.pinging.Load() {
		return wait
	}
	now := p.now()
	for _, c := range p.conns {
		if c.dead {
			continue
		}
		if c.inFlight {
			if overdue := c.sent + int64(pongTimeout); now < overdue {
				wait = min(wait, overdue-now)
				continue
			}
			c.inFlight = false
			p.rec.lost()
			c.next = now
		}
		if now < c.next {
			wait = min(wait, c.next-now)
			continue
		}
		var payload [8]byte
		binary.BigEndian.PutUint64(payload[:], uint64(now))
		if !p.send(c, ws.OpPing, payload[:]) {
			p.rec.lost()
			continue
		}
		c.inFlight, c.sent = true, now
		wait = min(wait, int64(pongTimeout))
	}
	return max(wait, 0)
}

// send writes one masked client frame; a connection that cannot take it
// whole is retired.
func (p *pinger) send(c *pingConn, op ws.OpCode, payload []byte) bool {
	if len(payload) > 125 {
		p.retire(c) // not a frame this pinger sends
		return false
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], rand.Uint32())
	p.out = append(p.out[:0], 0x80|byte(op), 0x80|byte(len(payload)))
	p.out = append(p.out, key[:]...)
	p.out = append(p.out, payload...)
	ws.Cipher(p.out[6:], key, 0)
	n, err := unix.Write(c.fd, p.out)
	if err != nil || n != len(p.out) {
		p.retire(c)
		return false
	}
	return true
}

// readable reads what c has and handles each whole frame: a pong of the
// ping in flight is timed, a ping answered, a close answered and c
// retired.
func (p *pinger) readable(c *pingConn, buf []byte) {
	for !c.dead {
		n, err := unix.Read(c.fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil || n == 0 {
			p.retire(c)
			return
		}
		c.in = append(c.in, buf[:n]...)
	}
	now := p.now()
	for !c.dead {
		op, payload, size, ok := serverFrame(c.in)
		if !ok {
			break
		}
		switch op {
		case ws.OpPong:
			if c.inFlight && len(payload) == 8 && int64(binary.BigEndian.Uint64(payload)) == c.sent {
				c.inFlight = false
				p.rec.add(time.Duration(now - c.sent))
				c.next = max(c.sent+int64(p.interval), now)
			}
		case ws.OpPing:
			p.send(c, ws.OpPong, payload)
		case ws.OpClose:
			p.send(c, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
			p.retire(c)
		case ws.OpText:
			if p.cent && hasPing(payload) {
				p.send(c, ws.OpText, []byte("{}"))
			}
		}
		c.in = c.in[size:]
	}
	if len(c.in) == 0 {
		c.in = c.in[:0:0]
	}
}

// retire stops watching c (a ping in flight on it is missing); a retired
// connection is neither read nor pinged again.
func (p *pinger) retire(c *pingConn) {
	if c.dead {
		return
	}
	if c.inFlight {
		c.inFlight = false
		p.rec.lost()
	}
	c.dead = true
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
}

// serverFrame parses the frame at the start of b: its opcode, its
// (unmasked) payload and its size; ok is false until b holds all of it.
// Fragments are not joined: a server's control frames are never
// fragmented, and the pinger reads no data.
func serverFrame(b []byte) (op ws.OpCode, payload []byte, size int, ok bool) {
	if len(b) < 2 {
		return 0, nil, 0, false
	}
	op = ws.OpCode(b[0] & 0x0f)
	masked := b[1]&0x80 != 0
	n, hdr := uint64(b[1]&0x7f), 2
	switch n {
	case 126:
		if len(b) < 4 {
			return 0, nil, 0, false
		}
		n, hdr = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return 0, nil, 0, false
		}
		n, hdr = binary.BigEndian.Uint64(b[2:]), 10
	}
	var key [4]byte
	if masked {
		if len(b) < hdr+4 {
			return 0, nil, 0, false
		}
		copy(key[:], b[hdr:])
		hdr += 4
	}
	if uint64(len(b)-hdr) < n {
		return 0, nil, 0, false
	}
	payload = b[hdr : hdr+int(n)]
	if masked {
		ws.Cipher(payload, key, 0)
	}
	return op, payload, hdr + int(n), true
}

// halt stops run and waits for it.
func (p *pinger) halt() {
	p.stop.Store(true)
	<-p.done
}

// close closes every socket and the epoll.
func (p *pinger) close() {
	for _, c := range p.conns {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
	}
	unix.Close(p.epfd)
}
