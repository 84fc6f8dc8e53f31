// Package tlsfront terminates TLS for the public listener without a
// goroutine-per-connection gateway: it accepts TCP connections, asks the
// gateway to admit each peer before any TLS work (a banned or over-cap
// address costs no handshake), runs the TLS handshake on a goroutine of
// its own, and then hands the gateway one end of a
// socketpair(AF_UNIX, SOCK_STREAM) carrying the plaintext. The gateway's
// epoll loops serve that end exactly like an accepted TCP socket, with the
// real peer address. The other end and the TLS connection are bridged by
// dispatchers, epoll loops of the front's own (bridge.go): an idle
// connection holds no goroutine and no buffer, only its tls.Conn.
// docs/TLS.md has the operator's view and the memory it costs.
//
// The kernel here has no kTLS, so the TLS records cannot be read by the
// reactor itself; this is the user-space alternative.
//
// tlsfront imports audit/reason for the vocabulary of its refusals and
// gateway/reactor for its epoll loops, nothing else from the project: it
// never imports the gateway, policy or audit packages; the gateway calls
// it and supplies the callbacks.
package tlsfront

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults for the zero fields of Options.
const (
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultHandshakeMaxBytes = 16 << 10 // a ClientHello is 0.3–2 KiB
	DefaultMaxHandshakes     = 1024
	DefaultBufferBytes       = 16 << 10 // one full TLS record
	DefaultSendBufferBytes   = 64 << 10
	DefaultWriteStallTimeout = 10 * time.Second
)

// Options configure a Front. Admit, Adopt and Refused are required.
type Options struct {
	// CertFile and KeyFile are the PEM certificate chain (leaf first) and
	// its private key (readable by its owner only).
	CertFile, KeyFile string
	// MinVersion is tls.VersionTLS12 or tls.VersionTLS13 (ParseVersion);
	// 0: TLS 1.2.
	MinVersion uint16

	// HandshakeTimeout bounds the TLS handshake, from accept. The gateway's
	// own handshake timeout for the HTTP upgrade starts at Adopt.
	HandshakeTimeout time.Duration
	// HandshakeMaxBytes caps the bytes a client sends before its handshake
	// completes.
	HandshakeMaxBytes int
	// MaxHandshakes caps the handshakes in progress at once; beyond it a
	// connection is reset (ErrTooManyHandshakes).
	MaxHandshakes int
	// BufferBytes is the size of each dispatcher's copy buffer, shared by
	// its connections: an idle connection holds none.
	BufferBytes int
	// Dispatchers is the number of epoll loops bridging the connections;
	// 0: GOMAXPROCS.
	Dispatchers int
	// SendBufferBytes is SO_SNDBUF of the TCP socket (64 KiB, like the
	// gateway's plain sockets): a client that does not read fills it, then
	// the socket pair, and the gateway sees its own slow consumer.
	SendBufferBytes int
	// WriteStallTimeout resets a connection whose client has not taken
	// all that waits for it (at most one copy buffer's worth) within this
	// long, and bounds how long the gateway has to close its end after the
	// client closed its side, and a close_notify's wait to go out.
	WriteStallTimeout time.Duration

	// Admit is the accept stage, called on the accept goroutine before a
	// byte is read: admitted false resets the connection (the gateway
	// audits its own refusal). Admitted true means exactly one of Adopt or
	// Refused follows for this connection, and both are handed counted
	// back: whether the gateway took a slot for peer that it must give
	// back (a trusted proxy's connections take none). It must be fast and
	// safe for concurrent use.
	Admit func(peer netip.AddrPort) (admitted, counted bool)
	// Adopt hands the gateway its end of the connection's socket pair,
	// non-blocking and close-on-exec: the gateway serves fd as an accepted
	// socket from peer. On nil the gateway owns fd; on an error the front
	// closes fd and the gateway must have given back the slot of Admit
	// itself.
	Adopt func(fd int, peer netip.AddrPort, counted bool) error
	// Refused reports an admitted connection that will never reach Adopt:
	// the gateway gives back the slot of Admit and, as Classify says,
	// audits it and strikes its address.
	Refused func(peer netip.AddrPort, counted bool, err error)
}

func (o *Options) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if o.MinVersion == 0 {
		o.MinVersion = tls.VersionTLS12
	}
	defd(&o.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&o.HandshakeMaxBytes, DefaultHandshakeMaxBytes)
	def(&o.MaxHandshakes, DefaultMaxHandshakes)
	def(&o.BufferBytes, DefaultBufferBytes)
	def(&o.SendBufferBytes, DefaultSendBufferBytes)
	defd(&o.WriteStallTimeout, DefaultWriteStallTimeout)
	def(&o.Dispatchers, runtime.GOMAXPROCS(0))
}

