package gateway

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/portcullis-gw/portcullis/gateway/reactor"
	"github.com/portcullis-gw/portcullis/policy/tokens"
)

// startOneLoopServer is startTestServer with one event loop, so that every
// connection's syscalls are counted by the same loop.
func startOneLoopServer(t *testing.T) (*Server, *tokens.Store) {
	t.Helper()
	return startOneLoopServerWith(t, Options{Loops: 1})
}

func startOneLoopServerWith(t *testing.T, o Options) (*Server, *tokens.Store) {
	t.Helper()
	s, store := startServerWith(t, o)
	t.Cleanup(func() { _ = s.Shutdown(t.Context()) })
	return s, store
}

// eachSendMode runs f twice, with the loop sending through io_uring and
// with write(2) and writev(2), on a one-loop server. Where the kernel
// offers no io_uring the first is skipped, or fails under CI, whose
// machines have it.
func eachSendMode(t *testing.T, f func(t *testing.T, s *Server, store *tokens.Store, ring bool)) {
	for _, ring := range []bool{true, false} {
		name := map[bool]string{true: "io_uring", false: "write"}[ring]
		t.Run(name, func(t *testing.T) {
			s, store := startOneLoopServerWith(t, Options{Loops: 1, WriteSyscalls: !ring})
			var has bool
			onLoop(t, s, func(ls *loopState) { has = ls.loop.Ring() != nil })
			if has != ring {
				if ring && os.Getenv("CI") == "" {
					t.Skip("this kernel offers no io_uring (see the log); the loops write with write(2)")
				}
				t.Fatalf("loop has a ring: %v, want %v", has, ring)
			}
			f(t, s, store, ring)
		})
	}
}

// onLoop runs f on s's (only) loop and waits for it.
func onLoop(t *testing.T, s *Server, f func(ls *loopState)) {
	t.Helper()
	done := make(chan struct{})
	ls := s.loops[0]
	if !ls.loop.Post(func() { f(ls); close(done) }) {
		t.Fatal("loop refused the task")
	}
	<-done
}

// loopSyscalls reads the loop's syscall counts on its goroutine: exact,
// unlike Stats, which sees them as of the end of the latest turn.
func loopSyscalls(t *testing.T, s *Server) reactor.Syscalls {
	var sc reactor.Syscalls
	onLoop(t, s, func(ls *loopState) { sc = ls.loop.Sys })
	return sc
}

// readEvents reads n text frames from c and returns their payloads.
func readEvents(t *testing.T, c net.Conn, n int) []string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	rw := struct {
		io.Reader
		io.Writer
	}{c, c}
	var got []string
	for range n {
		b, err := wsutil.ReadServerText(rw)
		if err != nil {
			t.Fatalf("after %d events: %v", len(got), err)
		}
		got = append(got, string(b))
	}
	return got
}

// dialNews connects n clients subscribed to "news", closed when t ends.
func dialNews(t *testing.T, s *Server, store *tokens.Store, n int) []net.Conn {
	t.Helper()
	var clients []net.Conn
	for i := range n {
		c := dialSubscribed(t, s, store, fmt.Sprint("u", i), "news")
		t.Cleanup(func() { c.Close() })
		clients = append(clients, c)
	}
	return clients
}

// A publication to N subscribers whose sockets have room costs N sends
// and nothing else: no epoll_ctl (EPOLLOUT is never asked for), no read;
// the sends are N write(2), or one io_uring_enter carrying N.
func TestDeliverySyscalls(t *testing.T) {
	eachSendMode(t, func(t *testing.T, s *Server, store *tokens.Store, ring bool) {
		const n = 20
		clients := dialNews(t, s, store, n)
		before := loopSyscalls(t, s)
		if got, err := s.Publish("news", []byte(`{"n":1}`)); err != nil || got != n {
			t.Fatalf("Publish: %d, %v", got, err)
		}
		for _, c := range clients {
			if ev := readEvents(t, c, 1); !strings.Contains(ev[0], `"n":1`) {
				t.Fatalf("event %q", ev[0])
			}
		}
		after := loopSyscalls(t, s)
		w, v := after.Write-before.Write, after.Writev-before.Writev
		rs, rm, e := after.RingSend-before.RingSend, after.RingSendmsg-before.RingSendmsg, after.IOURingEnter-before.IOURingEnter
		if ring && (w != 0 || v != 0 || rs != n || rm != 0 || e != 1) {
			t.Errorf("%d write, %d writev, %d io_uring_enter carrying %d send and %d sendmsg for one publication to %d subscribers, want 1 io_uring_enter carrying %d send",
				w, v, e, rs, rm, n, n)
		}
		if !ring && (w != n || v != 0 || e != 0) {
			t.Errorf("%d write, %d writev and %d io_uring_enter for one publication to %d subscribers, want %d write", w, v, e, n, n)
		}
		if d := after.EpollCtl - before.EpollCtl; d != 0 {
			t.Errorf("%d epoll_ctl for one publication to idle sockets, want 0", d)
		}
		if d := after.Read - before.Read; d != 0 {
			t.Errorf("%d reads for one publication, want 0", d)
		}
		if st := s.Stats(); st.Syscalls.Sends() < n || st.LoopTurns.Count == 0 || len(st.LoopTurns.Buckets) != len(reactor.TurnBounds)+1 {
			t.Errorf("stats: syscalls %+v, loop turns %+v", st.Syscalls, st.LoopTurns)
		}
	})
}

