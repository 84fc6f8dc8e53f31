package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Where names the place in the file that set key, as FILE:LINE:COL, or,
// when the file did not set key itself, the place of its nearest
// enclosing key that it did set (topics[2].data_schema falls back to
// topics[2], then topics). A key the file never touched is "FILE
// (default)". Checks made after loading (block list files, token keys,
// topic patterns, alert rules) prefix their errors with it.
func (c *Config) Where(key string) string {
	for k := key; k != ""; k = parentKey(k) {
		for _, kp := range c.keys {
			if kp.Key == k {
				return kp.Pos.String()
			}
		}
	}
	if c.file == "" {
		return "(defaults)"
	}
	return c.file + " (default)"
}

// parentKey strips the last element of a dotted key: "a.b[1].c" → "a.b[1]"
// → "a.b" → "a" → "".
func parentKey(k string) string {
	i := strings.LastIndexAny(k, ".[")
	if i < 0 {
		return ""
	}
	return k[:i]
}

// syntax parses b into a YAML node tree. Every error names the file, line
// and column: bytes that are not UTF-8 or are control characters are found
// here, before the YAML parser (which reports them without a place); a
// second document in the file is refused rather than ignored.
func syntax(file string, b []byte) (*yaml.Node, error) {
	if e := encodingError(file, b); e != "" {
		return nil, Errors{e}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &doc, nil // an empty file: every key keeps its default
		}
		return nil, Errors{syntaxError(file, b, err)}
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, Errors{syntaxError(file, b, err)}
	default:
		if len(next.Content) == 0 || next.Content[0].Tag == "!!null" {
			break // a trailing "---" without content
		}
		return nil, Errors{fmt.Sprintf("%s:%d:1: a second YAML document: one file holds one config (remove this \"---\" line)",
			file, separatorLine(b, next.Content[0].Line))}
	}
	return &doc, nil
}

// separatorLine is the line of the last "---" before line (1-based), or
// line itself.
func separatorLine(b []byte, line int) int {
	sep := line
	for i, l := range bytes.Split(b, []byte("\n")) {
		if i+1 >= line {
			break
		}
		if bytes.HasPrefix(l, []byte("---")) && len(bytes.TrimSpace(l[3:])) == 0 || bytes.HasPrefix(l, []byte("--- ")) {
			sep = i + 1
		}
	}
	return sep
}

// encodingError finds the first byte that is not UTF-8 or is a control
// character other than tab, newline and carriage return.
func encodingError(file string, b []byte) string {
	line, col := 1, 1
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			return fmt.Sprintf("%s:%d:%d: the file is not UTF-8 (byte 0x%02x)", file, line, col, b[i])
		case r == '\n':
			line, col = line+1, 0
		case r != '\t' && r != '\r' && r != '\uFEFF' && unicode.IsControl(r):
			return fmt.Sprintf("%s:%d:%d: control character %U is not allowed in YAML", file, line, col, r)
		}
		i += n
		col++
	}
	return ""
}

// yamlLine is how the YAML parser places a syntax error. It has no column,
// and for the parser's own errors (as opposed to the scanner's) the line
// is counted from 0 and names where the enclosing block or flow collection
// starts.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns a YAML parse error into FILE:LINE:COL: message. The
// column is that of the first character on the line, since the parser
// does not report one.
func syntaxError(file string, b []byte, err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 1 // the parser omits the line when it is the first
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
		if strings.HasPrefix(msg, "did not find expected ") && !strings.HasSuffix(msg, "line break") {
			line++ // a parser error: counted from 0
		}
	} else if name, ok := strings.CutPrefix(msg, "unknown anchor '"); ok {
		// An alias to a missing anchor: the parser says which, not where.
		name, _, _ = strings.Cut(name, "'")
		if i := bytes.Index(b, []byte("*"+name)); i >= 0 {
			line = bytes.Count(b[:i], []byte("\n")) + 1
			return fmt.Sprintf("%s:%d:%d: YAML syntax: %s", file, line, i-bytes.LastIndexByte(b[:i], '\n'), msg)
		}
	}
	return fmt.Sprintf("%s:%d:%d: YAML syntax: %s", file, line, firstColumn(b, line), msg)
}

// firstColumn is the column of the first character on line (1-based) that
// is not a space, or 1.
func firstColumn(b []byte, line int) int {
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return 1
		}
		b = b[i+1:]
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return len(b) - len(bytes.TrimLeft(b, " ")) + 1
}

// duplicates reports every key that one mapping sets twice, at any depth.
// YAML keeps the last silently: a second `topics:` would replace the first
// list without a word.
func (d *decoder) duplicates(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.MappingNode:
		first := make(map[string]*yaml.Node, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := k.Value
			if path != "" {
				key = path + "." + k.Value
			}
			if f, dup := first[k.Value]; dup {
				if d.dup == nil {
					d.dup = make(map[*yaml.Node]bool)
				}
				d.dup[n] = true
				d.errf(k, key, "duplicate key (first set at %s:%d:%d): YAML would keep only the last; merge them into one",
					d.file, f.Line, f.Column)
			} else {
				first[k.Value] = k
			}
			d.duplicates(v, key)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			d.duplicates(item, fmt.Sprintf("%s[%d]", path, i))
		}
	}
}
