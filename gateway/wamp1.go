package gateway

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/native"
	"github.com/portcullis-gw/portcullis/gateway/wamp"
	"github.com/portcullis-gw/portcullis/policy/reason"
	"github.com/portcullis-gw/portcullis/policy/schema"
)

// WAMP v1 ("wamp", docs/PROTOCOL.md) and what both WAMP versions share. The
// messages go through the native pipeline: every topic, userId and token
// is checked by the native subscribe schema (checkSubscribe), then by the
// same token and topic-rule code (authorizeSpent, mayPublish), and every
// refusal is one audit event through c.emit. v1 has no error replies:
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

// eventPrefix is how c's queued event frames of ts begin, for the
// slow-consumer policies that drop them.
func (c *conn) eventPrefix(ts *topicSubs) []byte {
	switch c.proto {
	case protoWAMP1:
		raw := c.subOf(ts).v1String()
		if raw == "" {
			raw = ts.name
		}
		return wamp.AppendV1EventPrefix(nil, raw)
	case protoWAMP2:
		return wamp.AppendV2EventPrefix(nil, wampIDs.Subscription(ts.name))
	}
	return ts.prefix
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

// violationDetail describes a schema violation for the audit trail: where
// and which keyword, never the value.
func violationDetail(v *schema.Violation) string {
	return capString(v.Keyword+" at "+v.Pointer, 200)
}

func (c *conn) sendWAMP1Welcome(ls *loopState) {
	ls.scratch = wamp.AppendV1Welcome(ls.scratch[:0], ls.srv.sessionID(c.id), "portcullis/"+ls.srv.opts.Version)
	c.sendText(ls, ls.scratch)
}

// wamp1Close records the refusal e and closes: 1007 for a malformed
// message, 1008 for a refused request.
func (c *conn) wamp1Close(ls *loopState, code uint16, e audit.Event, r reason.Reason) {
	e.Code = int(code)
	if e.Stage == "" {
		e.Stage = audit.StageMessage
	}
	c.emit(ls, e, r)
	text := "request refused"
	if code == 1007 {
		text = "malformed WAMP message"
	}
	c.closeWith(ls, code, r, text, 2*time.Second)
}

func (c *conn) wamp1Malformed(ls *loopState, r reason.Reason, detail string) {
	c.wamp1Close(ls, 1007, audit.Event{Event: audit.KindMessageRejected, Severity: audit.Warning,
		Detail: capString(detail, 200)}, r)
}

// wampOversize refuses a WAMP message over the size cap of its type
// before it is parsed: 1009, a strike, and the connection closes.
func (c *conn) wampOversize(ls *loopState, limit int) {
	c.emit(ls, audit.Event{Event: audit.KindMessageRejected, Severity: audit.Warning, Stage: audit.StageMessage,
		Code:   1009,
		Detail: "message over the " + strconv.Itoa(limit) + "-byte cap of its type"}, reason.MessageTooLarge)
	c.closeWith(ls, 1009, reason.MessageTooLarge, "message too large for its type", 2*time.Second)
}

// onWAMP1Message handles one complete text message of WAMP v1. The type
// code is read first: a type a client may not send, or a message over its
// type's size cap, is refused before anything else is parsed.
func (c *conn) onWAMP1Message(ls *loopState, payload []byte) {
	if code, ok := wamp.PeekType(payload); ok {
		limit, known := wamp.V1MaxBytes(wamp.V1Type(code))
		switch {
		case !known:
			c.wamp1Malformed(ls, reason.UnknownOp, "message type not accepted from a client")
			return
		case len(payload) > limit:
			c.wampOversize(ls, limit)
			return
		}
	}
	if !schema.DepthWithin(payload, ls.srv.opts.Schema.Limits().MaxDepth) {
		c.wamp1Malformed(ls, reason.TooDeep, "message nesting too deep")
		return
	}
	m, err := wamp.ParseV1(payload)
	if err != nil {
		c.wamp1Malformed(ls, parseReason(err), err.Error())
		return
	}
	switch m.Type {
	case wamp.V1Prefix:
		st := ls.wampState(c)
		before := st.prefixes.Bytes()
		if err := st.prefixes.Set(m.Prefix, m.Topic); err != nil {
			c.wamp1Malformed(ls, parseReason(err), err.Error())
			return
		}
		c.hold(ls, st.prefixes.Bytes()-before) // the table counts against the inbound budget
	case wamp.V1Call:
		if !c.unsupported(ls, "CALL: RPC is not supported") {
			return
		}
		ls.scratch = wamp.AppendV1CallError(ls.scratch[:0], m.CallID, wamp.ErrorUnsupported, "RPC is not supported")
		c.sendText(ls, ls.scratch)
	case wamp.V1Subscribe:
		c.onWAMP1Subscribe(ls, m.Topic)
	case wamp.V1Unsubscribe:
		c.onWAMP1Unsubscribe(ls, m.Topic)
	case wamp.V1Publish:
		c.onWAMP1Publish(ls, &m)
	}
}

// v1StringBytes is what keeping a v1 subscription's raw topic string
// costs against the inbound budget: the string and its header.
func v1StringBytes(raw string) int { return len(raw) + 16 }

// expand resolves a CURIE with c's PREFIX table.
func (c *conn) expand(ls *loopState, raw string) string {
	if st := ls.wamp[c.id]; st != nil {
		return st.prefixes.Expand(raw)
	}
	return raw
}

// resolveWAMP1 turns a v1 topic string (a topic name, a CURIE or a seed
// JSON topic) into a schema-checked subscribe message. On a refusal it
// has emitted the audit event, closed with 1008 and returns false.
func (c *conn) resolveWAMP1(ls *loopState, raw string) (schema.Message, bool) {
	s := c.expand(ls, raw)
	var m schema.Message
	var v *schema.Violation
	if wamp.IsSeed(s) {
		sd, err := wamp.ParseSeed(s)
		if err != nil {
			c.wamp1Close(ls, 1008, audit.Event{Event: audit.KindMessageRejected, Severity: audit.Warning,
				Detail: err.Error()}, parseReason(err))
			return m, false
		}
		m, v = ls.checkSubscribe(sd.Topic, sd.UserID, sd.Token)
	} else {
		m, v = ls.checkSubscribe(s, nil, "")
	}
	if v != nil {
		c.wamp1Close(ls, 1008, audit.Event{Event: audit.KindMessageRejected, Severity: audit.Warning,
			Detail: violationDetail(v)}, v.Reason)
		return m, false
	}
	return m, true
}

// onWAMP1Subscribe validates first and only then subscribes (unlike
// Ratchet); a refusal closes with 1008, as v1 has no error reply.
func (c *conn) onWAMP1Subscribe(ls *loopState, raw string) {
	m, ok := c.resolveWAMP1(ls, raw)
	if !ok {
		return
	}
	if c.findSub(m.Topic) >= 0 {
		return // already subscribed; v1 has no reply
	}
	if len(c.subs) >= ls.srv.opts.Limits.MaxSubscriptionsConn {
		c.wamp1Close(ls, 1008, audit.Event{Event: audit.KindSubscribeDenied, Severity: audit.Notice,
			Topic: m.Topic, UserID: m.UserID}, reason.TooManySubscriptions)
		return
	}
	fp, r, sp := c.authorizeSpent(ls, &m, nil)
	if r != reason.None {
		ev, sev := audit.KindSubscribeDenied, audit.Notice
		if r.IsAuth() {
			ev, sev = audit.KindAuthFailed, audit.Warning
		}
		e := audit.Event{Event: ev, Severity: sev,
			Topic: m.Topic, UserID: m.UserID, TokenFP: fp}
		spentEvent(&e, r, sp, ls.loop.Now)
		c.wamp1Close(ls, 1008, e, r)
		return
	}
	if raw != m.Topic && !c.hold(ls, v1StringBytes(raw)) {
		return // the string kept for EVENTs is over the inbound budget
	}
	if fp != "" {
		c.emit(ls, audit.Event{Event: audit.KindAuthOK, Severity: audit.Info, Stage: audit.StageMessage,
			Topic: m.Topic, UserID: m.UserID, TokenFP: fp}, reason.None)
	}
	ls.subscribe(c, m.Topic)
	if raw != m.Topic {
		c.subs[len(c.subs)-1].v1 = &raw // a fresh string from the parser
	}
	c.emit(ls, audit.Event{Event: audit.KindSubscribe, Severity: audit.Info, Stage: audit.StageMessage,
		Topic: m.Topic, UserID: m.UserID, TokenFP: fp}, reason.None)
}

// onWAMP1Unsubscribe finds the subscription by the exact string or, for a
// topic name or CURIE, by its expansion.
func (c *conn) onWAMP1Unsubscribe(ls *loopState, raw string) {
	i := -1
	for j := range c.subs {
		if c.subs[j].v1String() == raw {
			i = j
			break
		}
	}
	if s := c.expand(ls, raw); i < 0 && !wamp.IsSeed(s) {
		if j := c.findSub(s); j >= 0 && !wamp.IsSeed(c.subs[j].v1String()) {
			i = j
		}
	}
	if i < 0 {
		// No reply in v1, and the string is not logged: it may be a seed.
		c.emit(ls, audit.Event{Event: audit.KindMessageRejected, Severity: audit.Notice, Stage: audit.StageMessage}, reason.NotSubscribed)
		return
	}
	topic := c.subs[i].topic.name
	if v1 := c.subs[i].v1; v1 != nil {
		c.hold(ls, -v1StringBytes(*v1))
	}
	ls.unsubscribe(c, i)
	c.emit(ls, audit.Event{Event: audit.KindUnsubscribe, Severity: audit.Info, Stage: audit.StageMessage,
		Topic: topic, UserID: c.userID()}, reason.None)
}

// onWAMP1Publish publishes where the topic rule allows it, honouring
// excludeMe and the exclude/eligible session lists; a refusal closes 1008.
func (c *conn) onWAMP1Publish(ls *loopState, m *wamp.V1Message) {
	t, ok := c.resolveWAMP1(ls, m.Topic)
	if !ok {
		return
	}
	s := ls.srv
	rule, r := c.mayPublish(ls, t.Topic)
	if r != reason.None {
		ev := audit.KindMessageRejected
		if r.IsAuth() {
			ev = audit.KindAuthFailed
		}
		c.wamp1Close(ls, 1008, audit.Event{Event: ev, Severity: audit.Warning,
			Topic: t.Topic, UserID: c.userID()}, r)
		return
	}
	if ds, ok := s.opts.DataSchemas[rule.Match]; ok {
		if v := ds.Check(m.Event); v != nil {
			c.wamp1Close(ls, 1008, audit.Event{Event: audit.KindMessageRejected, Severity: audit.Warning,
				Topic: t.Topic, UserID: c.userID(), Detail: violationDetail(v)}, v.Reason)
			return
		}
	}
	p := newPublication(t.Topic, append([]byte(nil), m.Event...))
	p.filter = newPubFilter(c.id, m.ExcludeMe, m.Exclude, m.Eligible, m.HasEligible, s.connOfSession)
	c.emit(ls, audit.Event{Event: audit.KindPublish, Severity: audit.Info, Stage: audit.StageMessage,
		Topic: t.Topic, UserID: c.userID()}, reason.None)
	s.post(p)
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
