package gateway

import (
	"time"

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

// closeMin is how many deferred closes a turn makes at least, whatever its
// budget, so that the closes always progress.
const closeMin = 32

// closeLater takes the socket of a finished connection out of epoll and
// queues its close for the end of the turn.
func (ls *loopState) closeLater(fd int) {
	if err := ls.loop.Detach(fd); err != nil {
		// Not in epoll (it never got there): nothing can report it, close
		// it now.
		ls.loop.Sys.Close++
		_ = reactor.Close(fd)
		return
	}
	ls.closing = append(ls.closing, int32(fd))
}

// closeDeferred closes the sockets closeLater queued, at least closeMin,
// then until deadline (the zero time: all of them), and reports whether
// some are left for the next turn.
func (ls *loopState) closeDeferred(deadline time.Time) bool {
	q := ls.closing
	i := 0
	for ; i < len(q); i++ {
		if i >= closeMin && i%8 == 0 && !deadline.IsZero() && time.Now().After(deadline) {
			break
		}
		ls.loop.Sys.Close++
		_ = reactor.Close(int(q[i]))
	}
	m := copy(q, q[i:])
	ls.closing = q[:m]
	return m > 0
}
