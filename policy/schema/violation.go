package schema

import (
	"errors"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// maxPointerKey caps the bytes of one client-chosen key copied into a
// Violation's Pointer.
const maxPointerKey = 64

// leaf is one innermost failure of a validation, with its keyword location
// computed through $ref the way the JSON Schema "basic" output does.
type leaf struct {
	kind     jsonschema.ErrorKind
	keyword  string
	instance []string
}

// collectLeaves appends the innermost failures of e. parentURL is the schema
// location of the parent failure, kwLoc the keyword location reached so far
// (mirrors ValidationError.output in the library).
func collectLeaves(e *jsonschema.ValidationError, parentURL, kwLoc string, out []leaf) []leaf {
	ref, isRef := e.ErrorKind.(*kind.Reference)
	if parentURL != "" {
		if strings.HasPrefix(e.SchemaURL, parentURL) {
			kwLoc += e.SchemaURL[len(parentURL):]
		} else if i := strings.IndexByte(e.SchemaURL, '#'); i >= 0 {
			kwLoc = e.SchemaURL[i+1:]
		}
		if isRef {
			kwLoc += pointerOf(ref.KeywordPath())
		}
	}
	url := e.SchemaURL
	if isRef {
		url = ref.URL
	}
	if len(e.Causes) == 0 {
		loc := kwLoc
		if !isRef {
			loc += pointerOf(e.ErrorKind.KeywordPath())
		}
		return append(out, leaf{kind: e.ErrorKind, keyword: loc, instance: e.InstanceLocation})
	}
	for _, c := range e.Causes {
		out = collectLeaves(c, url, kwLoc, out)
	}
	return out
}

// rank orders failures by how useful they are to report first: a missing
// field, then an unexpected one, then a wrong type, then the rest.
func rank(k jsonschema.ErrorKind) int {
	switch k.(type) {
	case *kind.Required:
		return 0
	case *kind.AdditionalProperties:
		return 1
	case *kind.Type:
		return 2
	case *kind.Const, *kind.Enum:
		return 3
	}
	return 4
}

// describer words a failure for the client. field is a safe label for the
// failing instance ("topic", "message", "data"); it never returns payload.
type describer interface {
	label(instance []string) string
	pattern(field string) string
	unexpected() string
}

// nativeText words failures of the native message schemas.
type nativeText string // the op, "" before it is known

var nativeFields = map[string]bool{"op": true, "id": true, "topic": true, "userId": true, "token": true, "data": true}

func (nativeText) label(instance []string) string {
	if len(instance) == 0 {
		return "message"
	}
	if nativeFields[instance[0]] {
		return instance[0]
	}
	return "field"
}

func (nativeText) pattern(field string) string {
	switch field {
	case "topic":
		return "topic must be dot-separated segments of [A-Za-z0-9_:@-]"
	case "userId":
		return "userId must be 1-128 characters of [A-Za-z0-9_@:-] (no \".\": a userId is one topic segment) or an integer 0..2^53-1"
	case "token":
		return "token must be 16-2048 characters of [A-Za-z0-9_.~+/=-]"
	}
	return field + " does not match its pattern"
}

func (t nativeText) unexpected() string {
	if t == "" {
		return "unexpected field in message"
	}
	return "unexpected field in " + string(t) + " message"
}

// dataText words failures of an operator's data schema: the label is
// always "data" because key names inside data come from the client.
type dataText struct{}

func (dataText) label([]string) string { return "data" }
func (dataText) pattern(field string) string {
	return field + " does not match a pattern of the topic's schema"
}
func (dataText) unexpected() string { return "data has a field the topic's schema does not allow" }

// violationFrom turns a schema failure into one Violation: the most useful
// innermost failure (see rank), ties broken by instance then keyword
// location so the choice never depends on map order.
func violationFrom(err error, d describer) *Violation {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &Violation{Reason: reason.Internal, Message: "schema validation failed"}
	}
	leaves := collectLeaves(ve, "", "", nil)
	if len(leaves) == 0 {
		return &Violation{Reason: reason.SchemaViolation, Message: "message does not match the schema"}
	}
	type cand struct {
		l       leaf
		rank    int
		pointer string
		msg     string
	}
	cands := make([]cand, 0, len(leaves))
	for _, l := range leaves {
		ptr, msg := describe(l, d)
		cands = append(cands, cand{l, rank(l.kind), ptr, msg})
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.rank != b.rank {
			return a.rank < b.rank
		}
		if a.pointer != b.pointer {
			return a.pointer < b.pointer
		}
		return a.l.keyword < b.l.keyword
	})
	best := cands[0]
	return &Violation{Reason: reason.SchemaViolation, Pointer: best.pointer, Keyword: best.l.keyword, Message: best.msg}
}

