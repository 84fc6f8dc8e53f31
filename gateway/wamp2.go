package gateway

import (
	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/metrics"
	"github.com/portcullis-gw/portcullis/gateway/native"
	"github.com/portcullis-gw/portcullis/gateway/wamp"
	"github.com/portcullis-gw/portcullis/policy/decision"
	"github.com/portcullis-gw/portcullis/policy/schema"
)

// WAMP v2 ("wamp.2.json", docs/PROTOCOL.md): a broker, basic profile, with ticket
// authentication (authid = userId, ticket = token). A session goes
// fresh → challenged (HELLO with authid, CHALLENGE sent) → open (ticket
// redeemed, WELCOME sent). Only the challenged phase keeps state
// (loopState.wamp); an open session is known by the grant its ticket
// redeemed, so an established v2 connection costs no more than a native
// one.

// wampIDs derives session, subscription and publication ids for this
// process. Subscription ids are per topic, the same on every loop, so one
// EVENT frame per publication serves every v2 subscriber.
var wampIDs = wamp.NewIDs()

// ticketTopic is the topic put beside authid and ticket when they are run
// through the native subscribe schema: only userId and token are checked
// there.
const ticketTopic = "wamp.ticket"

type wamp2Phase uint8

const (
	wamp2Fresh      wamp2Phase = iota // awaiting HELLO
	wamp2Challenged                   // awaiting AUTHENTICATE
	wamp2Open                         // WELCOME sent
)

// phase is where c's session stands in the opening.
func (w wamp2Codec) phase(c *conn, ls *loopState) wamp2Phase {
	if st := ls.wamp[c.id]; st != nil && st.authid != "" {
		return wamp2Challenged
	}
	if c.grant != nil {
		return wamp2Open
	}
	return wamp2Fresh
}

// wamp2Codec is WAMP v2: ERROR replies to requests, ABORT before a close
// in the opening phase, EVENTs shared by every subscriber of a topic
// (their subscription id is the topic's).
type wamp2Codec struct{}

// welcome: v2 waits for the client's HELLO.
func (w wamp2Codec) welcome(*conn, *loopState) {}

func (w wamp2Codec) answer(d decision.Decision, _ *request) decision.Decision { return d }

// reply sends ERROR for q, unless q asked for no answer (a PUBLISH without
// acknowledge) or names no request (a message over the rate).
func (w wamp2Codec) reply(c *conn, ls *loopState, q *request, _ decision.Decision) {
	if q == nil || q.quiet || q.typ == 0 {
		return
	}
	ls.scratch = wamp.AppendV2Error(ls.scratch[:0], q.typ, uint64(q.id), q.uri)
	c.sendText(ls, ls.scratch)
}

// lastWord sends ABORT with q's URI before the close of a session that
// never opened or broke the protocol.
func (w wamp2Codec) lastWord(c *conn, ls *loopState, q *request, d decision.Decision) {
	if q == nil || q.uri == "" {
		return
	}
	msg := "protocol violation"
	if d.Close != 1007 {
		msg = "authentication failed"
	}
	ls.scratch = wamp.AppendV2Abort(ls.scratch[:0], q.uri, msg)
	c.sendText(ls, ls.scratch)
}

func (w wamp2Codec) encode(p *Publication) []byte {
	return textFrame(wamp.AppendV2Event(make([]byte, 0, len(p.data)+56), wampIDs.Subscription(p.topic), p.id, p.data))
}

func (w wamp2Codec) eventFrame(_ *conn, p *Publication, _ *topicSubs) []byte {
	return p.frame(protoWAMP2)
}

func (w wamp2Codec) eventPrefix(_ *conn, ts *topicSubs) []byte {
	return wamp.AppendV2EventPrefix(nil, wampIDs.Subscription(ts.name))
}

// abort refuses the session's opening (HELLO, AUTHENTICATE) for
// reason r: ABORT with uri, then close with code (1007 after a protocol
// violation, 1008 after a refused authentication).
func (w wamp2Codec) abort(c *conn, ls *loopState, uri string, code uint16, e audit.Event, r reason.Reason) {
	c.refuse(ls, e, decision.Deny(r).Closing(code, ""), &request{uri: uri})
}

