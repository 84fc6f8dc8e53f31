// Package schema owns the shape of every inbound portcullis.v1 message (docs/PROTOCOL.md)
// and of client-published data where a topic rule attaches a schema:
// the size and nesting-depth caps checked on the raw bytes before any
// parsing (pipeline step 4, docs/ARCHITECTURE.md), the JSON Schemas (draft 2020-12) embedded from
// schemas/*.json, and the translation of a failure into a Violation that
// names the failing field without ever echoing the payload.
//
// # Fast path and schema path
//
// Check first tries a small allocation-light scanner (fast.go) that accepts
// only plainly well-formed messages — known keys once each, no escapes,
// canonical integers — and decodes them straight into a Message. Anything
// else, every refusal included, goes through the compiled JSON Schemas,
// which alone decide what is refused and how it is reported. The fast path
// may only ever accept what the schemas accept, with the same Message;
// equiv_test.go proves it over a corpus and FuzzCheck keeps proving it.
//
// It imports nothing from gateway, audit or alerting, and only reason from
// the rest of the project.
package schema

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/big"
	"path"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Defaults for a zero Limits field (docs/ARCHITECTURE.md and docs/CONFIG.md).
const (
	DefaultMaxBytes = 1 << 20 // bytes per message: limits.max_message_bytes
	DefaultMaxDepth = 32      // nesting levels of arrays and objects
)

// MaxID is the largest id (and integer userId) accepted: 2^53-1, the largest
// integer every JSON client represents exactly.
const MaxID = 1<<53 - 1

// Number caps: a JSON number literal longer than maxNumberLen bytes, or with
// an exponent beyond ±maxExponent, is refused before any schema keyword
// compares it: the schema library evaluates numbers as big.Rat, where
// "1e999999" alone costs ~17 ms, and a number big.Rat cannot parse
// ("1e9999999") makes minimum/maximum dereference nil and panic. No id,
// userId or sane data value comes near either cap.
const (
	maxNumberLen = 64
	maxExponent  = 400
)

// Limits bound what Check parses. A zero field means its default, never
// "unlimited".
type Limits struct {
	MaxBytes int // bytes of one raw message; more → reason.MessageTooLarge
	MaxDepth int // nesting levels of arrays and objects; more → reason.TooDeep
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	return l
}

// Message is a decoded, schema-valid client message. Strings are copies;
// Data (publish only) may alias the raw input and is then valid only as long
// as the caller keeps that buffer unchanged — copy it to keep it.
type Message struct {
	Op     string // "subscribe", "unsubscribe", "publish" or "ping"
	ID     int64  // client-chosen, 0..MaxID; meaningful when HasID
	HasID  bool
	Topic  string
	UserID string // a JSON integer userId arrives here in decimal
	Token  string
	Data   json.RawMessage
}

// Violation says why a message was refused. Reason feeds the audit event
// and the strike; Pointer and Keyword go to the audit trail (Pointer also to
// the client); Message is safe to send to the client.
type Violation struct {
	Reason reason.Reason
	// Pointer is the JSON pointer (RFC 6901) of the failing instance, e.g.
	// "/topic"; "" is the whole message. For an unexpected field it names
	// that field: at most 64 bytes of it, non-printable bytes as '?'.
	Pointer string
	// Keyword is the schema keyword location that failed, e.g.
	// "/properties/topic/pattern"; "" when no schema was consulted (size,
	// depth, not JSON, number caps).
	Keyword string
	// Message names the field and the rule it broke, never the payload.
	Message string
}

// Error makes a Violation usable as an error; the text is Message.
func (v *Violation) Error() string { return v.Message }

//go:embed schemas/*.json
var schemaFiles embed.FS

// schemaURN is the $id prefix of the embedded schemas; each file's $id is
// schemaURN + its base name. A URN resolves nowhere: the compiler has no
// loader, so nothing outside the embedded files can ever be fetched.
const schemaURN = "urn:portcullis:schema:v1:"

// ops lists the message types; each has schemas/<op>.json.
var ops = [...]string{"subscribe", "unsubscribe", "publish", "ping"}

// Validator checks raw native messages. It is immutable after New and safe
// for simultaneous use by multiple goroutines.
type Validator struct {
	limits   Limits
	envelope *jsonschema.Schema
	byOp     map[string]*jsonschema.Schema
}

// New compiles the embedded schemas once.
func New(limits Limits) (*Validator, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	entries, err := fs.ReadDir(schemaFiles, "schemas")
	if err != nil {
		return nil, fmt.Errorf("read embedded schemas: %w", err)
	}
	for _, e := range entries {
		b, err := schemaFiles.ReadFile("schemas/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("read embedded schema %s: %w", e.Name(), err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("parse embedded schema %s: %w", e.Name(), err)
		}
		name := strings.TrimSuffix(e.Name(), path.Ext(e.Name()))
		if err := c.AddResource(schemaURN+name, doc); err != nil {
			return nil, fmt.Errorf("add embedded schema %s: %w", e.Name(), err)
		}
	}
	v := &Validator{limits: limits.withDefaults(), byOp: make(map[string]*jsonschema.Schema, len(ops))}
	if v.envelope, err = c.Compile(schemaURN + "envelope"); err != nil {
		return nil, fmt.Errorf("compile envelope schema: %w", err)
	}
	for _, op := range ops {
		s, err := c.Compile(schemaURN + op)
		if err != nil {
			return nil, fmt.Errorf("compile %s schema: %w", op, err)
		}
		v.byOp[op] = s
	}
	return v, nil
}

