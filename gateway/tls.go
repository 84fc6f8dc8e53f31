package gateway

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/reactor"
	"github.com/portcullis-gw/portcullis/gateway/tlsfront"
	"github.com/portcullis-gw/portcullis/policy/decision"
)

// TLS configures wss:// on the public listener (docs/TLS.md).
type TLS struct {
	// CertFile and KeyFile are the PEM certificate chain (leaf first) and
	// its private key, readable by its owner only.
	CertFile, KeyFile string
	// MinVersion is tls.VersionTLS12 or tls.VersionTLS13
	// (tlsfront.ParseVersion); 0: TLS 1.2.
	MinVersion uint16
}

// tlsFront is the gateway's side of wss://: the listening sockets Bind
// made, served by a tlsfront.Front instead of the loops. The front runs
// the accept stage through the callbacks below, does the TLS handshake,
// and hands each connection's plaintext end of a socket pair to a loop,
// which serves it like an accepted TCP socket from the client's address.
type tlsFront struct {
	front *tlsfront.Front
	lns   []net.Listener // one per SO_REUSEPORT socket; fixed once built
	// pending counts the connections admitted at accept that are neither
	// open on a loop nor refused yet (their TLS handshake is in progress):
	// max_connections counts them.
	pending atomic.Int64
	next    atomic.Uint32 // the loop the next connection goes to, round-robin

	dropMu sync.Mutex     // serializes DropInKernel's attachments to lns
	served sync.WaitGroup // the accept goroutines
}

// initTLS builds the TLS front from s.opts.TLS and takes over the sockets
// of lns (each slot of lns.fds becomes -1: the loops get no listener).
func (s *Server) initTLS(lns *Listeners) error {
	o := s.opts.TLS
	t := &tlsFront{}
	lim := &s.opts.Limits
	f, err := tlsfront.New(tlsfront.Options{
		CertFile:          o.CertFile,
		KeyFile:           o.KeyFile,
		MinVersion:        o.MinVersion,
		HandshakeTimeout:  lim.HandshakeTimeout,
		SendBufferBytes:   lim.SendBufferBytes,
		WriteStallTimeout: lim.WriteStallTimeout,
		Admit:             s.tlsAdmit,
		Adopt:             s.tlsAdopt,
		Refused:           s.tlsRefused,
	})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	t.front = f
	for i, fd := range lns.fds {
		// FileListener duplicates the descriptor into Go's netpoller; the
		// socket (and a drop filter attached to either descriptor) is one.
		file := os.NewFile(uintptr(fd), "portcullis-listener")
		ln, err := net.FileListener(file)
		file.Close()
		lns.fds[i] = -1
		if err != nil {
			for _, l := range t.lns {
				l.Close()
			}
			lns.closeFrom(i + 1)
			return fmt.Errorf("gateway: TLS listener: %w", err)
		}
		t.lns = append(t.lns, ln)
	}
	s.tls = t
	return nil
}

// runTLS starts the front's accept goroutines, one per socket.
func (s *Server) runTLS() {
	t := s.tls
	if t == nil {
		return
	}
	for _, ln := range t.lns {
		t.served.Add(1)
		go func() {
			defer t.served.Done()
			if err := t.front.Serve(ln); err != nil {
				s.opts.Log.WithError(err).Error("TLS front stopped accepting")
			}
		}()
	}
}

// stopTLSAccepting closes the front's listeners and aborts the TLS
// handshakes in progress; connections on the loops go on.
func (s *Server) stopTLSAccepting() {
	if s.tls != nil {
		s.tls.front.StopAccepting()
	}
}

// shutdownTLS waits, until ctx is done, for the front's connections to
// end once the loops have closed their ends, then closes the rest.
func (s *Server) shutdownTLS(ctx context.Context) error {
	t := s.tls
	if t == nil {
		return nil
	}
	err := t.front.Shutdown(ctx)
	t.served.Wait()
	if err != nil {
		return fmt.Errorf("gateway: TLS front: %w", err)
	}
	return nil
}

// closeTLS releases the front of a server that never ran, or ends it.
func (s *Server) closeTLS() {
	t := s.tls
	if t == nil {
		return
	}
	for _, ln := range t.lns {
		ln.Close() // once served, the front has closed them already
	}
	_ = t.front.Close()
}

