package wamp

import (
	"encoding/json"
	"math"
	"regexp"
	"strconv"
)

// V2Type is a WAMP v2 message type code.
type V2Type uint8

// WAMP v2 message types of the basic profile (broker role), and the
// dealer-role ones a client may send to the wrong peer.
const (
	V2Hello        V2Type = 1
	V2Welcome      V2Type = 2
	V2Abort        V2Type = 3
	V2Challenge    V2Type = 4
	V2Authenticate V2Type = 5
	V2Goodbye      V2Type = 6
	V2Error        V2Type = 8
	V2Publish      V2Type = 16
	V2Published    V2Type = 17
	V2Subscribe    V2Type = 32
	V2Subscribed   V2Type = 33
	V2Unsubscribe  V2Type = 34
	V2Unsubscribed V2Type = 35
	V2Event        V2Type = 36
	V2Call         V2Type = 48
	V2Register     V2Type = 64
)

// Error and close URIs.
const (
	ErrNotAuthorized        = "wamp.error.not_authorized"
	ErrInvalidURI           = "wamp.error.invalid_uri"
	ErrInvalidArgument      = "wamp.error.invalid_argument"
	ErrNoSuchSubscription   = "wamp.error.no_such_subscription"
	ErrNoSuchProcedure      = "wamp.error.no_such_procedure"
	ErrProtocolViolation    = "wamp.error.protocol_violation"
	ErrNoSuchRealm          = "wamp.error.no_such_realm"
	ErrAuthenticationFailed = "wamp.error.authentication_failed"
	ErrNoMatchingAuthMethod = "wamp.error.no_matching_auth_method"
	CloseGoodbyeAndOut      = "wamp.close.goodbye_and_out"
)

// ID is a WAMP v2 id: an integer in [1, MaxID]. The zero value is invalid.
type ID uint64

// MaxID is the largest WAMP id, 2^53.
const MaxID = 1 << 53

// Valid reports whether id is in [1, MaxID].
func (id ID) Valid() bool { return id >= 1 && id <= MaxID }

// V2Message is a parsed client message of WAMP v2. Strings are copies;
// Args and Kwargs alias the parsed input and are valid only as long as
// that buffer is: copy them to keep them.
type V2Message struct {
	Type V2Type

	// Request is the request id of SUBSCRIBE, UNSUBSCRIBE, PUBLISH and
	// CALL (any value in [0, MaxID]: ids need not be sequential).
	Request uint64

	Realm       string   // HELLO
	ClientRole  bool     // HELLO: details.roles names publisher, subscriber, caller or callee
	AuthMethods []string // HELLO details.authmethods
	AuthID      string   // HELLO details.authid

	Signature string // AUTHENTICATE: the ticket
	Reason    string // GOODBYE, ABORT

	Topic        string // SUBSCRIBE, PUBLISH; the procedure of CALL
	Match        string // SUBSCRIBE options.match; "" means exact
	Subscription ID     // UNSUBSCRIBE

	Acknowledge bool // PUBLISH options.acknowledge
	ExcludeMe   bool // PUBLISH options.exclude_me; true unless sent false
	Exclude     []ID // PUBLISH options.exclude (session ids)
	Eligible    []ID // PUBLISH options.eligible (session ids)
	HasEligible bool // an eligible list was sent (possibly empty)

	Args   json.RawMessage // PUBLISH positional arguments (a JSON array) or nil
	Kwargs json.RawMessage // PUBLISH keyword arguments (a JSON object) or nil
}

// looseURI is WAMP's loose URI rule: dot-separated non-empty components
// without whitespace, '.' or '#'.
var looseURI = regexp.MustCompile(`^([^\s.#]+\.)*([^\s.#]+)$`)

// ValidURI reports whether s is a loose WAMP URI of at most MaxURIBytes.
func ValidURI(s string) bool { return len(s) <= MaxURIBytes && looseURI.MatchString(s) }

