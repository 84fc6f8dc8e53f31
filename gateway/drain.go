package gateway

import (
	"context"
	"fmt"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// drainTick is how often a drain closes the clients that are due.
const drainTick = 20 * time.Millisecond

// Draining reports whether a drain or shutdown has begun: the gateway
// accepts no new connection and readiness probes must answer 503.
func (s *Server) Draining() bool { return s.draining.Load() }

// Drain stops accepting at once, audits drain_started, closes the live
// clients with 1001 spread evenly over window (so that they do not all
// reconnect elsewhere in the same instant), then shuts down as Shutdown
// does. When ctx is done (a second signal) the remaining clients are
// closed at once and their sockets reset if they do not flush in time.
// A zero window closes every client at once.
func (s *Server) Drain(ctx context.Context, window time.Duration) error {
	s.draining.Store(true)
	s.stopTLSAccepting()
	counts := make(chan int, len(s.loops))
	for _, ls := range s.loops {
		if !ls.loop.Post(func() { counts <- ls.stopAccepting() }) {
			counts <- 0
		}
	}
	perLoop := make([]int, len(s.loops))
	total := 0
	for i := range s.loops {
		perLoop[i] = <-counts // the order does not matter: only the sum is logged
		total += perLoop[i]
	}
	s.opts.Audit.Emit(audit.Event{Event: audit.KindDrainStarted, Severity: audit.Notice, Stage: audit.StageSystem,
		Count: int64(total), Detail: fmt.Sprintf("accepting stopped; closing %d clients with 1001 over %s", total, window)})
	if total > 0 && window > 0 {
		s.spreadCloses(ctx, window)
	}
	// What is left (clients that connected in between, none) goes at once.
	if ctx.Err() != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return s.Shutdown(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}

// spreadCloses closes the open clients over window: at each tick, every
// loop closes as many as make its share due by then (its clients at the
// start times the fraction of the window passed). It returns at the end
// of the window, when no client is left, or when ctx is done.
func (s *Server) spreadCloses(ctx context.Context, window time.Duration) {
	start := time.Now()
	closed := 0
	tick := time.NewTicker(drainTick)
	defer tick.Stop()
	total := int(s.upgraded.Load())
	for s.upgraded.Load() > 0 {
		elapsed := time.Since(start)
		if elapsed >= window {
			return
		}
		// due is rounded up, so the first client goes at once and the
		// last one a step before the end of the window.
		due := int((int64(total)*int64(elapsed) + int64(window) - 1) / int64(window))
		if n := due - closed; n > 0 {
			closed += s.closeSome(n)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// closeSome closes up to n open clients with 1001, asking every loop for
// its share, and returns how many it closed.
func (s *Server) closeSome(n int) int {
	done := 0
	for done < n {
		share := (n - done + len(s.loops) - 1) / len(s.loops)
		res := make(chan int, len(s.loops))
		posted := 0
		for _, ls := range s.loops {
			if ls.loop.Post(func() { res <- ls.closeOpen(share) }) {
				posted++
			}
		}
		got := 0
		for range posted {
			got += <-res
		}
		done += got
		if got == 0 {
			break
		}
	}
	return done
}

// stopAccepting closes the loop's listener, ends the handshakes in
// progress and returns how many open clients the loop has. It runs on the
// loop.
func (ls *loopState) stopAccepting() int {
	ls.shuttingDown = true
	if ls.lfd >= 0 {
		ls.loop.Remove(ls.lfd)
		ls.lfd = -1
	}
	open := 0
	for _, c := range ls.conns {
		if c == nil || c.fd < 0 {
			continue
		}
		switch c.state {
		case stateOpen:
			open++
		case stateHandshake:
			c.finish(ls, reason.ShuttingDown, 0, false)
		}
	}
	ls.flush()
	return open
}

// closeOpen closes up to n of the loop's open clients with 1001 and
// returns how many. It runs on the loop, and resumes its walk of the
// connection table where the last call stopped (drainNext), so a drain
// walks the table once however many ticks it takes.
func (ls *loopState) closeOpen(n int) int {
	k := 0
	for ; ls.drainNext < len(ls.conns) && k < n; ls.drainNext++ {
		if c := ls.conns[ls.drainNext]; c != nil && c.fd >= 0 && c.state == stateOpen {
			c.closeWith(ls, 1001, reason.ShuttingDown, "server shutting down", 2*time.Second)
			k++
		}
	}
	ls.flush()
	return k
}
