package gateway

import (
	"strconv"
	"strings"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/decision"
	"github.com/portcullis-gw/portcullis/policy/tokens"
)

// Redemption off the loop.
//
// The single-node token sources (policy/tokens, policy/jwt) answer from
// memory in microseconds, so the loop calls them inline. A cluster's
// source (policy/tokens/redistokens) asks Redis, and a network round trip
// must never block a loop, which serves thousands of connections. For
// such a source (it implements remoteRedeemer) a redemption goes like
// this:
//
//  1. The message that presents the token is handled up to the
//     redemption (schema, subscription cap, topic rule); there conn.redeem
//     keeps a copy of it in the loop's redeeming table, by conn id, and
//     starts the redemption on a goroutine. The message's handling stops
//     there: nothing is answered yet.
//  2. Messages the connection sends meanwhile are copied behind it, in
//     order (at most maxHeldMessages, charged to the address's inbound
//     budget like an unfinished message); one more closes the connection
//     with 1008 (msg_rate). Pings, pongs and closes are handled at once.
//  3. The answer is posted back to the loop (reactor.Loop.Post). The
//     message is handled again from the start, and this time conn.redeem
//     returns the answer; then the held messages are handled in order,
//     each of which may start another redemption and wait again.
//
// The source bounds each call with its own timeout and answers
// reason.TokenSourceUnavailable when Redis fails or is slow: the token is
// refused (fail closed). A loop runs at most maxRedeemsPerLoop
// redemptions at once; beyond that a token is refused the same way
// rather than queued without bound. A connection that closes while it
// waits is forgotten (conn.finish); its answer, when it comes, finds
// nothing and is dropped (the token is then spent, as for a client that
// hangs up right after its subscription).

// remoteRedeemer is implemented by a token source whose Redeem waits for
// the network: the gateway calls it off the loops.
type remoteRedeemer interface {
	RedeemsRemotely() bool
}

// concurrencyBound is implemented by a remote source that can serve only
// so many redemptions at once (the SQL source: its pool of database
// connections). The loops together then keep at most that many in flight,
// each its share rounded up, so that no goroutine is started only to wait
// for the source's pool.
type concurrencyBound interface {
	MaxConcurrent() int
}

// queueBound is implemented by a remote source that bounds each call
// (Options.Timeout): a redemption that waited longer than that in a loop's
// queue is refused without being started (fail closed), so a client never
// waits for its answer much beyond the source's timeout, even in a burst.
type queueBound interface {
	QueueTimeout() time.Duration
}

// Bounds of the asynchronous redemption.
const (
	// maxRedeemsPerLoop is how many redemptions one loop has in flight at
	// most (fewer for a concurrencyBound source).
	maxRedeemsPerLoop = 64
	// maxQueuedRedeems is how many more wait, per loop, for one of those
	// slots (a burst of logins); beyond it a token is refused
	// (token_source_unavailable, no strike).
	maxQueuedRedeems = 1024
	// maxHeldMessages is how many messages of one connection wait for its
	// redemption, the one that presents the token included.
	maxHeldMessages = 16
)

// redeemWait is a connection waiting for a redemption, in
// loopState.redeeming.
type redeemWait struct {
	token, user string        // what is being (or was just) redeemed
	res         tokens.Result // the answer, once ready
	ready       bool          // res answers token for user and is not used yet
	asking      bool          // a redemption is in flight
	held        [][]byte      // the message that presents the token, then those sent after it
}

// remoteTokens reports whether the token source redeems off the loop.
func (s *Server) remoteTokens() bool {
	r, ok := s.opts.Tokens.(remoteRedeemer)
	return ok && r.RedeemsRemotely()
}

// redeemSlots is how many redemptions each of loops loops may have in
// flight: maxRedeemsPerLoop, or its share of a concurrencyBound source's
// limit, rounded up (at least 1).
func redeemSlots(src TokenSource, loops int) int {
	b, ok := src.(concurrencyBound)
	if !ok || b.MaxConcurrent() <= 0 || loops <= 0 {
		return maxRedeemsPerLoop
	}
	return min(maxRedeemsPerLoop, max(1, (b.MaxConcurrent()+loops-1)/loops))
}

// redeemQueueTimeout is how long a redemption may wait in a loop's queue
// before it is refused unstarted; 0: no bound (the source has none).
func redeemQueueTimeout(src TokenSource) time.Duration {
	if b, ok := src.(queueBound); ok {
		return max(0, b.QueueTimeout())
	}
	return 0
}

// handleMessage hands one complete text message to the codec, or holds it
// behind a redemption the connection is waiting for.
func (c *conn) handleMessage(ls *loopState, payload []byte) {
	if len(ls.redeeming) > 0 {
		if w := ls.redeeming[c.id]; w != nil {
			c.holdMessage(ls, w, payload)
			return
		}
	}
	ls.current = payload
	c.codec().message(c, ls, payload)
	ls.current = nil
}

// holdMessage copies payload behind the messages waiting in w, or closes
// the connection (1008) when it already has maxHeldMessages waiting.
func (c *conn) holdMessage(ls *loopState, w *redeemWait, payload []byte) {
	if len(w.held) >= maxHeldMessages {
		c.refuse(ls, audit.Event{Detail: "more than " + strconv.Itoa(maxHeldMessages-1) +
			" messages sent while a token was being redeemed"},
			decision.Deny(reason.MsgRate).Closing(1008, "too many messages while a token is being checked"), nil)
		return
	}
	if !c.hold(ls, len(payload)) {
		return // over the inbound budget: refused and closing
	}
	w.held = append(w.held, append([]byte(nil), payload...))
}