// V2MaxBytes is the largest client message of type t a broker accepts
// for parsing, in bytes: a size cap per type (the gateway's message size
// limit alone for PUBLISH, whose data is relayed). ok is false for a type
// a client may not send to a broker.
func V2MaxBytes(t V2Type) (n int, ok bool) {
	switch t {
	case V2Hello, V2Authenticate:
		return MaxAuthBytes, true
	case V2Abort, V2Goodbye, V2Unsubscribe:
		return MaxSmallBytes, true
	case V2Subscribe:
		return MaxTopicMsgBytes, true
	case V2Call, V2Register:
		return MaxCallBytes, true
	case V2Publish:
		return math.MaxInt, true
	}
	return 0, false
}

// ParseV2 parses one client message of WAMP v2: HELLO, AUTHENTICATE,
// ABORT, GOODBYE, SUBSCRIBE, UNSUBSCRIBE, PUBLISH or CALL/REGISTER (which
// the broker refuses). Server message types and unknown codes are
// ErrUnknownType.
func ParseV2(b []byte) (V2Message, error) {
	arr, perr := splitArray(b)
	if perr != nil {
		return V2Message{}, perr
	}
	code, perr := typeCode(arr[0])
	if perr != nil {
		return V2Message{}, perr
	}
	m := V2Message{Type: V2Type(code)}
	switch m.Type {
	case V2Hello:
		if len(arr) != 3 || !isObject(arr[2]) {
			return m, shapeErr("HELLO is [1, realm, details]")
		}
		if m.Realm, perr = str(arr[1], "HELLO realm"); perr != nil {
			return m, perr
		}
		var d struct {
			Roles       map[string]json.RawMessage `json:"roles"`
			AuthMethods []string                   `json:"authmethods"`
			AuthID      *string                    `json:"authid"`
		}
		if err := json.Unmarshal(arr[2], &d); err != nil {
			return m, shapeErr("HELLO details: roles must be an object, authmethods a list of strings, authid a string")
		}
		for _, r := range []string{"publisher", "subscriber", "caller", "callee"} {
			if v, ok := d.Roles[r]; ok && isObject(v) {
				m.ClientRole = true
			}
		}
		if len(d.AuthMethods) > 16 {
			return m, &ParseError{Kind: ErrTooLarge, Msg: "HELLO authmethods too long"}
		}
		m.AuthMethods = d.AuthMethods
		if d.AuthID != nil {
			m.AuthID = *d.AuthID
		}
	case V2Authenticate:
		if len(arr) != 3 || !isObject(arr[2]) {
			return m, shapeErr("AUTHENTICATE is [5, signature, extra]")
		}
		if m.Signature, perr = str(arr[1], "AUTHENTICATE signature"); perr != nil {
			return m, perr
		}
	case V2Abort, V2Goodbye:
		if len(arr) != 3 || !isObject(arr[1]) {
			return m, shapeErr("ABORT and GOODBYE are [type, details, reason]")
		}
		if m.Reason, perr = str(arr[2], "reason"); perr != nil {
			return m, perr
		}
	case V2Subscribe:
		if len(arr) != 4 || !isObject(arr[2]) {
			return m, shapeErr("SUBSCRIBE is [32, request, options, topic]")
		}
		if m.Request, perr = requestID(arr[1]); perr != nil {
			return m, perr
		}
		var o struct {
			Match *string `json:"match"`
		}
		if err := json.Unmarshal(arr[2], &o); err != nil {
			return m, shapeErr("SUBSCRIBE options.match is not a string")
		}
		if o.Match != nil && *o.Match != "exact" {
			m.Match = *o.Match
		}
		if m.Topic, perr = str(arr[3], "SUBSCRIBE topic"); perr != nil {
			return m, perr
		}
	case V2Unsubscribe:
		if len(arr) != 3 {
			return m, shapeErr("UNSUBSCRIBE is [34, request, subscription]")
		}
		if m.Request, perr = requestID(arr[1]); perr != nil {
			return m, perr
		}
		n, ok := parseUint(arr[2], MaxID)
		if !ok || n == 0 {
			return m, shapeErr("UNSUBSCRIBE subscription is not an id in [1, 2^53]")
		}
		m.Subscription = ID(n)
	case V2Publish:
		if len(arr) < 4 || len(arr) > 6 || !isObject(arr[2]) {
			return m, shapeErr("PUBLISH is [16, request, options, topic (, args (, kwargs))]")
		}
		if m.Request, perr = requestID(arr[1]); perr != nil {
			return m, perr
		}
		var o struct {
			Acknowledge *bool `json:"acknowledge"`
			ExcludeMe   *bool `json:"exclude_me"`
			Exclude     *[]ID `json:"exclude"`
			Eligible    *[]ID `json:"eligible"`
		}
		if err := json.Unmarshal(arr[2], &o); err != nil {
			return m, shapeErr("PUBLISH options: acknowledge and exclude_me must be booleans, exclude and eligible lists of ids")
		}
		m.Acknowledge = o.Acknowledge != nil && *o.Acknowledge
		m.ExcludeMe = o.ExcludeMe == nil || *o.ExcludeMe
		if o.Exclude != nil {
			if m.Exclude, perr = idList(*o.Exclude, "PUBLISH options.exclude"); perr != nil {
				return m, perr
			}
		}
		if o.Eligible != nil {
			if m.Eligible, perr = idList(*o.Eligible, "PUBLISH options.eligible"); perr != nil {
				return m, perr
			}
			m.HasEligible = true
		}
		if m.Topic, perr = str(arr[3], "PUBLISH topic"); perr != nil {
			return m, perr
		}
		if len(arr) >= 5 {
			if !isArray(arr[4]) {
				return m, shapeErr("PUBLISH args is not a list")
			}
			m.Args = arr[4]
		}
		if len(arr) == 6 {
			if !isObject(arr[5]) {
				return m, shapeErr("PUBLISH kwargs is not an object")
			}
			m.Kwargs = arr[5]
		}
	case V2Call, V2Register:
		if len(arr) < 4 {
			return m, shapeErr("CALL and REGISTER are [type, request, options, uri, ...]")
		}
		if m.Request, perr = requestID(arr[1]); perr != nil {
			return m, perr
		}
	default:
		return m, &ParseError{Kind: ErrUnknownType, Msg: "message type not accepted from a client by a broker"}
	}
	return m, nil
}