func (w wamp2Codec) violation(c *conn, ls *loopState, r reason.Reason, detail string) {
	w.abort(c, ls, wamp.ErrProtocolViolation, 1007, audit.Event{Detail: capString(detail, 200)}, r)
}

// v2Request is a v2 request refused with ERROR uri (quiet: none sent).
func v2Request(typ wamp.V2Type, id uint64, uri string, quiet bool) *request {
	return &request{typ: typ, id: int64(id), uri: uri, quiet: quiet}
}

// message handles one complete text message of WAMP v2. The type
// code is read first: a type a broker does not take, or a message over its
// type's size cap, is refused before anything else is parsed.
func (w wamp2Codec) message(c *conn, ls *loopState, payload []byte) {
	if code, ok := wamp.PeekType(payload); ok {
		limit, known := wamp.V2MaxBytes(wamp.V2Type(code))
		switch {
		case !known:
			ls.counted(c, metrics.OpUnknown)
			w.violation(c, ls, reason.UnknownOp, "message type not accepted from a client by a broker")
			return
		case len(payload) > limit:
			ls.counted(c, metrics.OpInvalid)
			wampOversize(c, ls, limit)
			return
		}
	}
	if !schema.DepthWithin(payload, ls.srv.opts.Schema.Limits().MaxDepth) {
		ls.counted(c, metrics.OpInvalid)
		w.violation(c, ls, reason.TooDeep, "message nesting too deep")
		return
	}
	m, err := wamp.ParseV2(payload)
	if err != nil {
		ls.counted(c, metrics.OpInvalid)
		w.violation(c, ls, parseReason(err), err.Error())
		return
	}
	ls.counted(c, v2Op(m.Type))
	phase := w.phase(c, ls)
	switch {
	case m.Type == wamp.V2Abort:
		c.closeWith(ls, 1000, reason.ClientClosed, "", closeGrace)
		return
	case m.Type == wamp.V2Hello:
		if phase != wamp2Fresh {
			w.violation(c, ls, reason.ProtocolError, "HELLO in a session")
			return
		}
		w.hello(c, ls, &m)
		return
	case m.Type == wamp.V2Authenticate:
		if phase != wamp2Challenged {
			w.violation(c, ls, reason.ProtocolError, "AUTHENTICATE without a CHALLENGE")
			return
		}
		w.authenticate(c, ls, &m)
		return
	case phase != wamp2Open:
		w.violation(c, ls, reason.ProtocolError, "message before WELCOME")
		return
	}
	switch m.Type {
	case wamp.V2Goodbye:
		ls.scratch = wamp.AppendV2Goodbye(ls.scratch[:0], wamp.CloseGoodbyeAndOut)
		c.sendText(ls, ls.scratch)
		c.closeWith(ls, 1000, reason.ClientClosed, "", closeGrace)
	case wamp.V2Subscribe:
		w.subscribe(c, ls, &m)
	case wamp.V2Unsubscribe:
		w.unsubscribe(c, ls, &m)
	case wamp.V2Publish:
		w.publish(c, ls, &m)
	case wamp.V2Call, wamp.V2Register:
		uri := wamp.ErrNoSuchProcedure
		if m.Type == wamp.V2Register {
			uri = wamp.ErrNotAuthorized
		}
		c.unsupported(ls, "RPC is not supported", v2Request(m.Type, m.Request, uri, false))
	}
}

