package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// DataSchema is an operator's JSON Schema for the data clients publish to
// the topics of one rule. The zero DataSchema holds no schema and refuses
// everything with reason.Internal, so a forgotten compile denies rather than
// allows. A DataSchema is immutable and safe for simultaneous use by
// multiple goroutines.
type DataSchema struct {
	sch    *jsonschema.Schema
	limits Limits
}

// CompileDataSchema compiles the schema file at path. A file without
// "$schema" is read as draft 2020-12; "format" is asserted (an operator who
// writes "format": "email" means it). A "$ref" may name other local files
// (relative to path); nothing is ever fetched over the network. Patterns
// use Go's RE2 engine, whose matching time is linear in the input.
func (v *Validator) CompileDataSchema(path string) (DataSchema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(jsonschema.SchemeURLLoader{"file": jsonschema.FileLoader{}})
	sch, err := c.Compile(path)
	if err != nil {
		return DataSchema{}, fmt.Errorf("compile data schema %s: %w", path, err)
	}
	return DataSchema{sch: sch, limits: v.limits}, nil
}

// Valid reports whether d holds a compiled schema.
func (d DataSchema) Valid() bool { return d.sch != nil }

// Check validates published data against the schema. Pointers in the
// Violation start at "/data"; the client text says which rule failed,
// never which key or value.
func (d DataSchema) Check(data json.RawMessage) *Violation {
	if d.sch == nil {
		return &Violation{Reason: reason.Internal, Pointer: "/data", Message: "no schema for this topic's data"}
	}
	if len(data) > d.limits.MaxBytes {
		return &Violation{Reason: reason.MessageTooLarge, Pointer: "/data",
			Message: "data larger than " + strconv.Itoa(d.limits.MaxBytes) + " bytes"}
	}
	if !DepthWithin(data, d.limits.MaxDepth) {
		return &Violation{Reason: reason.TooDeep, Pointer: "/data",
			Message: "data nesting deeper than " + strconv.Itoa(d.limits.MaxDepth) + " levels"}
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return &Violation{Reason: reason.BadJSON, Pointer: "/data", Message: "data is not valid JSON"}
	}
	if loc, ok := findHugeNumber(doc, nil); ok {
		return &Violation{Reason: reason.SchemaViolation, Pointer: "/data" + safePointer(loc),
			Message: "data holds a number with too many digits or too large an exponent"}
	}
	if err := d.sch.Validate(doc); err != nil {
		vio := violationFrom(err, dataText{})
		vio.Pointer = "/data" + vio.Pointer
		return vio
	}
	return nil
}

// findHugeNumber returns the location of the first number in v beyond the
// number caps (see maxNumberLen). Maps are visited in sorted key order so
// the location reported does not depend on map order.
func findHugeNumber(v any, loc []string) ([]string, bool) {
	switch x := v.(type) {
	case json.Number:
		if !numberWithinCaps(x) {
			return loc, true
		}
	case []any:
		for i, e := range x {
			if l, ok := findHugeNumber(e, append(loc, strconv.Itoa(i))); ok {
				return l, true
			}
		}
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if l, ok := findHugeNumber(x[k], append(loc, k)); ok {
				return l, true
			}
		}
	}
	return nil, false
}