// UnmarshalJSON accepts a plain integer literal in [1, MaxID].
func (id *ID) UnmarshalJSON(b []byte) error {
	n, ok := parseUint(b, MaxID)
	if !ok || n == 0 {
		return shapeErr("id is not an integer in [1, 2^53]")
	}
	*id = ID(n)
	return nil
}

func requestID(e json.RawMessage) (uint64, *ParseError) {
	n, ok := parseUint(e, MaxID)
	if !ok {
		return 0, shapeErr("request id is not an integer in [0, 2^53]")
	}
	return n, nil
}

func idList(l []ID, what string) ([]ID, *ParseError) {
	if len(l) > MaxListLen {
		return nil, &ParseError{Kind: ErrTooLarge, Msg: what + " too long"}
	}
	if l == nil {
		l = []ID{}
	}
	return l, nil
}

// Data maps a PUBLISH's payload to the one JSON value a Portcullis topic
// carries: the only positional argument; else the keyword arguments
// object; null when there are neither. ok is false when there are several
// positional arguments, or both kinds: that has no single value.
func (m *V2Message) Data() (data json.RawMessage, ok bool) {
	var args []json.RawMessage
	if m.Args != nil {
		if err := json.Unmarshal(m.Args, &args); err != nil {
			return nil, false
		}
	}
	hasKw := false
	if m.Kwargs != nil {
		var kw map[string]json.RawMessage
		if err := json.Unmarshal(m.Kwargs, &kw); err != nil {
			return nil, false
		}
		hasKw = len(kw) > 0
	}
	switch {
	case len(args) == 1 && !hasKw:
		return args[0], true
	case len(args) == 0 && hasKw:
		return m.Kwargs, true
	case len(args) == 0:
		return json.RawMessage("null"), true
	}
	return nil, false
}

