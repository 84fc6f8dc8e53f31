package gateway

import (
	"slices"
	"strconv"
	"strings"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/metrics"
	"github.com/portcullis-gw/portcullis/gateway/native"
	"github.com/portcullis-gw/portcullis/gateway/wamp"
	"github.com/portcullis-gw/portcullis/policy/decision"
	"github.com/portcullis-gw/portcullis/policy/schema"
)

// WAMP v1 ("wamp", docs/PROTOCOL.md) and what both WAMP versions share. The
// messages go through the native pipeline: every topic, userId and token
// is checked by the native subscribe schema (checkSubscribe), then by the
// same decisions (authorize, publishable), and every refusal takes
// c.refuse: one audit event and strike, then the answer. v1 has no error
// replies (wamp1Codec.answer):
// malformed messages close with 1007, refused requests with 1008 (a clean
// close: AutobahnJS 0.8 does not reconnect after it).
//
// A v1 topic may be a seed JSON topic that carries a token, and EVENTs
// echo it: the raw subscribed string is kept only in the subscription
// (subscription.v1) and never reaches a log or the audit trail, which get
// the inner topic, userId and token_fp.

// wampState is the WAMP session state a connection may need beyond conn
// and its subscriptions, kept in loopState.wamp by conn id only while it
// exists: a v1 PREFIX table, or a v2 HELLO's authid awaiting its ticket.
type wampState struct {
	prefixes wamp.Prefixes // v1
	authid   string        // v2, between HELLO and AUTHENTICATE
}

// wampState returns c's WAMP state, creating it.
func (ls *loopState) wampState(c *conn) *wampState {
	if ls.wamp == nil {
		ls.wamp = make(map[uint64]*wampState)
	}
	st := ls.wamp[c.id]
	if st == nil {
		st = &wampState{}
		ls.wamp[c.id] = st
	}
	return st
}

// pubFilter is a WAMP publication's exclude/eligible lists, as connection
// ids.
type pubFilter struct {
	exclude  []uint64
	eligible []uint64
	only     bool // only the eligible connections may receive it
}

// newPubFilter turns a WAMP PUBLISH's exclude/eligible session ids (v1
// strings, v2 numbers) into connection ids; nil when nothing is filtered.
// self is the publisher, excluded with excludeMe.
func newPubFilter[ID any](self uint64, excludeMe bool, exclude, eligible []ID, hasEligible bool,
	conn func(ID) (uint64, bool)) *pubFilter {
	if !excludeMe && len(exclude) == 0 && !hasEligible {
		return nil
	}
	f := &pubFilter{only: hasEligible}
	if excludeMe {
		f.exclude = append(f.exclude, self)
	}
	for _, sid := range exclude {
		if id, ok := conn(sid); ok {
			f.exclude = append(f.exclude, id)
		}
	}
	for _, sid := range eligible {
		if id, ok := conn(sid); ok {
			f.eligible = append(f.eligible, id)
		}
	}
	return f
}

func (f *pubFilter) allows(id uint64) bool {
	if slices.Contains(f.exclude, id) {
		return false
	}
	return !f.only || slices.Contains(f.eligible, id)
}

// checkSubscribe runs the native subscribe schema over a topic, userId (raw
// JSON: a string or number literal; nil for none) and token (""), so a WAMP
// request gets exactly the native validation. The Message's strings are
// copies.
func (ls *loopState) checkSubscribe(topic string, userID []byte, token string) (schema.Message, *schema.Violation) {
	b := append(ls.scratch[:0], `{"op":"subscribe","topic":`...)
	b = native.AppendString(b, topic)
	if userID != nil {
		b = append(b, `,"userId":`...)
		b = append(b, userID...)
	}
	if token != "" {
		b = append(b, `,"token":`...)
		b = native.AppendString(b, token)
	}
	b = append(b, '}')
	ls.scratch = b
	return ls.srv.opts.Schema.Check(b)
}

// parseReason is the audit reason of a wamp parse error.
func parseReason(err error) reason.Reason {
	if pe, ok := err.(*wamp.ParseError); ok {
		switch pe.Kind {
		case wamp.ErrJSON:
			return reason.BadJSON
		case wamp.ErrUnknownType:
			return reason.UnknownOp
		}
	}
	return reason.SchemaViolation
}

// wamp1Codec is WAMP v1: no error replies (a refused request closes with
// 1008, a malformed message with 1007), EVENTs that echo the string a
// client subscribed with.
type wamp1Codec struct{}

func (w wamp1Codec) welcome(c *conn, ls *loopState) {
	ls.scratch = wamp.AppendV1Welcome(ls.scratch[:0], ls.srv.sessionID(c.id), "portcullis/"+ls.srv.opts.Version)
	c.sendText(ls, ls.scratch)
}