// Publications queued in one turn go to each subscriber in one send (a
// writev, or a sendmsg in the ring), in the order they were published.
func TestDeliveriesCoalesce(t *testing.T) {
	eachSendMode(t, func(t *testing.T, s *Server, store *tokens.Store, ring bool) {
		const n, k = 10, 5
		clients := dialNews(t, s, store, n)
		before := loopSyscalls(t, s)
		// Published from the loop itself: the k tasks the Broker posts are
		// taken in the same turn as this one, as publications arriving faster
		// than a turn are.
		onLoop(t, s, func(*loopState) {
			for i := 1; i <= k; i++ {
				if _, err := s.Publish("news", fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
					t.Error(err)
				}
			}
		})
		for _, c := range clients {
			evs := readEvents(t, c, k)
			for i, ev := range evs {
				if want := fmt.Sprintf(`"n":%d`, i+1); !strings.Contains(ev, want) {
					t.Fatalf("event %d is %q, want %s: order lost", i, ev, want)
				}
			}
		}
		after := loopSyscalls(t, s)
		w, v := after.Write-before.Write, after.Writev-before.Writev
		rs, rm, e := after.RingSend-before.RingSend, after.RingSendmsg-before.RingSendmsg, after.IOURingEnter-before.IOURingEnter
		if ring && (w != 0 || v != 0 || rs != 0 || rm != n || e != 1) {
			t.Errorf("%d write, %d writev, %d io_uring_enter carrying %d send and %d sendmsg for %d publications to %d subscribers, want 1 io_uring_enter carrying %d sendmsg",
				w, v, e, rs, rm, k, n, n)
		}
		if !ring && (w != 0 || v != n || e != 0) {
			t.Errorf("%d write, %d writev and %d io_uring_enter for %d publications to %d subscribers, want %d writev", w, v, e, k, n, n)
		}
		if d := after.EpollCtl - before.EpollCtl; d != 0 {
			t.Errorf("%d epoll_ctl, want 0", d)
		}
	})
}

// A subscriber that does not read fills its socket: the rest of its queue
// waits for EPOLLOUT, asked for once (one epoll_ctl), and further
// publications are not written to the full socket meanwhile.
func TestFullSocketWaitsForWritable(t *testing.T) {
	eachSendMode(t, func(t *testing.T, s *Server, store *tokens.Store, _ bool) {
		c := dialSubscribed(t, s, store, "slow", "news")
		defer c.Close()
		before := loopSyscalls(t, s)
		big := []byte(`{"pad":"` + strings.Repeat("x", 32<<10) + `"}`)
		var full bool
		for i := 0; i < 64 && !full; i++ {
			if _, err := s.Publish("news", big); err != nil {
				t.Fatal(err)
			}
			onLoop(t, s, func(ls *loopState) {
				cs := ls.hub.topics["news"]
				full = cs != nil && len(cs.conns) == 1 && cs.conns[0].pollOut
			})
		}
		if !full {
			t.Fatal("the socket never filled")
		}
		mid := loopSyscalls(t, s)
		for range 3 {
			if _, err := s.Publish("news", []byte(`{"n":1}`)); err != nil {
				t.Fatal(err)
			}
		}
		after := loopSyscalls(t, s)
		if d := mid.EpollCtl - before.EpollCtl; d != 1 {
			t.Errorf("%d epoll_ctl while the socket filled, want 1 (EPOLLOUT on)", d)
		}
		if d := after.Sends() - mid.Sends(); d != 0 {
			t.Errorf("%d writes to a socket waiting for EPOLLOUT, want 0", d)
		}
		// Reading it all drains the queue; EPOLLOUT is dropped again.
		go func() { _, _ = io.Copy(io.Discard, c) }()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var waiting bool
			onLoop(t, s, func(ls *loopState) {
				cs := ls.hub.topics["news"]
				waiting = cs == nil || len(cs.conns) != 1 || cs.conns[0].pollOut || cs.conns[0].queued() != 0
			})
			if !waiting {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the queue never drained")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if d := loopSyscalls(t, s).EpollCtl - before.EpollCtl; d != 2 {
			t.Errorf("%d epoll_ctl over fill and drain, want 2", d)
		}
	})
}

// A flush set off while a flush handles the results of its sends (closing
// a connection, say) does nothing: the flush in progress takes what it
// queued, in a second batch, and nothing waits on the ring or walks the
// list of dirty connections twice.
func TestFlushNotReentered(t *testing.T) {
	eachSendMode(t, func(t *testing.T, s *Server, store *tokens.Store, ring bool) {
		if !ring {
			t.Skip("write(2) results are handled inside the flush's walk, not by a callback")
		}
		a := dialSubscribed(t, s, store, "a", "news")
		defer a.Close()
		b := dialSubscribed(t, s, store, "b", "other")
		defer b.Close()
		before := loopSyscalls(t, s)
		onLoop(t, s, func(ls *loopState) {
			orig := ls.onSent
			defer func() { ls.onSent = orig }()
			nested := false
			ls.onSent = func(d reactor.Completion) {
				orig(d)
				if !nested {
					nested = true
					ls.deliver(newPublication("other", []byte(`{"n":2}`)))
					ls.flush()
				}
			}
			ls.deliver(newPublication("news", []byte(`{"n":1}`)))
			ls.flush()
		})
		if ev := readEvents(t, a, 1); !strings.Contains(ev[0], `"n":1`) {
			t.Fatalf("a got %q", ev[0])
		}
		if ev := readEvents(t, b, 1); !strings.Contains(ev[0], `"n":2`) {
			t.Fatalf("b got %q", ev[0])
		}
		after := loopSyscalls(t, s)
		if e, w, rs := after.IOURingEnter-before.IOURingEnter, after.Write-before.Write, after.RingSend-before.RingSend; e != 2 || rs != 2 || w != 0 {
			t.Errorf("%d io_uring_enter carrying %d sends, %d write; want 2 carrying one each", e, rs, w)
		}
	})
}
