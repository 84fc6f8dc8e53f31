package gateway

import (
	"github.com/portcullis-gw/portcullis/gateway/metrics"
	"github.com/portcullis-gw/portcullis/gateway/wamp"
	"github.com/portcullis-gw/portcullis/policy/decision"
)

// proto numbers the wire protocols; it indexes codecs and the frames a
// publication encodes once per protocol.
type proto uint8

const (
	protoNative proto = iota // portcullis.v1 (session.go)
	protoWAMP1               // WAMP v1, "wamp" (wamp1.go)
	protoWAMP2               // WAMP v2, "wamp.2.json" (wamp2.go)
	protoCount
)

var protoNames = [protoCount]string{"portcullis.v1", wamp.SubprotocolV1, wamp.SubprotocolV2}

// codec is one wire protocol's side of a connection: how it greets, reads
// messages, answers refusals and encodes events. It is chosen once, at the
// upgrade, by the negotiated subprotocol (conn.proto indexes codecs), so
// nothing else in the gateway switches on the protocol. Codecs are
// stateless; what a session keeps lives in conn, its subscriptions and
// loopState.wamp. Loop goroutine only.
type codec interface {
	// welcome queues the protocol's first frame, if it has one.
	welcome(c *conn, ls *loopState)
	// message handles one complete text message that passed the frame
	// stage and the message rate.
	message(c *conn, ls *loopState, payload []byte)
	// answer fits refusal d to the protocol: a protocol without an error
	// reply for q closes instead.
	answer(d decision.Decision, q *request) decision.Decision
	// reply answers refused request q on a connection that stays open
	// (d.Close == 0) with the protocol's error reply, if it has one.
	reply(c *conn, ls *loopState, q *request, d decision.Decision)
	// lastWord queues what the protocol says before the close frame of
	// refusal d (WAMP v2's ABORT), if anything.
	lastWord(c *conn, ls *loopState, q *request, d decision.Decision)
	// encode returns p's event frame for this protocol's subscribers of
	// p's topic by name; called once per publication and protocol.
	encode(p *Publication) []byte
	// eventFrame returns p's frame for c's subscription to ts: shared
	// (encode's, through p.frame) unless the subscription needs its own.
	eventFrame(c *conn, p *Publication, ts *topicSubs) []byte
	// eventPrefix is how c's queued event frames of ts begin, for the
	// slow-consumer policies that drop them.
	eventPrefix(c *conn, ts *topicSubs) []byte
}

// counted adds one client message of c's protocol with op o to the
// messages metric: a fixed array of atomics, no allocation. A message
// handled again after an asynchronous redemption is not counted twice.
func (ls *loopState) counted(c *conn, o metrics.Op) {
	if ls.replaying {
		return // counted when it arrived (redeem_async.go)
	}
	ls.srv.opts.Messages.Inc(metrics.Protocol(c.proto), o)
}

var codecs = [protoCount]codec{protoNative: nativeCodec{}, protoWAMP1: wamp1Codec{}, protoWAMP2: wamp2Codec{}}

// codec is c's protocol.
func (c *conn) codec() codec { return codecs[c.proto] }

// request is what a refused request's answer needs, as the codec that
// parsed it filled it in; nil for a refusal that answers no request (a
// frame-stage close).
type request struct {
	id    int64       // native "id", WAMP v2 request id
	hasID bool        // native: the message carried an id
	typ   wamp.V2Type // WAMP v2: the request's type, echoed in ERROR
	uri   string      // WAMP v2: the ERROR or ABORT URI
	quiet bool        // WAMP v2 PUBLISH without acknowledge: no ERROR is sent
}

// v1Op is the messages metric's op of a WAMP v1 message type.
func v1Op(t wamp.V1Type) metrics.Op {
	switch t {
	case wamp.V1Prefix:
		return metrics.OpPrefix
	case wamp.V1Call:
		return metrics.OpCall
	case wamp.V1Subscribe:
		return metrics.OpSubscribe
	case wamp.V1Unsubscribe:
		return metrics.OpUnsubscribe
	case wamp.V1Publish:
		return metrics.OpPublish
	}
	return metrics.OpUnknown
}

// v2Op is the messages metric's op of a WAMP v2 message type.
func v2Op(t wamp.V2Type) metrics.Op {
	switch t {
	case wamp.V2Hello:
		return metrics.OpHello
	case wamp.V2Abort:
		return metrics.OpAbort
	case wamp.V2Authenticate:
		return metrics.OpAuthenticate
	case wamp.V2Goodbye:
		return metrics.OpGoodbye
	case wamp.V2Publish:
		return metrics.OpPublish
	case wamp.V2Subscribe:
		return metrics.OpSubscribe
	case wamp.V2Unsubscribe:
		return metrics.OpUnsubscribe
	case wamp.V2Call:
		return metrics.OpCall
	case wamp.V2Register:
		return metrics.OpRegister
	}
	return metrics.OpUnknown
}
