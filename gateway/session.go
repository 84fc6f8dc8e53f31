package gateway

import (
	"strconv"
	"time"

	"github.com/gobwas/ws"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/frame"
	"github.com/portcullis-gw/portcullis/gateway/metrics"
	"github.com/portcullis-gw/portcullis/gateway/native"
	"github.com/portcullis-gw/portcullis/policy/decision"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// sendText queues one text frame of payload, copied into a fresh buffer.
func (c *conn) sendText(ls *loopState, payload []byte) {
	c.enqueue(ls, frame.AppendFrame(make([]byte, 0, len(payload)+4), ws.OpText, payload), false)
}

// sessionID is the session id of connection id in native and WAMP v1
// welcomes: unique across restarts by the boot id.
func (s *Server) sessionID(id uint64) string {
	return s.bootID + "-" + strconv.FormatUint(id, 36)
}

// nativeCodec is portcullis.v1 (docs/PROTOCOL.md): JSON messages checked by
// the JSON Schema, an error reply to every refused request.
type nativeCodec struct{}

func (n nativeCodec) welcome(c *conn, ls *loopState) {
	ls.scratch = native.AppendWelcome(ls.scratch[:0], ls.srv.sessionID(c.id), "portcullis/"+ls.srv.opts.Version)
	c.sendText(ls, ls.scratch)
}

// answer: every request has an error reply; nothing to change.
func (n nativeCodec) answer(d decision.Decision, _ *request) decision.Decision { return d }

// reply sends the error reply to q (nil: an error without an id).
func (n nativeCodec) reply(c *conn, ls *loopState, q *request, d decision.Decision) {
	var id int64
	var has bool
	if q != nil {
		id, has = q.id, q.hasID
	}
	ls.scratch = native.AppendError(ls.scratch[:0], id, has, d.Why(), d.Message)
	c.sendText(ls, ls.scratch)
}

func (n nativeCodec) lastWord(*conn, *loopState, *request, decision.Decision) {}

func (n nativeCodec) encode(p *Publication) []byte {
	return textFrame(native.AppendEvent(make([]byte, 0, len(p.data)+len(p.topic)+40), p.topic, p.data))
}

func (n nativeCodec) eventFrame(_ *conn, p *Publication, _ *topicSubs) []byte {
	return p.frame(protoNative)
}

func (n nativeCodec) eventPrefix(_ *conn, ts *topicSubs) []byte { return ts.prefix }

// nativeRequest is what an error reply to m echoes.
func nativeRequest(m *schema.Message) *request { return &request{id: m.ID, hasID: m.HasID} }

// message handles one complete text message of portcullis.v1:
// size/depth → schema → token → topic rule, cheapest first (docs/ARCHITECTURE.md).
func (n nativeCodec) message(c *conn, ls *loopState, payload []byte) {
	m, v := ls.srv.opts.Schema.Check(payload)
	if v != nil {
		msg, op := v.Message, metrics.OpInvalid
		if v.Reason == reason.UnknownOp {
			msg, op = "", metrics.OpUnknown
		}
		ls.counted(c, op)
		c.refuse(ls, audit.Event{Detail: violationDetail(v)}, decision.Reply(v.Reason, msg), nativeRequest(&m))
		return
	}
	switch m.Op {
	case "subscribe":
		ls.counted(c, metrics.OpSubscribe)
		n.subscribe(c, ls, &m)
	case "unsubscribe":
		ls.counted(c, metrics.OpUnsubscribe)
		n.unsubscribe(c, ls, &m)
	case "publish":
		ls.counted(c, metrics.OpPublish)
		n.publish(c, ls, &m)
	case "ping":
		ls.counted(c, metrics.OpPing)
		ls.scratch = native.AppendPong(ls.scratch[:0], m.ID, m.HasID)
		c.sendText(ls, ls.scratch)
	default:
		ls.counted(c, metrics.OpUnknown)
		c.refuse(ls, audit.Event{}, decision.Reply(reason.UnknownOp, ""), nativeRequest(&m))
	}
}

// violationDetail describes a schema violation for the audit trail: where
// and which keyword, never the value.
func violationDetail(v *schema.Violation) string {
	return capString(v.Keyword+" at "+v.Pointer, 200)
}

// redeem presents token for this connection, from its client address,
// as userID. With a source that redeems off the loop (redeem_async.go)
// it may report pending instead: the caller stops handling the message,
// which is handled again once the answer is back.
func (c *conn) redeem(ls *loopState, token, userID string) (res tokens.Result, pending bool) {
	client := c.client()
	p := tokens.Presenter{Conn: c.id, Addr: client, Counted: ls.srv.opts.Guard.Counted(client), UserID: userID}
	if ls.srv.remoteTokens() {
		return c.redeemOffLoop(ls, token, p)
	}
	return ls.srv.opts.Tokens.Redeem(token, p, ls.loop.Now), false
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
		e.RedeemedIP = sp.By
		// Loops read the clock at different instants: never negative.
		e.RedeemedAgoS = max(int64(now.Sub(sp.At)/time.Second), 0)
	}
}

