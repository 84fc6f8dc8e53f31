package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/schema"
)

// MaxBodyDepth bounds the nesting of arrays and objects in an admin request
// body. It is generous (the depth of published data is capped lower, see
// MaxDataDepth) and keeps the strict walk over the body shallow.
const MaxBodyDepth = 64

// MaxDataDepth is the deepest data POST /v1/publish accepts, in levels of
// arrays and objects ("{}" is one): the depth a client's published data
// can have, its message envelope taking one of schema.DefaultMaxDepth.
const MaxDataDepth = schema.DefaultMaxDepth - 1

// maxKeyInMessage caps a key quoted back in an error.
const maxKeyInMessage = 64

// Decode reads r's body (at most MaxBodyBytes) into v, a pointer to a
// struct whose fields name the keys with json tags. See DecodeBytes for
// what it refuses. Every error is meant for the client: it names the key
// or the byte at fault.
func Decode(r *http.Request, v any) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("body over %d bytes", MaxBodyBytes)
		}
		return fmt.Errorf("read body: %w", err)
	}
	return DecodeBytes(body, v)
}

// DecodeBytes decodes the JSON object in body into v, a pointer to a
// struct, strictly. encoding/json alone matches keys case-insensitively,
// lets a later duplicate win and replaces invalid UTF-8 silently, so that
// {"userId":"a","userid":"b"} means "b". DecodeBytes refuses instead:
//   - a body that is not valid UTF-8, or not exactly one JSON object;
//   - nesting deeper than MaxBodyDepth;
//   - at any depth, a key given twice in one object (inside free-form
//     values such as published data too);
//   - a key that is not exactly (case included) a json tag of the struct
//     it fills, or of a nested struct or struct slice element.
//
// Values the struct leaves free-form (json.RawMessage, any, maps, types
// with their own UnmarshalJSON) are checked for UTF-8, depth and duplicate
// keys only.
func DecodeBytes(body []byte, v any) error {
	if err := checkJSONText(body); err != nil {
		return err
	}
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer {
		return fmt.Errorf("admin: decode into %T: not a pointer", v)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("body must be one JSON object")
	}
	if err := walkObject(dec, shapeOf(t.Elem()), ""); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("invalid JSON body: data after the object")
	}
	strict := json.NewDecoder(bytes.NewReader(body))
	strict.DisallowUnknownFields()
	if err := strict.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	return nil
}

// CheckBody checks a JSON body whose shape the caller decodes itself: valid
// UTF-8, exactly one JSON value, nesting within MaxBodyDepth, no key twice
// in one object. An empty (or all-whitespace) body passes.
func CheckBody(body []byte) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := checkJSONText(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := walkValue(dec, nil, ""); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("invalid JSON body: data after the value")
	}
	return nil
}

// checkJSONText applies the checks that need no parse: UTF-8 and depth.
func checkJSONText(body []byte) error {
	if i := invalidUTF8At(body); i >= 0 {
		return fmt.Errorf("body is not valid UTF-8 JSON: byte 0x%02x at offset %d", body[i], i)
	}
	if !schema.DepthWithin(body, MaxBodyDepth) {
		return fmt.Errorf("body nests deeper than %d levels of arrays and objects", MaxBodyDepth)
	}
	return nil
}

// invalidUTF8At returns the offset of the first byte of b that is not part
// of valid UTF-8, or -1.
func invalidUTF8At(b []byte) int {
	if utf8.Valid(b) {
		return -1
	}
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

// shape is what the strict walk knows of a Go type: the exact keys of a
// struct, the element of a slice, or nothing (a free-form value).
type shape struct {
	fields map[string]*shape // struct: json key → its shape
	elem   *shape            // slice or array of a known shape
	object bool              // a struct: keys are checked against fields
}

var (
	shapesMu sync.Mutex
	shapes   = map[reflect.Type]*shape{} // guarded by shapesMu
)

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// shapeOf returns t's shape, nil for a free-form value.
func shapeOf(t reflect.Type) *shape {
	shapesMu.Lock()
	defer shapesMu.Unlock()
	return shapeLocked(t)
}

func shapeLocked(t reflect.Type) *shape {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	if s, ok := shapes[t]; ok {
		return s
	}
	switch t.Kind() {
	case reflect.Struct:
		s := &shape{fields: map[string]*shape{}, object: true}
		shapes[t] = s // before the fields: a recursive type finds itself
		addFields(s, t)
		return s
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return nil // []byte: a base64 string
		}
		elem := shapeLocked(t.Elem())
		if elem == nil {
			return nil
		}
		s := &shape{elem: elem}
		shapes[t] = s
		return s
	}
	return nil
}