// tlsAdmit is the front's Admit: the accept stage (pipeline step 1,
// docs/ARCHITECTURE.md) for a TCP connection before its TLS handshake,
// as admit does for a plain socket. Every refusal resets the connection
// at once, before the handshake, and is audited (conn_rejected, stage
// accept); a rate or cap is struck as at a plain accept beyond its waiting
// allowance: a client over a limit gets no answer it could read without a
// handshake, and a handshake is what the limit is there to spare.
func (s *Server) tlsAdmit(peer netip.AddrPort) (admitted, counted bool) {
	s.accepted.Add(1)
	if s.draining.Load() {
		return false, false // as a loop that stopped accepting: no audit line
	}
	now := time.Now()
	addr := peer.Addr()
	rl := s.rules.Load()
	proxy := rl.clientIP.Trusted(addr)
	d := s.admission(addr, proxy, now)
	switch d.Why() {
	case reason.None:
		if s.conns.Load()+s.tls.pending.Load() >= int64(rl.limits.MaxConnections) {
			if !proxy {
				s.opts.Guard.Release(addr)
			}
			s.rejectedAtAccept(peer, decision.Deny(reason.GlobalConnections), "reset at accept: the server is at its connection limit", 0)
			return false, false
		}
		s.tls.pending.Add(1)
		return true, !proxy
	case reason.Blocked, reason.Banned, reason.ProxyHeader:
		s.rejectedAtAccept(peer, d, "", 0)
		return false, false
	case reason.AuditUnavailable, reason.ClusterUnavailable:
		if s.opts.Guard.Exempt(addr) {
			// An allow-listed address has no count and is always answered.
			s.tls.pending.Add(1)
			return true, false
		}
	}
	s.rejectedAtAccept(peer, d, "reset at accept, before the TLS handshake", 0)
	s.opts.Guard.Strike(addr, d.Reason, now)
	return false, false
}

// errLoopStopped refuses an adoption after the loops have stopped.
var errLoopStopped = errors.New("gateway: event loop stopped")

// tlsAdopt is the front's Adopt: the connection's end of its socket pair
// is opened on the next loop, round-robin, in the handshake state, from
// the client's address.
func (s *Server) tlsAdopt(fd int, peer netip.AddrPort, counted bool) error {
	i := s.tls.next.Add(1) % uint32(len(s.loops))
	ls := s.loops[i]
	if !ls.loop.Post(func() { ls.adopt(fd, peer, counted) }) {
		s.tls.pending.Add(-1)
		if counted {
			s.opts.Guard.Release(peer.Addr())
		}
		return errLoopStopped
	}
	return nil
}

// adopt opens a TLS connection's socket on this loop, unless the loop is
// shutting down. Loop goroutine.
func (ls *loopState) adopt(fd int, peer netip.AddrPort, counted bool) {
	s := ls.srv
	defer s.tls.pending.Add(-1)
	if ls.shuttingDown {
		if counted {
			s.opts.Guard.Release(peer.Addr())
		}
		unix.Close(fd)
		return
	}
	ls.open(fd, peer, counted, decision.Allow())
}

// tlsRefused is the front's Refused: an admitted connection that did not
// get through its TLS handshake gives its slot back and, as
// tlsfront.Classify says, is audited (conn_rejected, stage handshake; a
// plain HTTP request was answered 400) and struck.
func (s *Server) tlsRefused(peer netip.AddrPort, counted bool, err error) {
	s.tls.pending.Add(-1)
	addr := peer.Addr()
	if counted {
		s.opts.Guard.Release(addr)
	}
	r := tlsfront.Classify(err)
	if !r.Audit {
		return
	}
	code := 0
	if errors.Is(err, tlsfront.ErrPlainHTTP) {
		code = 400
	}
	s.rejected.Add(1)
	s.emit(audit.Event{Event: audit.KindConnRejected, Severity: audit.Warning, IP: addr, PeerIP: addr,
		CountedPrefix: s.opts.Guard.Counted(addr), Stage: audit.StageHandshake, Reason: r.Reason,
		Detail: audit.Cap(r.Detail), Code: code})
	s.opts.Guard.Strike(addr, r.Reason, time.Now())
}

// dropInKernelTLS attaches prog (nil: detaches) to the front's listening
// sockets, as DropInKernel does to the loops'.
func (s *Server) dropInKernelTLS(prog []unix.SockFilter) {
	t := s.tls
	if t == nil {
		return
	}
	t.dropMu.Lock()
	defer t.dropMu.Unlock()
	for _, ln := range t.lns {
		sc, ok := ln.(syscall.Conn)
		if !ok {
			continue
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			continue
		}
		var aerr error
		if err := rc.Control(func(fd uintptr) { aerr = reactor.AttachDropFilter(int(fd), prog) }); err != nil {
			continue // closed: accepting has stopped
		}
		if aerr != nil {
			s.opts.Log.WithError(aerr).Error("cannot install the kernel drop filter; banned addresses are still refused at accept")
		}
	}
}

// TLSEnabled reports whether the public listener speaks wss://.
func (s *Server) TLSEnabled() bool { return s.tls != nil }

// TLSCertificate returns the certificate new TLS handshakes are served
// (nil without TLS), for the reload audit line.
func (s *Server) TLSCertificate() *x509.Certificate {
	if s.tls == nil {
		return nil
	}
	return s.tls.front.Leaf()
}

// UseTLSPair serves p (tlsfront.LoadPair) to new TLS handshakes; live
// connections keep theirs. It reports false without TLS.
func (s *Server) UseTLSPair(p *tlsfront.Pair) bool {
	if s.tls == nil {
		return false
	}
	s.tls.front.Use(p)
	return true
}