// hello checks the roles and asks for the ticket.
func (w wamp2Codec) hello(c *conn, ls *loopState, m *wamp.V2Message) {
	if !m.ClientRole {
		w.violation(c, ls, reason.SchemaViolation, "HELLO names no client role")
		return
	}
	if !wamp.ValidURI(m.Realm) {
		w.abort(c, ls, wamp.ErrNoSuchRealm, 1007, audit.Event{Detail: "HELLO realm is not a WAMP URI"}, reason.SchemaViolation)
		return
	}
	ticket := false
	for _, am := range m.AuthMethods {
		ticket = ticket || am == "ticket"
	}
	if !ticket || m.AuthID == "" {
		w.abort(c, ls, wamp.ErrNoMatchingAuthMethod, 1008, audit.Event{Event: audit.KindAuthFailed, Severity: audit.Warning,
			Detail: "HELLO offers no ticket authentication with an authid"}, reason.TokenMissing)
		return
	}
	if _, v := ls.checkSubscribe(ticketTopic, native.AppendString(nil, m.AuthID), ""); v != nil {
		w.abort(c, ls, wamp.ErrAuthenticationFailed, 1008, audit.Event{Detail: "HELLO authid: " + violationDetail(v)}, v.Reason)
		return
	}
	ls.wampState(c).authid = m.AuthID
	ls.scratch = wamp.AppendV2Challenge(ls.scratch[:0], "ticket")
	c.sendText(ls, ls.scratch)
}

// authenticate redeems the ticket as the token of authid.
func (w wamp2Codec) authenticate(c *conn, ls *loopState, m *wamp.V2Message) {
	authid := ls.wamp[c.id].authid
	if _, v := ls.checkSubscribe(ticketTopic, native.AppendString(nil, authid), m.Signature); v != nil {
		w.abort(c, ls, wamp.ErrAuthenticationFailed, 1008, audit.Event{UserID: authid, Detail: "ticket: " + violationDetail(v)}, v.Reason)
		return
	}
	res, pending := c.redeem(ls, m.Signature, authid)
	if pending {
		return // handled again once the token source answers (redeem_async.go)
	}
	g, r := res.Grant, res.Reason
	fp := audit.TokenFP(m.Signature)
	if r == reason.None && g.UserID() != authid {
		r = reason.TokenUserMismatch
	}
	if r != reason.None {
		e := audit.Event{Event: audit.KindAuthFailed, Severity: audit.Warning, UserID: authid, TokenFP: fp}
		spentEvent(&e, r, res, ls.loop.Now)
		w.abort(c, ls, wamp.ErrAuthenticationFailed, 1008, e, r)
		return
	}
	c.addGrant(ls, g)
	delete(ls.wamp, c.id)
	c.emit(ls, audit.Event{Event: audit.KindAuthOK, Severity: audit.Info, Stage: audit.StageMessage,
		UserID: authid, TokenFP: g.FP()}, reason.None)
	ls.scratch = wamp.AppendV2Welcome(ls.scratch[:0], wampIDs.Session(c.id), authid, "user", "portcullis/"+ls.srv.opts.Version)
	c.sendText(ls, ls.scratch)
}

// subscribe handles SUBSCRIBE on an open session: the topic is checked
// with the grant the session's ticket redeemed (c.grant).
func (w wamp2Codec) subscribe(c *conn, ls *loopState, m *wamp.V2Message) {
	g := c.grant
	ev := audit.Event{Severity: audit.Notice, UserID: g.UserID()}
	if m.Match != "" {
		ev.Detail = "pattern-based subscriptions are not supported"
		c.refuse(ls, ev, decision.Reply(reason.Unsupported, ""), v2Request(wamp.V2Subscribe, m.Request, wamp.ErrInvalidArgument, false))
		return
	}
	msg, v := ls.checkSubscribe(m.Topic, native.AppendString(nil, g.UserID()), "")
	if v != nil {
		ev.Severity, ev.Detail = audit.Warning, violationDetail(v)
		c.refuse(ls, ev, decision.Reply(v.Reason, ""), v2Request(wamp.V2Subscribe, m.Request, wamp.ErrInvalidURI, false))
		return
	}
	q := v2Request(wamp.V2Subscribe, m.Request, wamp.ErrNotAuthorized, false)
	id := wampIDs.Subscription(msg.Topic)
	for i := range c.subs {
		if wampIDs.Subscription(c.subs[i].topic.name) != id {
			continue
		}
		if c.subs[i].topic.name != msg.Topic {
			// Two topics hashed to one id (about 2^-53 per pair): refuse
			// rather than mix their events.
			ev.Event, ev.Topic = audit.KindSubscribeDenied, msg.Topic
			c.refuse(ls, ev, decision.Reply(reason.Internal, ""), q)
			return
		}
		ls.scratch = wamp.AppendV2Subscribed(ls.scratch[:0], m.Request, id)
		c.sendText(ls, ls.scratch)
		return
	}
	a := c.authorize(ls, &msg, g)
	if !a.Allowed() {
		c.refuseSubscribe(ls, &msg, a, q)
		return
	}
	c.subscribed(ls, &msg, a)
	ls.scratch = wamp.AppendV2Subscribed(ls.scratch[:0], m.Request, id)
	c.sendText(ls, ls.scratch)
}