// redeemOffLoop is conn.redeem for a source that redeems off the loop. It
// returns the answer when it has come for this very token and user (the
// message is being handled again), and otherwise starts the redemption
// and reports pending: the caller stops handling the message, which is
// handled again once the answer is posted back.
func (c *conn) redeemOffLoop(ls *loopState, token string, p tokens.Presenter) (tokens.Result, bool) {
	w := ls.redeeming[c.id]
	if w != nil && w.ready && w.token == token && w.user == p.UserID {
		w.ready = false
		return w.res, false
	}
	if ls.redeemsInFlight >= ls.redeemSlots && len(ls.redeemQueue) >= maxQueuedRedeems {
		return tokens.Result{Reason: reason.TokenSourceUnavailable,
			Detail: "all " + strconv.Itoa(ls.redeemSlots) + " redemptions of this event loop are in flight and " +
				strconv.Itoa(maxQueuedRedeems) + " more wait"}, false
	}
	if w == nil {
		// The message being handled waits for the answer.
		if !c.hold(ls, len(ls.current)) {
			return tokens.Result{}, true // over the inbound budget: refused and closing
		}
		w = &redeemWait{held: [][]byte{append([]byte(nil), ls.current...)}}
		if ls.redeeming == nil {
			ls.redeeming = make(map[uint64]*redeemWait)
		}
		ls.redeeming[c.id] = w
	}
	// The strings may point into the loop's read buffer: the goroutine
	// gets its own copies.
	token, p.UserID = strings.Clone(token), strings.Clone(p.UserID)
	w.token, w.user, w.ready, w.asking = token, p.UserID, false, true
	j := redeemJob{c: c, id: c.id, token: token, p: p, queued: ls.loop.Now}
	if ls.redeemsInFlight >= ls.redeemSlots {
		ls.redeemQueue = append(ls.redeemQueue, j) // started by redeemed when a slot frees
		return tokens.Result{}, true
	}
	ls.startRedeem(j)
	return tokens.Result{}, true
}

// redeemJob is one redemption to run off the loop for connection id.
type redeemJob struct {
	c      *conn
	id     uint64
	token  string
	p      tokens.Presenter
	queued time.Time // when it was asked for (the loop's clock)
}

// startRedeem runs j's redemption on a goroutine of its own and posts the
// answer back to the loop.
func (ls *loopState) startRedeem(j redeemJob) {
	ls.redeemsInFlight++
	src, now := ls.srv.opts.Tokens, ls.loop.Now
	go func() {
		res := src.Redeem(j.token, j.p, now)
		// A stopped loop runs no more tasks: nothing waits for this one.
		ls.loop.Post(func() { ls.redeemed(j.c, j.id, res) })
	}()
}

// startQueued starts waiting redemptions while slots are free, skipping
// those whose connection closed meanwhile and refusing, unstarted, those
// that waited longer than the source's timeout (redeemQueueTimeout).
func (ls *loopState) startQueued() {
	for len(ls.redeemQueue) > 0 && ls.redeemsInFlight < ls.redeemSlots {
		j := ls.redeemQueue[0]
		ls.redeemQueue[0] = redeemJob{}
		ls.redeemQueue = ls.redeemQueue[1:]
		if j.c.fd < 0 || j.c.id != j.id || ls.redeeming[j.id] == nil {
			continue
		}
		if ls.redeemWaitMax > 0 {
			if waited := ls.loop.Now.Sub(j.queued); waited > ls.redeemWaitMax {
				ls.answer(j.c, j.id, tokens.Result{Reason: reason.TokenSourceUnavailable,
					Detail: "waited " + waited.Round(time.Millisecond).String() + " for one of the " +
						strconv.Itoa(ls.redeemSlots) + " redemption slots of this event loop (more than the source's timeout " +
						ls.redeemWaitMax.String() + "): refused unstarted"})
				continue
			}
		}
		ls.startRedeem(j)
	}
	if len(ls.redeemQueue) == 0 {
		ls.redeemQueue = nil // let the burst's backing array go
	}
}

// redeemed takes the answer of a redemption for connection id (c, unless
// it closed meanwhile) on the loop, and handles the messages that waited
// for it.
func (ls *loopState) redeemed(c *conn, id uint64, res tokens.Result) {
	ls.redeemsInFlight--
	ls.startQueued()
	ls.answer(c, id, res)
}

// answer hands res, the answer to connection id's redemption, to the
// message that waits for it, then handles the messages held behind it.
func (ls *loopState) answer(c *conn, id uint64, res tokens.Result) {
	w := ls.redeeming[id]
	if w == nil || c.fd < 0 || c.id != id {
		return // the connection closed meanwhile
	}
	w.res, w.ready, w.asking = res, true, false
	for first := true; len(w.held) > 0; first = false {
		if c.fd < 0 || c.state != stateOpen {
			break
		}
		msg := w.held[0]
		// The first message was counted when it arrived; the others
		// reach the codec for the first time.
		ls.current, ls.replaying = msg, first
		c.codec().message(c, ls, msg)
		ls.current, ls.replaying = nil, false
		if w.asking {
			ls.flush()
			return // this message presented another token: it waits again
		}
		w.held[0] = nil
		w.held = w.held[1:]
		w.ready = false
		c.hold(ls, -len(msg))
		if c.unsup&unsupThis != 0 {
			c.unsup &^= unsupThis
		} else {
			c.unsup = 0
		}
		if c.banNow(ls) {
			break
		}
	}
	if ls.redeeming[id] == w {
		delete(ls.redeeming, id)
	}
	ls.flush()
}