// cipherSuites are the TLS 1.2 suites offered: ECDHE with an AEAD only
// (TLS 1.3 suites are all AEAD and not configurable).
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Front is a TLS terminator for the public listener. Its methods are safe
// for simultaneous use by multiple goroutines.
//
// Lock order: mu only; no callback is called with it held.
type Front struct {
	o     Options
	cfg   *tls.Config
	pair  atomic.Pointer[Pair]
	sem   chan struct{} // one token per handshake in progress
	disp  []*dispatcher
	next  atomic.Uint32 // the dispatcher of the next connection, round-robin
	ended sync.Once     // the dispatchers stopped

	mu          sync.Mutex
	closed      bool                  // guarded by mu
	lns         []net.Listener        // guarded by mu
	handshaking map[net.Conn]struct{} // guarded by mu
	bridges     int                   // connections bridged or being handed over; guarded by mu
	idle        chan struct{}         // closed when bridges drops to 0 after Shutdown; guarded by mu
	hsDone      sync.WaitGroup        // accept loops and handshakes
	stats       struct{ accepted, handshakes, refused, adopted atomic.Uint64 }
}

// New loads the certificate pair and returns a Front ready to Serve.
func New(o Options) (*Front, error) {
	if o.Admit == nil || o.Adopt == nil || o.Refused == nil {
		return nil, errors.New("tlsfront: Admit, Adopt and Refused are required")
	}
	o.setDefaults()
	if o.MinVersion != tls.VersionTLS12 && o.MinVersion != tls.VersionTLS13 {
		return nil, fmt.Errorf("tlsfront: MinVersion %#04x: must be TLS 1.2 or 1.3", o.MinVersion)
	}
	p, err := loadPair(o.CertFile, o.KeyFile, time.Now())
	if err != nil {
		return nil, err
	}
	f := &Front{
		o:           o,
		sem:         make(chan struct{}, o.MaxHandshakes),
		handshaking: make(map[net.Conn]struct{}),
	}
	f.pair.Store(p)
	for i := 0; i < o.Dispatchers; i++ {
		d, err := newDispatcher(f, i)
		if err != nil {
			f.stopDispatchers()
			return nil, err
		}
		f.disp = append(f.disp, d)
	}
	for _, d := range f.disp {
		go func() { _ = d.loop.Run() }() // fails only if epoll_wait does: nothing to serve then
	}
	f.cfg = &tls.Config{
		GetCertificate: f.getCertificate,
		MinVersion:     o.MinVersion,
		CipherSuites:   cipherSuites,
		NextProtos:     []string{"http/1.1"},
		// Session tickets stay on: a reconnecting client resumes without a
		// full handshake (TLS 1.3 resumption keeps forward secrecy with
		// (EC)DHE). Ticket keys live in memory and rotate daily.
	}
	return f, nil
}

// Stats are counters of a Front since New, and its connections now.
type Stats struct {
	Accepted    uint64 // TCP connections accepted
	Handshakes  uint64 // TLS handshakes started (admitted connections)
	Refused     uint64 // admitted but handed to Refused
	Adopted     uint64 // handed to Adopt
	Handshaking int    // handshakes in progress now
	Bridged     int    // connections being bridged now
}

// Stats returns the front's counters.
func (f *Front) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Stats{
		Accepted:    f.stats.accepted.Load(),
		Handshakes:  f.stats.handshakes.Load(),
		Refused:     f.stats.refused.Load(),
		Adopted:     f.stats.adopted.Load(),
		Handshaking: len(f.handshaking),
		Bridged:     f.bridges,
	}
}

// Serve accepts connections on ln until Shutdown or Close, which close
// ln; it then returns nil (ln closed by anyone else: an error). Any other
// accept error backs off (5 ms, doubling
// to 1 s: descriptors exhausted) and accepting goes on. ln should be a TCP
// listener; the gateway builds it (reactor.Listen and net.FileListener,
// so that the kernel drop filter can be attached to it).
func (f *Front) Serve(ln net.Listener) error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	f.lns = append(f.lns, ln)
	f.hsDone.Add(1)
	f.mu.Unlock()
	defer f.hsDone.Done()

	var pause time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if f.isClosed() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("tlsfront: listener closed by someone else: %w", err)
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			time.Sleep(pause)
			continue
		}
		pause = 0
		f.stats.accepted.Add(1)
		peer := addrPort(c.RemoteAddr())
		if !peer.IsValid() {
			reset(c)
			continue
		}
		ok, counted := f.o.Admit(peer)
		if !ok {
			reset(c)
			continue
		}
		select {
		case f.sem <- struct{}{}:
		default:
			reset(c)
			f.refuse(peer, counted, fmt.Errorf("%w (%d)", ErrTooManyHandshakes, f.o.MaxHandshakes))
			continue
		}
		// The deadline is set before the connection is tracked, so that
		// Shutdown's deadline in the past always wins over it.
		_ = c.SetDeadline(time.Now().Add(f.o.HandshakeTimeout))
		if !f.track(c) {
			<-f.sem
			reset(c)
			f.refuse(peer, counted, ErrClosed)
			continue
		}
		go f.serveConn(c, peer, counted)
	}
}