// authorization is the message stage's decision on a subscription (see
// authorize), with what its audit event needs.
type authorization struct {
	decision.Decision
	fp       string        // the token's fingerprint; "" when no token was involved
	redeemed bool          // the token was redeemed for this request (not a grant held already)
	spent    tokens.Result // the token source's answer when redeeming failed; zero otherwise
	pending  bool          // the token is being redeemed off the loop: nothing to answer yet
}

// authorize is the message stage's decision (pipeline step 4) on c
// subscribing to m.Topic, the same for every protocol: the per-connection
// subscription cap, then the topic rule without a token (a public or
// denied topic ends there; one that needs a token goes on), then the
// token — m.Token redeemed here, or g, a grant already redeemed on this
// connection (a WAMP v2 ticket) — which must be live, be the user's and
// cover the topic, then the rule again with it (the {userId} check).
// Allowed, the grant is remembered on c.
func (c *conn) authorize(ls *loopState, m *schema.Message, g *tokens.Grant) (a authorization) {
	rl := ls.rules()
	if len(c.subs) >= rl.limits.MaxSubscriptionsConn {
		a.Decision = decision.Reply(reason.TooManySubscriptions, "")
		return a
	}
	set := rl.topics
	if r := set.CanSubscribe(m.Topic, m.UserID, false); r != reason.TokenMissing {
		a.Decision = decision.ReplyOf(r)
		return a
	}
	if g == nil {
		if m.Token == "" {
			a.Decision = decision.Reply(reason.TokenMissing, "")
			return a
		}
		res, pending := c.redeem(ls, m.Token, m.UserID)
		if pending {
			a.pending = true
			return a
		}
		if res.Reason != reason.None {
			a.Decision, a.fp, a.spent = decision.Reply(res.Reason, ""), audit.TokenFP(m.Token), res
			return a
		}
		g, a.redeemed = res.Grant, true
	} else if !g.ValidAt(ls.loop.Now) {
		a.Decision, a.fp = decision.Reply(reason.TokenExpired, ""), g.FP()
		return a
	}
	a.fp = g.FP()
	switch {
	case g.UserID() != m.UserID:
		a.Decision = decision.Reply(reason.TokenUserMismatch, "")
	case !g.Allows(m.Topic, m.UserID):
		a.Decision = decision.Reply(reason.TokenTopicMismatch, "")
	default:
		a.Decision = decision.ReplyOf(set.CanSubscribe(m.Topic, m.UserID, true))
	}
	if a.Allowed() {
		c.addGrant(ls, g)
	}
	return a
}

// refuseSubscribe refuses the subscription of m that a said no to, as
// request q: subscribe_denied (notice) for a topic rule or a cap,
// auth_failed (warning; critical for a suspected theft) for a token.
func (c *conn) refuseSubscribe(ls *loopState, m *schema.Message, a authorization, q *request) {
	r := a.Why()
	e := audit.Event{Event: audit.KindSubscribeDenied, Severity: audit.Notice,
		Topic: m.Topic, UserID: m.UserID, TokenFP: a.fp}
	if r.IsAuth() || r == reason.TokenSourceUnavailable {
		e.Event, e.Severity = audit.KindAuthFailed, audit.Warning
	}
	spentEvent(&e, r, a.spent, ls.loop.Now)
	c.refuse(ls, e, a.Decision, q)
}

