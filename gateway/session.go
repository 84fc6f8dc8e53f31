package gateway

import (
	"strconv"
	"time"

	"github.com/gobwas/ws"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/frame"
	"github.com/portcullis-gw/portcullis/gateway/native"
	"github.com/portcullis-gw/portcullis/policy/reason"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// sendText queues one text frame built by build into a fresh buffer.
func (c *conn) sendText(ls *loopState, payload []byte) {
	c.enqueue(ls, frame.AppendFrame(make([]byte, 0, len(payload)+4), ws.OpText, payload), false)
}

// sendWelcome sends the protocol's first frame, if it has one (WAMP v2
// waits for the client's HELLO).
func (c *conn) sendWelcome(ls *loopState) {
	switch c.proto {
	case protoWAMP1:
		c.sendWAMP1Welcome(ls)
	case protoWAMP2:
	default:
		ls.scratch = native.AppendWelcome(ls.scratch[:0], ls.srv.sessionID(c.id), "portcullis/"+ls.srv.opts.Version)
		c.sendText(ls, ls.scratch)
	}
}

// sessionID is the session id of connection id in native and WAMP v1
// welcomes: unique across restarts by the boot id.
func (s *Server) sessionID(id uint64) string {
	return s.bootID + "-" + strconv.FormatUint(id, 36)
}

// sendError sends a native error reply; the WAMP protocols have none for
// what calls it (a rate-limited message is dropped there).
func (c *conn) sendError(ls *loopState, m *schema.Message, r reason.Reason, msg string) {
	if c.proto != protoNative {
		return
	}
	var id int64
	var has bool
	if m != nil {
		id, has = m.ID, m.HasID
	}
	ls.scratch = native.AppendError(ls.scratch[:0], id, has, r, msg)
	c.sendText(ls, ls.scratch)
}

// onNativeMessage handles one complete text message of portcullis.v1:
// size/depth → schema → token → topic rule, cheapest first (docs/ARCHITECTURE.md).
func (c *conn) onNativeMessage(ls *loopState, payload []byte) {
	m, v := ls.srv.opts.Schema.Check(payload)
	if v != nil {
		c.emit(ls, audit.Event{Event: audit.KindMessageRejected, Severity: audit.Warning, Stage: audit.StageMessage,
			Detail: capString(v.Keyword+" at "+v.Pointer, 200)}, v.Reason)
		msg := v.Message
		if v.Reason == reason.UnknownOp {
			msg = ""
		}
		c.sendError(ls, &m, v.Reason, msg)
		return
	}
	switch m.Op {
	case "subscribe":
		c.onSubscribe(ls, &m)
	case "unsubscribe":
		c.onUnsubscribe(ls, &m)
	case "publish":
		c.onPublish(ls, &m)
	case "ping":
		ls.scratch = native.AppendPong(ls.scratch[:0], m.ID, m.HasID)
		c.sendText(ls, ls.scratch)
	default:
		c.emit(ls, audit.Event{Event: audit.KindMessageRejected, Severity: audit.Warning, Stage: audit.StageMessage}, reason.UnknownOp)
		c.sendError(ls, &m, reason.UnknownOp, "")
	}
}

// authorizeWith decides whether this connection may subscribe to m.Topic,
// redeeming m.Token where the rule needs one; g, if not nil, is a grant
// already redeemed on this connection (a WAMP v2 ticket) standing in for
// m.Token.
func (c *conn) authorizeWith(ls *loopState, m *schema.Message, g *tokens.Grant) (fp string, r reason.Reason) {
	fp, r, _ = c.authorizeSpent(ls, m, g)
	return fp, r
}

// redeem presents token for this connection, from its client address,
// as userID.
func (c *conn) redeem(ls *loopState, token, userID string) tokens.Result {
	client := c.client()
	return ls.srv.opts.Tokens.Redeem(token, tokens.Presenter{Conn: c.id, Addr: client,
		Counted: ls.srv.opts.Guard.Counted(client), UserID: userID}, ls.loop.Now)
}

// spentEvent completes the audit event e of a token refused for r with
// res, the token source's answer: res.Detail, when e has none; for a spent
// token the address that redeemed it and how many seconds ago; and — for
// a suspected theft (reason.TokenTheft) — critical severity, whatever path
// refused it. An e refused before or after redeeming (res.Reason
// reason.None) gets nothing.
func spentEvent(e *audit.Event, r reason.Reason, res tokens.Result, now time.Time) {
	if res.Reason == reason.None || res.Reason != r {
		return
	}
	if e.Detail == "" {
		e.Detail = res.Detail
	}
	if r == reason.TokenTheft {
		e.Severity = audit.Critical
	}
	if sp := res.Spent; (r == reason.TokenReplayed || r == reason.TokenTheft) && sp.By.IsValid() {
		e.RedeemedIP = sp.By.String()
		// Loops read the clock at different instants: never negative.
		e.RedeemedAgoS = max(int64(now.Sub(sp.At)/time.Second), 0)
	}
}

// authorizeSpent is authorizeWith, also returning the token source's
// answer when redeeming m.Token failed (see spentEvent); a zero Result
// otherwise. The topic rules decide through topics.Set.CanSubscribe: first
// without a token (a public or denied topic ends there; a topic that needs
// one comes back TokenMissing), then, once the token is redeemed and
// covers the topic, with it (the {userId} check).
func (c *conn) authorizeSpent(ls *loopState, m *schema.Message, g *tokens.Grant) (fp string, r reason.Reason, res tokens.Result) {
	set := ls.srv.opts.Topics
	if r = set.CanSubscribe(m.Topic, m.UserID, false); r != reason.TokenMissing {
		return "", r, res
	}
	if g == nil {
		if m.Token == "" {
			return "", reason.TokenMissing, res
		}
		if res = c.redeem(ls, m.Token, m.UserID); res.Reason != reason.None {
			return audit.TokenFP(m.Token), res.Reason, res
		}
		g, res = res.Grant, tokens.Result{}
	} else if !g.ValidAt(ls.loop.Now) {
		return g.FP(), reason.TokenExpired, res
	}
	fp = g.FP()
	if g.UserID() != m.UserID {
		return fp, reason.TokenUserMismatch, res
	}
	if !g.Allows(m.Topic, m.UserID) {
		return fp, reason.TokenTopicMismatch, res
	}
	if r = set.CanSubscribe(m.Topic, m.UserID, true); r != reason.None {
		return fp, r, res
	}
	c.addGrant(ls, g)
	return fp, reason.None, res
}

// addGrant remembers a token redeemed on this connection: it stays valid
// here, and only here, for further subscriptions and publishes. The newest
// grant is c.grant; up to seven older ones wait in ls.older.
func (c *conn) addGrant(ls *loopState, g *tokens.Grant) {
	if c.grant == g {
		return
	}
	if c.grant == nil {
		c.grant = g
		return
	}
	older := ls.older[c.id]
	for i, h := range older {
		if h == g {
			older = append(older[:i], older[i+1:]...)
			break
		}
	}
	if len(older) >= 7 {
		older = append(older[:0], older[1:]...)
	}
	if ls.older == nil {
		ls.older = make(map[uint64][]*tokens.Grant)
	}
	ls.older[c.id] = append(older, c.grant)
	c.grant = g
}

// eachGrant calls f with every grant redeemed on c, newest first, until f
// returns false.
func (c *conn) eachGrant(ls *loopState, f func(*tokens.Grant) bool) {
	if c.grant == nil || !f(c.grant) {
		return
	}
	older := ls.older[c.id]
	for i := len(older) - 1; i >= 0; i-- {
		if !f(older[i]) {
			return
		}
	}
}

// userID is the user of the newest token redeemed here, for audit events.
func (c *conn) userID() string {
	if c.grant == nil {
		return ""
	}
	return c.grant.UserID()
}

func (c *conn) onSubscribe(ls *loopState, m *schema.Message) {
	if c.findSub(m.Topic) >= 0 {
		ls.scratch = native.AppendSubscribed(ls.scratch[:0], m.ID, m.HasID, m.Topic)
		c.sendText(ls, ls.scratch)
		return
	}
	if len(c.subs) >= ls.srv.opts.Limits.MaxSubscriptionsConn {
		c.emit(ls, audit.Event{Event: audit.KindSubscribeDenied, Severity: audit.Notice, Stage: audit.StageMessage,
			Topic: m.Topic, UserID: m.UserID}, reason.TooManySubscriptions)
		c.sendError(ls, m, reason.TooManySubscriptions, "")
		return
	}
	fp, r, sp := c.authorizeSpent(ls, m, nil)
	if r != reason.None {
		ev, sev := audit.KindSubscribeDenied, audit.Notice
		if r.IsAuth() {
			ev, sev = audit.KindAuthFailed, audit.Warning
		}
		e := audit.Event{Event: ev, Severity: sev, Stage: audit.StageMessage,
			Topic: m.Topic, UserID: m.UserID, TokenFP: fp}
		spentEvent(&e, r, sp, ls.loop.Now)
		c.emit(ls, e, r)
		c.sendError(ls, m, r, "")
		return
	}
	if fp != "" {
		c.emit(ls, audit.Event{Event: audit.KindAuthOK, Severity: audit.Info, Stage: audit.StageMessage,
			Topic: m.Topic, UserID: m.UserID, TokenFP: fp}, reason.None)
	}
	ls.subscribe(c, m.Topic)
	c.emit(ls, audit.Event{Event: audit.KindSubscribe, Severity: audit.Info, Stage: audit.StageMessage,
		Topic: m.Topic, UserID: m.UserID, TokenFP: fp}, reason.None)
	ls.scratch = native.AppendSubscribed(ls.scratch[:0], m.ID, m.HasID, m.Topic)
	c.sendText(ls, ls.scratch)
}

func (c *conn) onUnsubscribe(ls *loopState, m *schema.Message) {
	i := c.findSub(m.Topic)
	if i < 0 {
		c.emit(ls, audit.Event{Event: audit.KindMessageRejected, Severity: audit.Notice, Stage: audit.StageMessage,
			Topic: m.Topic}, reason.NotSubscribed)
		c.sendError(ls, m, reason.NotSubscribed, "")
		return
	}
	ls.unsubscribe(c, i)
	c.emit(ls, audit.Event{Event: audit.KindUnsubscribe, Severity: audit.Info, Stage: audit.StageMessage,
		Topic: m.Topic, UserID: c.userID()}, reason.None)
	ls.scratch = native.AppendUnsubscribed(ls.scratch[:0], m.ID, m.HasID, m.Topic)
	c.sendText(ls, ls.scratch)
}

// onPublish lets a client publish where the topic rule says `publish: token`
// and a token redeemed on this connection covers the topic.
func (c *conn) onPublish(ls *loopState, m *schema.Message) {
	s := ls.srv
	rule, r := c.mayPublish(ls, m.Topic)
	if r != reason.None {
		ev := audit.KindMessageRejected
		if r.IsAuth() {
			ev = audit.KindAuthFailed
		}
		c.emit(ls, audit.Event{Event: ev, Severity: audit.Warning, Stage: audit.StageMessage,
			Topic: m.Topic, UserID: c.userID()}, r)
		c.sendError(ls, m, r, "")
		return
	}
	if ds, ok := s.opts.DataSchemas[rule.Match]; ok {
		if v := ds.Check(m.Data); v != nil {
			c.emit(ls, audit.Event{Event: audit.KindMessageRejected, Severity: audit.Warning, Stage: audit.StageMessage,
				Topic: m.Topic, UserID: c.userID(), Detail: capString(v.Keyword+" at "+v.Pointer, 200)}, v.Reason)
			c.sendError(ls, m, v.Reason, v.Message)
			return
		}
	}
	data := append([]byte(nil), m.Data...)
	topic := m.Topic
	c.emit(ls, audit.Event{Event: audit.KindPublish, Severity: audit.Info, Stage: audit.StageMessage,
		Topic: topic, UserID: c.userID()}, reason.None)
	ls.scratch = native.AppendPublished(ls.scratch[:0], m.ID, m.HasID, topic)
	c.sendText(ls, ls.scratch)
	// Through the broker, not delivered inline: other loops (and nodes)
	// must get it too, and this loop delivers it after the current batch
	// like any publication.
	s.post(newPublication(topic, data))
}

// mayPublish decides whether this connection may publish to topic, and
// returns the topic's rule when it may: topics.Set.CanPublish must allow
// it for the user of a live token redeemed here that covers the topic.
// With no token redeemed here the answer is TokenMissing; with tokens
// that do not cover the topic, PublishDenied.
func (c *conn) mayPublish(ls *loopState, topic string) (*topics.Rule, reason.Reason) {
	set := ls.srv.opts.Topics
	if r := set.CanPublish(topic, "", false); r != reason.TokenMissing {
		return nil, r // no rule, or the rule says deny
	}
	r := reason.TokenMissing
	if c.grant != nil {
		r = reason.PublishDenied
	}
	now := ls.loop.Now
	c.eachGrant(ls, func(g *tokens.Grant) bool {
		if g.ValidAt(now) && g.Allows(topic, g.UserID()) && set.CanPublish(topic, g.UserID(), true) == reason.None {
			r = reason.None
			return false
		}
		return true
	})
	if r != reason.None {
		return nil, r
	}
	return set.Match(topic), reason.None
}