func (f *Front) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

func (f *Front) refuse(peer netip.AddrPort, counted bool, err error) {
	f.stats.refused.Add(1)
	f.o.Refused(peer, counted, err)
}

// track registers a handshake in progress, or reports false once the
// front is closing.
func (f *Front) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.handshaking[c] = struct{}{}
	f.hsDone.Add(1)
	return true
}

// serveConn runs one admitted connection: the handshake, the socket pair,
// Adopt, then the hand-over to a dispatcher, which bridges it from then
// on; the goroutine ends there.
func (f *Front) serveConn(raw net.Conn, peer netip.AddrPort, counted bool) {
	tc, err := f.handshake(raw)
	<-f.sem
	if err != nil {
		f.refuse(peer, counted, err)
		return
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		reset(raw)
		f.refuse(peer, counted, fmt.Errorf("%w: socketpair: %w", ErrNoDescriptors, err))
		return
	}
	// The dispatcher serves its own duplicate of the TCP socket; closing
	// raw takes the original out of Go's netpoller.
	tcp, err := dupSocket(raw)
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		reset(raw)
		f.refuse(peer, counted, fmt.Errorf("%w: dup: %w", ErrNoDescriptors, err))
		return
	}
	if !f.addBridge() {
		unix.Close(tcp)
		unix.Close(fds[1])
		unix.Close(fds[0])
		reset(raw)
		f.refuse(peer, counted, ErrClosed)
		return
	}
	if err := f.o.Adopt(fds[0], peer, counted); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		unix.Close(tcp)
		reset(raw)
		f.bridgeEnded()
		return
	}
	f.stats.adopted.Add(1)
	b := &bridge{tc: tc, rc: tc.NetConn().(*recordConn), tcp: tcp, pair: fds[1], local: raw.LocalAddr(), remote: raw.RemoteAddr()}
	raw.Close()
	b.rc.Conn = b
	d := f.disp[f.next.Add(1)%uint32(len(f.disp))]
	b.d = d
	if !d.loop.Post(func() { d.add(b) }) {
		unix.Close(tcp)
		unix.Close(fds[1])
		f.bridgeEnded()
	}
}

// dupSocket returns a close-on-exec duplicate of c's descriptor; it
// shares the socket, non-blocking as Go made it.
func dupSocket(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errors.New("tlsfront: not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}

// handshake runs the TLS handshake on raw under the size cap and the
// deadline Serve set. On failure raw is closed and the error names why (refusal.go).
func (f *Front) handshake(raw net.Conn) (*tls.Conn, error) {
	defer f.untrack(raw)
	f.stats.handshakes.Add(1)
	if sb, ok := raw.(interface{ SetWriteBuffer(int) error }); ok {
		_ = sb.SetWriteBuffer(f.o.SendBufferBytes)
	}
	lc := &recordConn{Conn: raw, left: f.o.HandshakeMaxBytes}
	tc := tls.Server(lc, f.cfg)
	err := tc.Handshake()
	if err == nil {
		err = raw.SetDeadline(time.Time{})
	}
	if err == nil {
		lc.left = -1 // no cap from now on; the bridge's goroutines start after this write
		return tc, nil
	}
	err = handshakeError(err, lc, f.isClosed())
	if errors.Is(err, ErrPlainHTTP) {
		answerPlainHTTP(raw)
	}
	if errors.Is(err, ErrHandshakeTimeout) || errors.Is(err, ErrHandshakeTooLarge) || errors.Is(err, ErrClosed) {
		reset(raw)
	} else {
		raw.Close() // the alert tls sent, or the 400, may still reach the client
	}
	return nil, err
}

func (f *Front) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.handshaking, c)
	f.mu.Unlock()
	f.hsDone.Done()
}

// addBridge counts a connection about to be bridged, unless the front is
// closing.
func (f *Front) addBridge() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.bridges++
	return true
}

// bridgeEnded is called once per addBridge, when the connection is gone.
func (f *Front) bridgeEnded() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bridges--
	if f.bridges == 0 && f.idle != nil {
		close(f.idle)
		f.idle = nil
	}
}

