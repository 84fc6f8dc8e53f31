package gateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"golang.org/x/sys/unix"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/reactor"
	"github.com/portcullis-gw/portcullis/policy/tokens"
)

// startRecordedOneLoop is startOneLoopServer with its audit events recorded.
func startRecordedOneLoop(t *testing.T) (*Server, *tokens.Store, *recSink) {
	t.Helper()
	rec := &recSink{}
	s, store := startServerWith(t, Options{Loops: 1, Audit: rec})
	t.Cleanup(func() { _ = s.Shutdown(t.Context()) })
	return s, store, rec
}

// waitUntil polls cond on s's loop until it holds, for at most 10 s.
func waitUntil(t *testing.T, s *Server, what string, cond func(ls *loopState) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ok bool
		onLoop(t, s, func(ls *loopState) { ok = cond(ls) })
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// closesOf returns the recorded conn_close events.
func closesOf(rec *recSink) []audit.Event {
	var out []audit.Event
	for _, e := range rec.all() {
		if e.Event == audit.KindConnClose {
			out = append(out, e)
		}
	}
	return out
}

// When every subscriber hangs up at once, each socket leaves epoll when its
// hang-up is reported (one epoll_ctl), each connection is read to its EOF
// and finished (audited, unsubscribed, released) at the end of the turn,
// its socket closed once (one close), and the topic goes when its last
// subscriber leaves.
func TestMassHangUp(t *testing.T) {
	s, store, rec := startRecordedOneLoop(t)
	const n = reactor.MaxEvents + 44 // more than one epoll_wait's worth: the later ones wait behind a full batch
	var clients []net.Conn
	for i := range n {
		clients = append(clients, dialSubscribed(t, s, store, fmt.Sprint("u", i), "news"))
	}
	before := loopSyscalls(t, s)
	for _, c := range clients {
		_ = c.Close()
	}
	waitUntil(t, s, "every connection finished and its socket closed", func(ls *loopState) bool {
		return ls.nconns == 0 && len(ls.closing) == 0
	})
	after := loopSyscalls(t, s)
	if d := after.Close - before.Close; d != n {
		t.Errorf("%d close for %d hang-ups, want %d", d, n, n)
	}
	if d := after.EpollCtl - before.EpollCtl; d != n {
		t.Errorf("%d epoll_ctl for %d hang-ups, want %d (one DEL each)", d, n, n)
	}
	if st := s.Stats(); st.Connections != 0 || st.Subscriptions != 0 || st.Topics != 0 {
		t.Errorf("after the hang-ups: %d connections, %d subscriptions, %d topics", st.Connections, st.Subscriptions, st.Topics)
	}
	closes := closesOf(rec)
	if len(closes) != n {
		t.Fatalf("%d conn_close events, want %d", len(closes), n)
	}
	for _, e := range closes {
		if e.Reason != reason.ClientClosed || e.Code != 1006 || e.Stage != audit.StageClose || e.UserID == "" {
			t.Fatalf("conn_close %+v", e)
		}
	}
}

// A finished connection's socket leaves epoll at once but is closed at the
// end of the turn, after the flush: at least closeMin per turn, the rest
// within the turn's budget, in the next turns if need be. The clients get
// their close frame, then the end of the stream.
func TestCloseAtEndOfTurn(t *testing.T) {
	s, store, rec := startRecordedOneLoop(t)
	const n = closeMin + 20
	var clients []net.Conn
	for i := range n {
		c := dialSubscribed(t, s, store, fmt.Sprint("u", i), "news")
		defer c.Close()
		clients = append(clients, c)
	}
	onLoop(t, s, func(ls *loopState) {
		var fds []int
		for _, c := range ls.conns {
			if c != nil && c.fd >= 0 {
				fds = append(fds, int(c.fd))
				c.closeWith(ls, 1001, reason.ShuttingDown, "going away", closeGrace)
			}
		}
		if len(fds) != n {
			t.Errorf("%d open connections on the loop, want %d", len(fds), n)
			return
		}
		ls.flush()
		for _, fd := range fds {
			ls.conns[fd].finish(ls, reason.ShuttingDown, 1001, false)
		}
		if len(ls.closing) != n || ls.nconns != 0 {
			t.Errorf("%d sockets queued to close, %d connections left; want %d and 0", len(ls.closing), ls.nconns, n)
			return
		}
		for _, fd := range fds {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
				t.Errorf("socket %d closed before the end of the turn: %v", fd, err)
			}
		}
		// Past the budget a turn still closes closeMin.
		if !ls.closeDeferred(time.Now().Add(-time.Second)) || len(ls.closing) != n-closeMin {
			t.Errorf("%d sockets left after a turn over budget, want %d", len(ls.closing), n-closeMin)
		}
	})
	waitUntil(t, s, "the deferred closes done", func(ls *loopState) bool { return len(ls.closing) == 0 })
	for i, c := range clients {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		h, err := readUntilClose(c)
		if err != nil || h != 1001 {
			t.Fatalf("client %d: close code %d, %v", i, h, err)
		}
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("client %d after the close frame: %v, want EOF", i, err)
		}
	}
	if closes := closesOf(rec); len(closes) != n || closes[0].Reason != reason.ShuttingDown || closes[0].Code != 1001 {
		t.Fatalf("%d conn_close events (%+v), want %d shutting_down 1001", len(closes), closes, n)
	}
}