// answer: v1 has no error reply to a request: a refused request (q not
// nil) closes the connection with 1008 instead; a refusal that answers no
// request (a message over the rate) is only audited.
func (w wamp1Codec) answer(d decision.Decision, q *request) decision.Decision {
	if d.Close == 0 && q != nil {
		return d.Closing(1008, "request refused")
	}
	return d
}

// reply has nothing to send: v1 refusals close (see answer).
func (w wamp1Codec) reply(*conn, *loopState, *request, decision.Decision) {}

func (w wamp1Codec) lastWord(*conn, *loopState, *request, decision.Decision) {}

func (w wamp1Codec) encode(p *Publication) []byte {
	return textFrame(wamp.AppendV1Event(make([]byte, 0, len(p.data)+len(p.topic)+16), p.topic, p.data))
}

// eventFrame: a subscription made with another string than the topic name
// gets EVENTs that echo that string, encoded for it alone.
func (w wamp1Codec) eventFrame(c *conn, p *Publication, ts *topicSubs) []byte {
	if raw := c.subs.of(ts).v1String(); raw != "" {
		return textFrame(wamp.AppendV1Event(make([]byte, 0, len(p.data)+len(raw)+16), raw, p.data))
	}
	return p.frame(protoWAMP1)
}

func (w wamp1Codec) eventPrefix(c *conn, ts *topicSubs) []byte {
	raw := c.subs.of(ts).v1String()
	if raw == "" {
		raw = ts.name
	}
	return wamp.AppendV1EventPrefix(nil, raw)
}

// v1Request stands for a v1 request in a refusal: its answer is the
// close (see wamp1Codec.answer).
var v1Request = &request{}

// malformed refuses a malformed message: 1007, as Ratchet does.
func (w wamp1Codec) malformed(c *conn, ls *loopState, r reason.Reason, detail string) {
	c.refuse(ls, audit.Event{Detail: capString(detail, 200)},
		decision.Deny(r).Closing(1007, "malformed WAMP message"), nil)
}

// wampOversize refuses a WAMP message over the size cap of its type
// before it is parsed: 1009, a strike, and the connection closes.
func wampOversize(c *conn, ls *loopState, limit int) {
	c.refuse(ls, audit.Event{Detail: "message over the " + strconv.Itoa(limit) + "-byte cap of its type"},
		decision.Deny(reason.MessageTooLarge).Closing(1009, "message too large for its type"), nil)
}

// message handles one complete text message of WAMP v1. The type
// code is read first: a type a client may not send, or a message over its
// type's size cap, is refused before anything else is parsed.
func (w wamp1Codec) message(c *conn, ls *loopState, payload []byte) {
	if code, ok := wamp.PeekType(payload); ok {
		limit, known := wamp.V1MaxBytes(wamp.V1Type(code))
		switch {
		case !known:
			ls.counted(c, metrics.OpUnknown)
			w.malformed(c, ls, reason.UnknownOp, "message type not accepted from a client")
			return
		case len(payload) > limit:
			ls.counted(c, metrics.OpInvalid)
			wampOversize(c, ls, limit)
			return
		}
	}
	if !schema.DepthWithin(payload, ls.srv.opts.Schema.Limits().MaxDepth) {
		ls.counted(c, metrics.OpInvalid)
		w.malformed(c, ls, reason.TooDeep, "message nesting too deep")
		return
	}
	m, err := wamp.ParseV1(payload)
	if err != nil {
		ls.counted(c, metrics.OpInvalid)
		w.malformed(c, ls, parseReason(err), err.Error())
		return
	}
	ls.counted(c, v1Op(m.Type))
	switch m.Type {
	case wamp.V1Prefix:
		st := ls.wampState(c)
		before := st.prefixes.Bytes()
		if err := st.prefixes.Set(m.Prefix, m.Topic); err != nil {
			w.malformed(c, ls, parseReason(err), err.Error())
			return
		}
		c.hold(ls, st.prefixes.Bytes()-before) // the table counts against the inbound budget
	case wamp.V1Call:
		c.unsupported(ls, "CALL: RPC is not supported", nil)
		if c.state == stateOpen {
			ls.scratch = wamp.AppendV1CallError(ls.scratch[:0], m.CallID, wamp.ErrorUnsupported, "RPC is not supported")
			c.sendText(ls, ls.scratch)
		}
	case wamp.V1Subscribe:
		w.subscribe(c, ls, m.Topic)
	case wamp.V1Unsubscribe:
		w.unsubscribe(c, ls, m.Topic)
	case wamp.V1Publish:
		w.publish(c, ls, &m)
	}
}