// stopDispatchers stops the dispatchers' loops, once, after the last
// bridge has ended.
func (f *Front) stopDispatchers() {
	f.ended.Do(func() {
		for _, d := range f.disp {
			d.loop.Stop()
		}
	})
}

// StopAccepting closes every listener given to Serve (and any given
// later) and aborts the handshakes in progress (Refused with ErrClosed);
// it returns when they have ended. Connections already bridged go on
// until the gateway closes its ends: a drain's first step.
func (f *Front) StopAccepting() {
	f.mu.Lock()
	f.closed = true
	for _, ln := range f.lns {
		ln.Close()
	}
	f.lns = nil
	for c := range f.handshaking {
		_ = c.SetDeadline(time.Unix(1, 0)) // the handshake fails now
	}
	f.mu.Unlock()
	f.hsDone.Wait()
}

// Shutdown stops accepting (StopAccepting) and waits until every bridged
// connection has ended — the gateway closes its ends while it drains — or
// until ctx is done, when it closes the rest at once and returns ctx's
// error.
func (f *Front) Shutdown(ctx context.Context) error {
	f.StopAccepting()

	f.mu.Lock()
	var idle chan struct{}
	if f.bridges > 0 {
		if f.idle == nil {
			f.idle = make(chan struct{})
		}
		idle = f.idle
	}
	f.mu.Unlock()
	if idle == nil {
		f.stopDispatchers()
		return nil
	}
	select {
	case <-idle:
		f.stopDispatchers()
		return nil
	case <-ctx.Done():
	}
	for _, d := range f.disp {
		// A bridge handed over after this task is added after the
		// forced close: poll until every one has gone.
		d.loop.Post(d.closeEvery)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-idle:
			done = true
		case <-tick.C:
			for _, d := range f.disp {
				d.loop.Post(d.closeEvery)
			}
		}
	}
	f.stopDispatchers()
	return ctx.Err()
}

// Close is Shutdown without waiting: every connection is closed now.
func (f *Front) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// recordConn is the TCP connection as tls.Conn reads it. It caps the
// bytes read before the handshake completes (left; < 0: no cap), and it
// never reads past the end of the current TLS record: whatever tls.Conn
// has not yet decrypted is then still in the kernel, so once a Read has
// returned less than its buffer, tls.Conn holds nothing more and the
// bridge may wait for the socket to be readable without a buffer (see
// bridge.toGateway). The cost is a second read per record (header, body).
//
// Used only by the goroutine that runs the handshake and, after it, the
// bridge's toGateway.
type recordConn struct {
	net.Conn
	left      int
	overLimit bool
	hdr       [5]byte // the current record's header, hdrN bytes of it read
	hdrN      int
	body      int // bytes of the current record's body still to read
}

func (c *recordConn) Read(p []byte) (int, error) {
	if c.left == 0 {
		c.overLimit = true
		return 0, ErrHandshakeTooLarge
	}
	if c.left > 0 && len(p) > c.left {
		p = p[:c.left]
	}
	if c.body > 0 {
		p = p[:min(len(p), c.body)]
	} else {
		p = p[:min(len(p), len(c.hdr)-c.hdrN)]
	}
	n, err := c.Conn.Read(p)
	if c.left > 0 {
		c.left -= n
	}
	if c.body > 0 {
		c.body -= n
		return n, err
	}
	c.hdrN += copy(c.hdr[c.hdrN:], p[:n])
	if c.hdrN == len(c.hdr) {
		c.hdrN = 0
		c.body = int(c.hdr[3])<<8 | int(c.hdr[4])
	}
	return n, err
}

// reset closes c with SO_LINGER 0: an RST, no TIME_WAIT, nothing read.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// addrPort returns a TCP peer address with IPv4-mapped IPv6 addresses
// unmapped (one spelling per client, as the gateway's own accept does).
func addrPort(a net.Addr) netip.AddrPort {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// plainHTTPAnswer is sent to a plain HTTP request on the TLS port, in the
// shape of the gateway's own HTTP refusals.
var plainHTTPAnswer = func() []byte {
	body := `{"error":"tls_handshake","message":"this port speaks TLS: use https:// or wss://"}`
	return fmt.Appendf(nil, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
}()

// answerPlainHTTP writes the 400 and lets the client read it: the write
// side is shut and what the client still sends is read and dropped for a
// moment, so that closing does not send an RST that destroys the answer.
func answerPlainHTTP(raw net.Conn) {
	_ = raw.SetDeadline(time.Now().Add(time.Second))
	if _, err := raw.Write(plainHTTPAnswer); err != nil {
		return
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	var sink [512]byte
	for i := 0; i < 16; i++ {
		if _, err := raw.Read(sink[:]); err != nil {
			return
		}
	}
}