// readUntilClose reads server frames up to the close frame and returns its
// code.
func readUntilClose(c net.Conn) (int, error) {
	for {
		h, err := ws.ReadHeader(c)
		if err != nil {
			return 0, err
		}
		if h.Length > 1<<20 {
			return 0, fmt.Errorf("frame of %d bytes", h.Length)
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c, payload); err != nil {
			return 0, err
		}
		if h.OpCode == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(payload)
			return int(code), nil
		}
	}
}

// A connect burst is accepted acceptBatch sockets per readiness event: the
// listener stays readable, so the rest are accepted in the next turns.
func TestAcceptBatch(t *testing.T) {
	s, _ := startOneLoopServer(t)
	const n = acceptBatch + 36
	started, release, done := make(chan struct{}), make(chan struct{}), make(chan uint64)
	ls := s.loops[0]
	// Hold the loop while the burst queues up in the listen backlog.
	ls.loop.Post(func() {
		close(started)
		<-release
		before := s.accepted.Load()
		ls.accept()
		done <- s.accepted.Load() - before
	})
	<-started
	for range n {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	close(release)
	if got := <-done; got != acceptBatch {
		t.Fatalf("one readiness event accepted %d of %d waiting sockets, want %d", got, n, acceptBatch)
	}
	waitUntil(t, s, "the rest of the burst accepted", func(ls *loopState) bool { return ls.nconns == n })
}

// What a peer sent before hanging up is read and handled before its EOF: a
// close frame sent just before the FIN gives the ordinary clean close (its
// code in the audit line), not an abnormal one.
func TestHangUpReadsWhatCameBefore(t *testing.T) {
	s, store, rec := startRecordedOneLoop(t)
	c := dialSubscribed(t, s, store, "u1", "news")
	body := ws.NewCloseFrameBody(ws.StatusGoingAway, "bye")
	if err := wsutil.WriteClientMessage(c, ws.OpClose, body); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	waitUntil(t, s, "the connection finished", func(ls *loopState) bool { return ls.nconns == 0 })
	closes := closesOf(rec)
	if len(closes) != 1 || closes[0].Code != int(ws.StatusGoingAway) || closes[0].Reason != reason.ClientClosed {
		t.Fatalf("conn_close events %+v, want one client_closed 1001", closes)
	}
	c.Close()
}

// A hang-up event for a socket that has nothing to read after all (the
// peer had not hung up) puts the socket back into epoll, with EPOLLOUT if
// a write asked for it meanwhile: its next messages are served as before.
func TestHangUpWithNothingToReadRejoins(t *testing.T) {
	s, store, _ := startRecordedOneLoop(t)
	c := dialSubscribed(t, s, store, "u1", "news")
	defer c.Close()
	onLoop(t, s, func(ls *loopState) {
		var cc *conn
		for _, x := range ls.conns {
			if x != nil && x.fd >= 0 {
				cc = x
			}
		}
		ls.hangUp(cc)
		if !cc.hungUp || len(ls.hungUp) != 1 {
			t.Errorf("hangUp: hungUp %v, %d queued", cc.hungUp, len(ls.hungUp))
			return
		}
		cc.wantWritable(ls, true) // out of epoll: remembered, no epoll_ctl
		if more := ls.readHungUp(time.Now().Add(time.Second)); more || len(ls.hungUp) != 0 {
			t.Errorf("readHungUp left %d (more %v)", len(ls.hungUp), more)
		}
		if cc.hungUp || cc.fd < 0 || !cc.pollOut {
			t.Errorf("after readHungUp: hungUp %v fd %d pollOut %v; want back in epoll, open, EPOLLOUT", cc.hungUp, cc.fd, cc.pollOut)
		}
		cc.wantWritable(ls, false)
	})
	if err := wsutil.WriteClientMessage(c, ws.OpPing, []byte("p")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		h, err := ws.ReadHeader(c)
		if err != nil {
			t.Fatalf("no pong after rejoining epoll: %v", err)
		}
		if _, err := io.CopyN(io.Discard, c, h.Length); err != nil {
			t.Fatal(err)
		}
		if h.OpCode == ws.OpPong {
			return
		}
	}
}