// Limits returns the limits in force, defaults filled in.
func (v *Validator) Limits() Limits { return v.limits }

// Check validates one raw native message: size cap, then depth cap (both on
// the raw bytes, before parsing), then JSON, then the envelope schema (an
// object with a known op), then the op's schema. It returns the decoded
// message on success. On a violation the Message still carries Op and
// ID/HasID when those were readable and valid, so the caller can echo the
// id in its error reply.
func (v *Validator) Check(raw []byte) (Message, *Violation) {
	if vio := v.precheck(raw); vio != nil {
		return Message{}, vio
	}
	if m, ok := fastDecode(raw); ok {
		return m, nil
	}
	return v.checkSchema(raw)
}

// precheck applies the size and depth caps without parsing.
func (v *Validator) precheck(raw []byte) *Violation {
	if len(raw) > v.limits.MaxBytes {
		return &Violation{Reason: reason.MessageTooLarge,
			Message: "message larger than " + strconv.Itoa(v.limits.MaxBytes) + " bytes"}
	}
	if !DepthWithin(raw, v.limits.MaxDepth) {
		return &Violation{Reason: reason.TooDeep,
			Message: "message nesting deeper than " + strconv.Itoa(v.limits.MaxDepth) + " levels"}
	}
	return nil
}

// DepthWithin reports whether no array or object in b nests deeper than max
// levels ("{}" is one level). It counts brackets outside strings, stops at
// the first level too deep, does not allocate and does not validate b: a
// malformed input is left to the parser.
func DepthWithin(b []byte, max int) bool {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			// Skip the string: up to the next quote not escaped.
			for i++; i < len(b); i++ {
				if b[i] == '\\' {
					i++
				} else if b[i] == '"' {
					break
				}
			}
		case '{', '[':
			depth++
			if depth > max {
				return false
			}
		case '}', ']':
			depth--
		}
	}
	return true
}

// checkSchema is the authoritative path: decode into the schema library's
// value model, validate, and build the Message from the decoded value.
func (v *Validator) checkSchema(raw []byte) (Message, *Violation) {
	var m Message
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return m, &Violation{Reason: reason.BadJSON, Message: "message is not valid JSON"}
	}
	obj, _ := doc.(map[string]any)
	// The id is read before anything else is judged, so that even an error
	// reply can echo it.
	if obj != nil {
		if n, ok := obj["id"].(json.Number); ok && numberWithinCaps(n) {
			if id, ok := integer(n); ok && id >= 0 && id <= MaxID {
				m.ID, m.HasID = id, true
			}
		}
	}
	if err := v.envelope.Validate(doc); err != nil {
		vio := violationFrom(err, nativeText(""))
		if vio.Keyword == "/properties/op/enum" {
			vio.Reason = reason.UnknownOp
			vio.Message = "unknown op"
		}
		return m, vio
	}
	m.Op = canonicalOp(obj["op"].(string))
	for _, k := range [...]string{"id", "userId"} {
		if n, ok := obj[k].(json.Number); ok && !numberWithinCaps(n) {
			return m, &Violation{Reason: reason.SchemaViolation, Pointer: "/" + k,
				Message: k + " is not a number in range"}
		}
	}
	if err := v.byOp[m.Op].Validate(doc); err != nil {
		return m, violationFrom(err, nativeText(m.Op))
	}
	if s, ok := obj["topic"].(string); ok {
		m.Topic = s
	}
	if s, ok := obj["token"].(string); ok {
		m.Token = s
	}
	switch u := obj["userId"].(type) {
	case string:
		m.UserID = u
	case json.Number:
		id, ok := integer(u)
		if !ok {
			return m, &Violation{Reason: reason.Internal, Pointer: "/userId", Message: "userId could not be read"}
		}
		m.UserID = strconv.FormatInt(id, 10)
	}
	if _, ok := obj["data"]; ok {
		var d struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			return m, &Violation{Reason: reason.Internal, Pointer: "/data", Message: "data could not be read"}
		}
		m.Data = d.Data
	}
	return m, nil
}

// canonicalOp returns the package's own copy of a known op name, so Message
// never retains the decoded document.
func canonicalOp(op string) string {
	for _, o := range ops {
		if o == op {
			return o
		}
	}
	return op
}

// integer returns the value of a JSON number that is an integer fitting an
// int64 ("1e3" and "1.0" included, as JSON Schema counts them).
func integer(n json.Number) (int64, bool) {
	r, ok := new(big.Rat).SetString(string(n))
	if !ok || !r.IsInt() || !r.Num().IsInt64() {
		return 0, false
	}
	return r.Num().Int64(), true
}

// numberWithinCaps reports whether n is short enough, with an exponent
// small enough, to be handed to big.Rat (see maxNumberLen).
func numberWithinCaps(n json.Number) bool {
	s := string(n)
	if len(s) > maxNumberLen {
		return false
	}
	i := strings.IndexAny(s, "eE")
	if i < 0 {
		return true
	}
	e, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
	return err == nil && e >= -maxExponent && e <= maxExponent
}
