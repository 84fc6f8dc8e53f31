package metrics

import "sync/atomic"

// Protocol is a wire protocol, the `protocol` label. Its numbers are the
// gateway's own protocol numbers (native 0, WAMP v1 1, WAMP v2 2), so the
// gateway converts its value directly.
type Protocol uint8

// Protocols.
const (
	ProtocolNative Protocol = iota // portcullis.v1
	ProtocolWAMP1                  // wamp
	ProtocolWAMP2                  // wamp.2.json

	numProtocols
)

var protocolNames = [numProtocols]string{"portcullis.v1", "wamp", "wamp.2.json"}

// String returns the subprotocol name of p, as negotiated in
// Sec-WebSocket-Protocol and written in an audit line's `proto`; "unknown"
// for a value that is no protocol.
func (p Protocol) String() string {
	if p < numProtocols {
		return protocolNames[p]
	}
	return "unknown"
}

// ParseProtocol parses a subprotocol name as written in an audit event's
// Proto field.
func ParseProtocol(s string) (Protocol, bool) {
	// A switch on constant strings: no map, no allocation.
	switch s {
	case "portcullis.v1":
		return ProtocolNative, true
	case "wamp":
		return ProtocolWAMP1, true
	case "wamp.2.json":
		return ProtocolWAMP2, true
	}
	return 0, false
}

// Op is what a client message asks for, the `op` label: a native `op` or
// a WAMP message type, folded onto one vocabulary.
type Op uint8

// Ops.
const (
	OpInvalid      Op = iota // not decodable: bad JSON, schema failure, a WAMP message of the wrong shape
	OpUnknown                // decoded, but an op or type the protocol does not know
	OpSubscribe              // native subscribe, WAMP SUBSCRIBE
	OpUnsubscribe            // native unsubscribe, WAMP UNSUBSCRIBE
	OpPublish                // native publish, WAMP PUBLISH
	OpPing                   // native ping
	OpHello                  // WAMP v2 HELLO
	OpAuthenticate           // WAMP v2 AUTHENTICATE
	OpGoodbye                // WAMP v2 GOODBYE
	OpAbort                  // WAMP v2 ABORT
	OpCall                   // WAMP CALL (refused: no RPC)
	OpRegister               // WAMP v2 REGISTER (refused: no RPC)
	OpPrefix                 // WAMP v1 PREFIX

	numOps
)

var opNames = [numOps]string{"invalid", "unknown", "subscribe", "unsubscribe", "publish", "ping",
	"hello", "authenticate", "goodbye", "abort", "call", "register", "prefix"}

// String returns the `op` label of o; "unknown" for a value that is no Op.
func (o Op) String() string {
	if o < numOps {
		return opNames[o]
	}
	return opNames[OpUnknown]
}

// Messages counts client messages by protocol and op: the family
// portcullis_messages_total. The zero value is ready; a nil *Messages
// counts nothing, so a gateway built without metrics calls Inc as usual.
// Safe for simultaneous use by multiple goroutines.
type Messages struct {
	n [numProtocols][numOps]atomic.Uint64
}

// Inc counts one complete client text message of protocol p that asked for
// o. The gateway calls it once per message that reached its protocol
// handler (past the frame checks and the message-rate bucket), with
// OpInvalid when it could not be decoded. A p or o out of range is counted
// as OpUnknown of the native protocol rather than lost. Allocation-free.
func (m *Messages) Inc(p Protocol, o Op) {
	if m == nil {
		return
	}
	if p >= numProtocols || o >= numOps {
		p, o = ProtocolNative, OpUnknown
	}
	m.n[p][o].Add(1)
}

// Count returns how many messages of p with o were counted.
func (m *Messages) Count(p Protocol, o Op) uint64 {
	if m == nil || p >= numProtocols || o >= numOps {
		return 0
	}
	return m.n[p][o].Load()
}
