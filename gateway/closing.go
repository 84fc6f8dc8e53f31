package gateway

import (
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/reactor"
)

// Closing a connection's socket is its costliest step: close(2) of a TCP
// socket sends the FIN or RST and, on loopback or a fast link, runs the
// peer's side of it too, tens of microseconds where the rest of a close
// takes a few. When thousands of clients hang up at once, a turn that
// closed each socket as its hang-up was read would get through a few dozen
// of the ready events within its budget and leave the rest, a bystander's
// ping among them, to later turns. So finish only takes the socket out of
// epoll (closeLater), and the end of the turn, after the flush, closes
// what the turn left (closeDeferred): at least closeMin per turn, the rest
// within the turn's budget, oldest first. The descriptor stays allocated
// until then, so its number cannot be reused meanwhile, and nothing can be
// read from or written to it: the connection is already gone.

// Hang-ups are taken out of the way first. epoll reports ready sockets in
// the order they became ready, so a bystander's ping that arrives just
// after 7,500 clients of its loop hung up is reported after all 7,500
// hang-ups: it waited for every one of them to be read, finished and
// audited, 20–50 ms on two busy cores. So a hang-up event only takes the
// socket out of epoll (hangUp, one epoll_ctl) and queues the connection;
// the end of the turn reads what it sent last and finishes it (readHungUp)
// within the budget. Nothing is lost: the socket still holds what the
// client sent before its FIN, and every close is audited as before, a
// few milliseconds later.
//
// While epoll_wait returns full batches (Loop.Backlogged), more events are
// waiting behind them, so the end of a turn does only the least of this
// work (hungUpMin, closeMinBacklogged) and the loop goes back to epoll_wait
// at once: the events ahead of the ping are got through at the cost of an
// epoll_ctl each, and the finishing and closing resume at full budget once
// the ping has been answered.

// closeMin is how many deferred closes a turn makes at least, whatever its
// budget, so that the closes always progress; closeMinBacklogged is that
// least while epoll reports full batches.
const (
	closeMin           = 32
	closeMinBacklogged = 8
)

// hungUpMin is how many hung-up connections a turn finishes at least;
// hungUpReads is how many reads one gets before it goes back into epoll
// (a peer that half-closed after sending more than that).
const (
	hungUpMin   = 8
	hungUpReads = 16
)

// closeLater queues the close of a finished connection's socket for the
// end of the turn, taking it out of epoll first unless it already is
// (inEpoll false: a hang-up took it out).
func (ls *loopState) closeLater(fd int, inEpoll bool) {
	if inEpoll {
		if err := ls.loop.Detach(fd); err != nil {
			// Not in epoll (it never got there): nothing can report it,
			// close it now.
			ls.loop.Sys.Close++
			_ = reactor.Close(fd)
			return
		}
	}
	ls.closing = append(ls.closing, int32(fd))
}

// closeDeferred closes the sockets closeLater queued, at least closeMin
// (closeMinBacklogged while epoll reports full batches), then until
// deadline (the zero time: all of them), and reports whether some are
// left for the next turn.
func (ls *loopState) closeDeferred(deadline time.Time) bool {
	q := ls.closing
	least, backlogged := closeMin, ls.loop.Backlogged()
	if backlogged {
		least = closeMinBacklogged
	}
	i := 0
	for ; i < len(q); i++ {
		if i >= least && !deadline.IsZero() && (backlogged || i%8 == 0 && time.Now().After(deadline)) {
			break
		}
		ls.loop.Sys.Close++
		_ = reactor.Close(int(q[i]))
	}
	m := copy(q, q[i:])
	ls.closing = q[:m]
	return m > 0
}

// hangUp takes the socket of a connection whose peer hung up out of epoll
// and queues the connection for readHungUp.
func (ls *loopState) hangUp(c *conn) {
	if err := ls.loop.Detach(int(c.fd)); err != nil {
		c.onReadable(ls) // as if it were only readable
		return
	}
	c.hungUp = true
	ls.hungUp = append(ls.hungUp, c)
}

// readHungUp reads what each queued hung-up connection sent before its
// hang-up, which finishes it at its EOF: at least hungUpMin, then until
// deadline (only hungUpMin while epoll reports full batches), oldest
// first. It reports whether some are left for the next turn.
func (ls *loopState) readHungUp(deadline time.Time) bool {
	q := ls.hungUp
	backlogged := ls.loop.Backlogged()
	i := 0
	for ; i < len(q); i++ {
		if i >= hungUpMin && (backlogged || i%8 == 0 && time.Now().After(deadline)) {
			break
		}
		c := q[i]
		q[i] = nil
		for n := 0; n < hungUpReads && c.fd >= 0; n++ {
			if !c.onReadable(ls) {
				break
			}
		}
		if c.fd >= 0 {
			ls.rejoin(c)
		}
	}
	m := copy(q, q[i:])
	clear(q[m:])
	ls.hungUp = q[:m]
	return m > 0
}

// rejoin puts a connection that hangUp took out of epoll back in (its
// socket had nothing to read yet, or more than hungUpReads reads), so that
// its next readiness is reported as before.
func (ls *loopState) rejoin(c *conn) {
	c.hungUp = false
	if err := ls.loop.Attach(int(c.fd), c.events(c.pollOut)); err != nil {
		c.finish(ls, reason.ReadError, 1006, true)
	}
}