// addFields adds t's json keys to s, those of untagged embedded structs
// included, as encoding/json sees them.
func addFields(s *shape, t reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				addFields(s, ft)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		s.fields[name] = shapeLocked(f.Type)
	}
}

// walkValue reads one value from dec, checking it against sh (nil: free
// form). path names the value in errors.
func walkValue(dec *json.Decoder, sh *shape, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	switch tok {
	case json.Delim('{'):
		return walkObject(dec, sh, path)
	case json.Delim('['):
		var elem *shape
		if sh != nil {
			elem = sh.elem
		}
		for i := 0; dec.More(); i++ {
			if err := walkValue(dec, elem, path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return syntaxError(err)
		}
	}
	return nil
}

// walkObject reads the members of an object whose '{' dec has consumed,
// and its '}'.
func walkObject(dec *json.Decoder, sh *shape, path string) error {
	var seen map[string]struct{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return syntaxError(err)
		}
		key, _ := tok.(string)
		at := key
		if path != "" {
			at = path + "." + key
		}
		if _, dup := seen[key]; dup {
			return fmt.Errorf("duplicate key %s", quoteKey(at))
		}
		if seen == nil {
			seen = make(map[string]struct{})
		}
		seen[key] = struct{}{}
		var child *shape
		if sh != nil && sh.object {
			s, ok := sh.fields[key]
			if !ok {
				return unknownKey(sh, key, at)
			}
			child = s
		}
		if err := walkValue(dec, child, at); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return syntaxError(err)
	}
	return nil
}

// unknownKey names a key the struct has no field for, and the field it
// matches but for case, if any.
func unknownKey(sh *shape, key, at string) error {
	for name := range sh.fields {
		if strings.EqualFold(name, key) {
			return fmt.Errorf("unknown key %s: keys are case-sensitive, did you mean %s?", quoteKey(at), strconv.Quote(name))
		}
	}
	return fmt.Errorf("unknown key %s", quoteKey(at))
}

func quoteKey(k string) string {
	if len(k) > maxKeyInMessage {
		cut := maxKeyInMessage
		for cut > 0 && !utf8.RuneStart(k[cut]) {
			cut--
		}
		k = k[:cut] + "…"
	}
	return strconv.Quote(k)
}

func syntaxError(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("invalid JSON body: %w", err)
}

// checkData checks published data before it is relayed in text frames:
// invalid UTF-8 would make every browser subscribed drop its connection,
// and it nests no deeper than a client's data may (MaxDataDepth).
func checkData(data json.RawMessage) error {
	if !utf8.Valid(data) {
		return errors.New("data is not valid UTF-8 JSON")
	}
	if !schema.DepthWithin(data, MaxDataDepth) {
		return fmt.Errorf("data nests deeper than %d levels of arrays and objects", MaxDataDepth)
	}
	return nil
}

// checkedBody runs CheckBody on the body of a request to h, a route added
// through Options.Routes that decodes its body itself, and refuses (400,
// audited) what CheckBody refuses. h reads the same bytes.
func (a *API) checkedBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			msg := "read body: " + err.Error()
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				msg = fmt.Sprintf("body over %d bytes", MaxBodyBytes)
			}
			a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, msg)
			return
		}
		if err := CheckBody(body); err != nil {
			a.refuse(w, r, http.StatusBadRequest, reason.BadRequest, err.Error())
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	})
}