// describe returns the pointer and the client text for one failure.
func describe(l leaf, d describer) (pointer, msg string) {
	pointer = safePointer(l.instance)
	field := d.label(l.instance)
	switch k := l.kind.(type) {
	case *kind.Required:
		missing := append([]string(nil), k.Missing...)
		sort.Strings(missing)
		// Required names come from the schema, not from the payload.
		name := missing[0]
		return joinPointer(pointer, name), "missing field: " + schemaName(d, name)
	case *kind.AdditionalProperties:
		extra := append([]string(nil), k.Properties...)
		sort.Strings(extra)
		return joinPointer(pointer, extra[0]), d.unexpected()
	case *kind.Type:
		return pointer, field + " must be of type " + strings.Join(k.Want, " or ")
	case *kind.MinLength:
		return pointer, field + " must be at least " + strconv.Itoa(k.Want) + " characters"
	case *kind.MaxLength:
		return pointer, field + " must be at most " + strconv.Itoa(k.Want) + " characters"
	case *kind.Pattern:
		return pointer, d.pattern(field)
	case *kind.Minimum:
		return pointer, field + " must be at least " + k.Want.RatString()
	case *kind.Maximum:
		return pointer, field + " must be at most " + k.Want.RatString()
	case *kind.ExclusiveMinimum:
		return pointer, field + " must be greater than " + k.Want.RatString()
	case *kind.ExclusiveMaximum:
		return pointer, field + " must be less than " + k.Want.RatString()
	case *kind.MultipleOf:
		return pointer, field + " must be a multiple of " + k.Want.RatString()
	case *kind.Const:
		return pointer, field + " does not have the required value"
	case *kind.Enum:
		return pointer, field + " is not one of the allowed values"
	case *kind.Format:
		return pointer, field + " is not a valid " + k.Want
	case *kind.MinItems:
		return pointer, field + " must have at least " + strconv.Itoa(k.Want) + " items"
	case *kind.MaxItems:
		return pointer, field + " must have at most " + strconv.Itoa(k.Want) + " items"
	case *kind.MinProperties:
		return pointer, field + " must have at least " + strconv.Itoa(k.Want) + " fields"
	case *kind.MaxProperties:
		return pointer, field + " must have at most " + strconv.Itoa(k.Want) + " fields"
	case *kind.UniqueItems:
		return pointer, field + " must not repeat items"
	case *kind.FalseSchema:
		return pointer, field + " is not allowed"
	}
	kw := l.keyword
	if i := strings.LastIndexByte(kw, '/'); i >= 0 {
		kw = kw[i+1:]
	}
	return pointer, field + " does not match the schema (" + kw + ")"
}

// schemaName is a required name as the client may see it: native names
// as they are, data names through the data label (an operator's schema
// names are not payload, but keep data messages uniform).
func schemaName(d describer, name string) string {
	if _, ok := d.(dataText); ok {
		return "data." + sanitizeKey(name)
	}
	return sanitizeKey(name)
}

// pointerOf encodes tokens as a JSON pointer.
func pointerOf(tokens []string) string {
	var sb strings.Builder
	for _, t := range tokens {
		sb.WriteByte('/')
		sb.WriteString(escapeToken(t))
	}
	return sb.String()
}

// safePointer encodes an instance location, each client-chosen token
// sanitized (see sanitizeKey).
func safePointer(tokens []string) string {
	var sb strings.Builder
	for _, t := range tokens {
		sb.WriteByte('/')
		sb.WriteString(sanitizeKey(escapeToken(t)))
	}
	return sb.String()
}

func joinPointer(base, key string) string {
	return base + "/" + sanitizeKey(escapeToken(key))
}

func escapeToken(t string) string {
	if !strings.ContainsAny(t, "~/") {
		return t
	}
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(t)
}

// sanitizeKey keeps at most maxPointerKey bytes of k, printable ASCII only
// (anything else becomes '?'), so a pointer prints safely in any log.
func sanitizeKey(k string) string {
	if len(k) > maxPointerKey {
		k = k[:maxPointerKey]
	}
	clean := true
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] >= 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return k
	}
	b := []byte(k)
	for i, c := range b {
		if c < 0x20 || c >= 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}