// v1StringBytes is what keeping a v1 subscription's raw topic string
// costs against the inbound budget: the string and its header.
func v1StringBytes(raw string) int { return len(raw) + 16 }

// expand resolves a CURIE with c's PREFIX table.
func (w wamp1Codec) expand(c *conn, ls *loopState, raw string) string {
	if st := ls.wamp[c.id]; st != nil {
		return st.prefixes.Expand(raw)
	}
	return raw
}

// resolve turns a v1 topic string (a topic name, a CURIE or a seed
// JSON topic) into a schema-checked subscribe message. On a refusal it
// has emitted the audit event, closed with 1008 and returns false.
func (w wamp1Codec) resolve(c *conn, ls *loopState, raw string) (schema.Message, bool) {
	s := w.expand(c, ls, raw)
	var m schema.Message
	var v *schema.Violation
	if wamp.IsSeed(s) {
		sd, err := wamp.ParseSeed(s)
		if err != nil {
			c.refuse(ls, audit.Event{Detail: err.Error()}, decision.Reply(parseReason(err), ""), v1Request)
			return m, false
		}
		m, v = ls.checkSubscribe(sd.Topic, sd.UserID, sd.Token)
	} else {
		m, v = ls.checkSubscribe(s, nil, "")
	}
	if v != nil {
		c.refuse(ls, audit.Event{Detail: violationDetail(v)}, decision.Reply(v.Reason, ""), v1Request)
		return m, false
	}
	return m, true
}

// subscribe validates first and only then subscribes (unlike
// Ratchet); a refusal closes with 1008, as v1 has no error reply.
func (w wamp1Codec) subscribe(c *conn, ls *loopState, raw string) {
	m, ok := w.resolve(c, ls, raw)
	if !ok {
		return
	}
	if c.subs.find(m.Topic) >= 0 {
		return // already subscribed; v1 has no reply
	}
	a := c.authorize(ls, &m, nil)
	if a.pending {
		return // handled again once the token source answers (redeem_async.go)
	}
	if !a.Allowed() {
		c.refuseSubscribe(ls, &m, a, v1Request)
		return
	}
	if raw != m.Topic && !c.hold(ls, v1StringBytes(raw)) {
		return // the string kept for EVENTs is over the inbound budget
	}
	c.subscribed(ls, &m, a)
	if raw != m.Topic {
		c.subs[len(c.subs)-1].v1 = &raw // a fresh string from the parser
	}
}

// unsubscribe finds the subscription by the exact string or, for a
// topic name or CURIE, by its expansion.
func (w wamp1Codec) unsubscribe(c *conn, ls *loopState, raw string) {
	i := -1
	for j := range c.subs {
		if c.subs[j].v1String() == raw {
			i = j
			break
		}
	}
	if s := w.expand(c, ls, raw); i < 0 && !wamp.IsSeed(s) {
		if j := c.subs.find(s); j >= 0 && !wamp.IsSeed(c.subs[j].v1String()) {
			i = j
		}
	}
	if i < 0 {
		// No reply in v1, and no close: a stale UNSUBSCRIBE is harmless.
		// The string is not logged: it may be a seed.
		c.refuse(ls, audit.Event{Severity: audit.Notice}, decision.Reply(reason.NotSubscribed, ""), nil)
		return
	}
	topic := c.subs[i].topic.name
	if v1 := c.subs[i].v1; v1 != nil {
		c.hold(ls, -v1StringBytes(*v1))
	}
	ls.hub.unsubscribe(ls, c, i)
	c.emit(ls, audit.Event{Event: audit.KindUnsubscribe, Severity: audit.Info, Stage: audit.StageMessage,
		Topic: topic, UserID: c.userID()}, reason.None)
}

// publish publishes where the topic rule allows it, honouring
// excludeMe and the exclude/eligible session lists; a refusal closes 1008.
func (w wamp1Codec) publish(c *conn, ls *loopState, m *wamp.V1Message) {
	t, ok := w.resolve(c, ls, m.Topic)
	if !ok || !c.publishable(ls, t.Topic, m.Event, v1Request) {
		return
	}
	p := newPublication(t.Topic, append([]byte(nil), m.Event...))
	p.filter = newPubFilter(c.id, m.ExcludeMe, m.Exclude, m.Eligible, m.HasEligible, ls.srv.connOfSession)
	c.publish(ls, p)
}

// connOfSession maps a native or WAMP v1 session id back to its
// connection id; ids of another boot are not ours.
func (s *Server) connOfSession(session string) (uint64, bool) {
	rest, ok := strings.CutPrefix(session, s.bootID+"-")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(rest, 36, 64)
	return id, err == nil
}