func (w wamp2Codec) unsubscribe(c *conn, ls *loopState, m *wamp.V2Message) {
	for i := range c.subs {
		if wampIDs.Subscription(c.subs[i].topic.name) == m.Subscription {
			topic := c.subs[i].topic.name
			ls.hub.unsubscribe(ls, c, i)
			c.emit(ls, audit.Event{Event: audit.KindUnsubscribe, Severity: audit.Info, Stage: audit.StageMessage,
				Topic: topic, UserID: c.userID()}, reason.None)
			ls.scratch = wamp.AppendV2Unsubscribed(ls.scratch[:0], m.Request)
			c.sendText(ls, ls.scratch)
			return
		}
	}
	c.refuse(ls, audit.Event{Severity: audit.Notice, UserID: c.userID()}, decision.Reply(reason.NotSubscribed, ""),
		v2Request(wamp.V2Unsubscribe, m.Request, wamp.ErrNoSuchSubscription, false))
}

// publish publishes where the topic rule allows it. The publisher is
// excluded unless options.exclude_me is false; PUBLISHED and ERROR are sent
// only when options.acknowledge asks for them.
func (w wamp2Codec) publish(c *conn, ls *loopState, m *wamp.V2Message) {
	quiet := !m.Acknowledge
	msg, v := ls.checkSubscribe(m.Topic, nil, "")
	if v != nil {
		c.refuse(ls, audit.Event{UserID: c.userID(), Detail: violationDetail(v)}, decision.Reply(v.Reason, ""),
			v2Request(wamp.V2Publish, m.Request, wamp.ErrInvalidURI, quiet))
		return
	}
	data, ok := m.Data()
	// The topic and its tokens first, then the data's shape and schema.
	rl := ls.rules()
	rule, d := c.mayPublish(ls, rl.topics, msg.Topic)
	switch {
	case !d.Allowed():
		e := audit.Event{Topic: msg.Topic, UserID: c.userID()}
		if d.Why().IsAuth() {
			e.Event = audit.KindAuthFailed
		}
		c.refuse(ls, e, d, v2Request(wamp.V2Publish, m.Request, wamp.ErrNotAuthorized, quiet))
		return
	case !ok:
		c.refuse(ls, audit.Event{Topic: msg.Topic, UserID: c.userID(),
			Detail: "PUBLISH carries more than one value (several args, or args and kwargs)"},
			decision.Reply(reason.SchemaViolation, ""), v2Request(wamp.V2Publish, m.Request, wamp.ErrInvalidArgument, quiet))
		return
	}
	if ds, ok := rl.dataSchemas[rule.Match]; ok {
		if v := ds.Check(data); v != nil {
			c.refuse(ls, audit.Event{Topic: msg.Topic, UserID: c.userID(), Detail: violationDetail(v)},
				decision.Reply(v.Reason, v.Message), v2Request(wamp.V2Publish, m.Request, wamp.ErrInvalidArgument, quiet))
			return
		}
	}
	p := newPublication(msg.Topic, append([]byte(nil), data...))
	p.filter = newPubFilter(c.id, m.ExcludeMe, m.Exclude, m.Eligible, m.HasEligible, wampIDs.Conn)
	if m.Acknowledge {
		ls.scratch = wamp.AppendV2Published(ls.scratch[:0], m.Request, p.id)
		c.sendText(ls, ls.scratch)
	}
	c.publish(ls, p)
}