func appendID(dst []byte, id uint64) []byte { return strconv.AppendUint(dst, id, 10) }

// AppendV2Welcome appends WELCOME [2, session, details] with the broker
// role (AutobahnJS needs roles.broker) and the ticket authentication.
func AppendV2Welcome(dst []byte, session ID, authid, authrole, server string) []byte {
	dst = append(dst, "[2,"...)
	dst = appendID(dst, uint64(session))
	dst = append(dst, `,{"roles":{"broker":{"features":{"publisher_exclusion":true,"subscriber_blackwhite_listing":true}}},"authid":`...)
	dst = AppendString(dst, authid)
	dst = append(dst, `,"authrole":`...)
	dst = AppendString(dst, authrole)
	dst = append(dst, `,"authmethod":"ticket","authprovider":"portcullis","agent":`...)
	dst = AppendString(dst, server)
	return append(dst, "}]"...)
}

// AppendV2Challenge appends CHALLENGE [4, authmethod, {}].
func AppendV2Challenge(dst []byte, authmethod string) []byte {
	dst = append(dst, "[4,"...)
	dst = AppendString(dst, authmethod)
	return append(dst, ",{}]"...)
}

// AppendV2Abort appends ABORT [3, {"message": message}, reasonURI].
func AppendV2Abort(dst []byte, reasonURI, message string) []byte {
	dst = append(dst, `[3,{"message":`...)
	dst = AppendString(dst, message)
	dst = append(dst, "},"...)
	dst = AppendString(dst, reasonURI)
	return append(dst, ']')
}

// AppendV2Goodbye appends GOODBYE [6, {}, reasonURI].
func AppendV2Goodbye(dst []byte, reasonURI string) []byte {
	dst = append(dst, "[6,{},"...)
	dst = AppendString(dst, reasonURI)
	return append(dst, ']')
}

// AppendV2Error appends ERROR [8, requestType, request, {}, errorURI].
func AppendV2Error(dst []byte, requestType V2Type, request uint64, errorURI string) []byte {
	dst = append(dst, "[8,"...)
	dst = appendID(dst, uint64(requestType))
	dst = append(dst, ',')
	dst = appendID(dst, request)
	dst = append(dst, ",{},"...)
	dst = AppendString(dst, errorURI)
	return append(dst, ']')
}

// AppendV2Subscribed appends SUBSCRIBED [33, request, subscription].
func AppendV2Subscribed(dst []byte, request uint64, sub ID) []byte {
	dst = append(dst, "[33,"...)
	dst = appendID(dst, request)
	dst = append(dst, ',')
	dst = appendID(dst, uint64(sub))
	return append(dst, ']')
}

// AppendV2Unsubscribed appends UNSUBSCRIBED [35, request].
func AppendV2Unsubscribed(dst []byte, request uint64) []byte {
	dst = append(dst, "[35,"...)
	dst = appendID(dst, request)
	return append(dst, ']')
}

// AppendV2Published appends PUBLISHED [17, request, publication].
func AppendV2Published(dst []byte, request uint64, pub ID) []byte {
	dst = append(dst, "[17,"...)
	dst = appendID(dst, request)
	dst = append(dst, ',')
	dst = appendID(dst, uint64(pub))
	return append(dst, ']')
}

// AppendV2Event appends EVENT [36, subscription, publication, {}, [data]]:
// a topic's one JSON value is the event's only positional argument.
func AppendV2Event(dst []byte, sub, pub ID, data []byte) []byte {
	dst = AppendV2EventPrefix(dst, sub)
	dst = appendID(dst, uint64(pub))
	dst = append(dst, ",{},["...)
	dst = append(dst, data...)
	return append(dst, "]]"...)
}

// AppendV2EventPrefix appends how the EVENTs of subscription sub begin:
// "[36,<sub>,".
func AppendV2EventPrefix(dst []byte, sub ID) []byte {
	dst = append(dst, "[36,"...)
	dst = appendID(dst, uint64(sub))
	return append(dst, ',')
}