// subscribed records an allowed subscription of m on c's hub and audits it
// (auth_ok first when a token was redeemed for it).
func (c *conn) subscribed(ls *loopState, m *schema.Message, a authorization) {
	if a.redeemed {
		c.emit(ls, audit.Event{Event: audit.KindAuthOK, Severity: audit.Info, Stage: audit.StageMessage,
			Topic: m.Topic, UserID: m.UserID, TokenFP: a.fp}, reason.None)
	}
	ls.hub.subscribe(ls, c, m.Topic)
	c.emit(ls, audit.Event{Event: audit.KindSubscribe, Severity: audit.Info, Stage: audit.StageMessage,
		Topic: m.Topic, UserID: m.UserID, TokenFP: a.fp}, reason.None)
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

// subscribe answers `subscribe`: already subscribed, or authorized now
// (token and topic rule; it may wait for an off-loop redemption), or
// refused.
func (n nativeCodec) subscribe(c *conn, ls *loopState, m *schema.Message) {
	if c.subs.find(m.Topic) < 0 {
		a := c.authorize(ls, m, nil)
		if a.pending {
			return
		}
		if !a.Allowed() {
			c.refuseSubscribe(ls, m, a, nativeRequest(m))
			return
		}
		c.subscribed(ls, m, a)
	}
	ls.scratch = native.AppendSubscribed(ls.scratch[:0], m.ID, m.HasID, m.Topic)
	c.sendText(ls, ls.scratch)
}

// unsubscribe answers `unsubscribe`; a topic c is not subscribed to is
// refused (not_subscribed).
func (n nativeCodec) unsubscribe(c *conn, ls *loopState, m *schema.Message) {
	i := c.subs.find(m.Topic)
	if i < 0 {
		c.refuse(ls, audit.Event{Severity: audit.Notice, Topic: m.Topic}, decision.Reply(reason.NotSubscribed, ""), nativeRequest(m))
		return
	}
	ls.hub.unsubscribe(ls, c, i)
	c.emit(ls, audit.Event{Event: audit.KindUnsubscribe, Severity: audit.Info, Stage: audit.StageMessage,
		Topic: m.Topic, UserID: c.userID()}, reason.None)
	ls.scratch = native.AppendUnsubscribed(ls.scratch[:0], m.ID, m.HasID, m.Topic)
	c.sendText(ls, ls.scratch)
}

// publish lets a client publish where the topic rule says `publish: token`
// and a token redeemed on this connection covers the topic.
func (n nativeCodec) publish(c *conn, ls *loopState, m *schema.Message) {
	if !c.publishable(ls, m.Topic, m.Data, nativeRequest(m)) {
		return
	}
	data := append([]byte(nil), m.Data...)
	ls.scratch = native.AppendPublished(ls.scratch[:0], m.ID, m.HasID, m.Topic)
	c.sendText(ls, ls.scratch)
	c.publish(ls, newPublication(m.Topic, data))
}

// publishable is the message stage's decision on c publishing data to
// topic, acted on: a refusal (the topic rule and the tokens redeemed here,
// see mayPublish, then the rule's data schema) is refused as request q and
// publishable returns false.
func (c *conn) publishable(ls *loopState, topic string, data []byte, q *request) bool {
	rl := ls.rules()
	rule, d := c.mayPublish(ls, rl.topics, topic)
	e := audit.Event{Topic: topic, UserID: c.userID()}
	if !d.Allowed() {
		if d.Why().IsAuth() {
			e.Event = audit.KindAuthFailed
		}
		c.refuse(ls, e, d, q)
		return false
	}
	if ds, ok := rl.dataSchemas[rule.Match]; ok {
		if v := ds.Check(data); v != nil {
			e.Detail = violationDetail(v)
			c.refuse(ls, e, decision.Reply(v.Reason, v.Message), q)
			return false
		}
	}
	return true
}

// publish audits p, published by c, and hands it to the Broker: not
// delivered inline, since other loops (and nodes) must get it too, and
// this loop delivers it after the current batch like any publication.
func (c *conn) publish(ls *loopState, p *Publication) {
	c.emit(ls, audit.Event{Event: audit.KindPublish, Severity: audit.Info, Stage: audit.StageMessage,
		Topic: p.topic, UserID: c.userID()}, reason.None)
	ls.srv.post(p)
}

// mayPublish decides whether this connection may publish to topic under
// set, and returns the topic's rule when it may: set.CanPublish must allow
// it for the user of a live token redeemed here that covers the topic.
// With no token redeemed here the answer is TokenMissing; with tokens
// that do not cover the topic, PublishDenied.
func (c *conn) mayPublish(ls *loopState, set *topics.Set, topic string) (*topics.Rule, decision.Decision) {
	if r := set.CanPublish(topic, "", false); r != reason.TokenMissing {
		return nil, decision.Reply(r, "") // no rule, or the rule says deny
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
		return nil, decision.Reply(r, "")
	}
	return set.Match(topic), decision.Allow()
}
