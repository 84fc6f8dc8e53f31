package query

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/portcullis-gw/portcullis/audit"
)

// Table writes records as an aligned table for people. Column widths come
// from the header and the rows buffered before the first Flush (up to
// tableBlock rows); later rows widen a column only when they must. Cells are
// cut to a column's cap with "…", and control, C1 and bidi-override
// characters in attacker-supplied values are shown escaped (\x1b), so a
// trail can never drive the reader's terminal. A NODE column, after TIME,
// is shown only when WithNode asks for it. Not safe for concurrent use.
type Table struct {
	w      io.Writer
	color  bool
	node   bool
	rows   [][numCols]string
	widths [numCols]int
	sized  bool
	err    error
}

const (
	colTime = iota
	colNode
	colSeverity
	colEvent
	colIP
	colUser
	colTopic
	colReason
	colDetail
	numCols
)

var tableHeader = [numCols]string{"TIME", "NODE", "SEVERITY", "EVENT", "IP", "USER", "TOPIC", "REASON", "DETAIL"}

// colCap is the widest a column gets, in characters; the last column is not
// padded.
var colCap = [numCols]int{24, 24, 8, 24, 39, 24, 32, 24, 160}

// tableBlock is how many rows are buffered to size the columns.
const tableBlock = 512

// tableTime is how times are shown: UTC, milliseconds.
const tableTime = "2006-01-02T15:04:05.000Z"

// NewTable returns a Table writing to w; color adds ANSI colours by
// severity (only for a terminal).
func NewTable(w io.Writer, color bool) *Table { return &Table{w: w, color: color} }

// WithNode adds the NODE column (the line's node) to t, for output that
// merges the trails of several nodes, and returns t. Call it before the
// first Add.
func (t *Table) WithNode() *Table {
	t.node = true
	return t
}

// Add appends r (decoded with FieldsTable). It copies what it keeps.
func (t *Table) Add(r *Record) {
	var row [numCols]string
	if !r.Time.IsZero() {
		row[colTime] = r.Time.UTC().Format(tableTime)
	}
	row[colNode] = string(r.Node)
	row[colSeverity] = string(r.Severity)
	if len(r.Severity) == 0 {
		row[colSeverity] = audit.Info.String()
	}
	row[colEvent] = string(r.Event)
	row[colIP] = string(r.IP)
	if len(r.PeerIP) > 0 && string(r.PeerIP) != string(r.IP) {
		if row[colIP] == "" {
			row[colIP] = "peer " + string(r.PeerIP)
		} else {
			row[colIP] += " via " + string(r.PeerIP)
		}
	}
	row[colUser] = string(r.User)
	row[colTopic] = string(r.Topic)
	row[colReason] = string(r.Reason)
	detail := string(r.Detail)
	if r.Count > 0 {
		sum := "×" + strconv.FormatInt(r.Count, 10)
		if !r.First.IsZero() && !r.Last.IsZero() {
			sum += " " + r.First.UTC().Format("15:04:05") + "–" + r.Last.UTC().Format("15:04:05")
		}
		detail = strings.TrimSpace(sum + " " + detail)
	}
	row[colDetail] = detail
	for i := range row {
		row[i] = cell(row[i], colCap[i])
	}
	t.rows = append(t.rows, row)
	if len(t.rows) >= tableBlock {
		t.Flush()
	}
}

// Flush writes the buffered rows (with the header before the first row)
// and returns the first write error. A table without rows writes nothing.
func (t *Table) Flush() error {
	if t.err != nil {
		return t.err
	}
	if len(t.rows) == 0 {
		return nil
	}
	if !t.sized {
		t.sized = true
		for i := range t.widths {
			t.widths[i] = utf8.RuneCountInString(tableHeader[i])
		}
		t.widen()
		t.writeRow(tableHeader, false)
	} else {
		t.widen()
	}
	for _, r := range t.rows {
		t.writeRow(r, t.color)
	}
	t.rows = t.rows[:0]
	return t.err
}

func (t *Table) widen() {
	for _, r := range t.rows {
		for i, c := range r {
			if n := utf8.RuneCountInString(c); n > t.widths[i] {
				t.widths[i] = n
			}
		}
	}
}

var sevColor = map[string]string{"notice": "\x1b[36m", "warning": "\x1b[33m", "critical": "\x1b[1;31m"}

func (t *Table) writeRow(r [numCols]string, color bool) {
	var b strings.Builder
	for i, c := range r {
		if i == colNode && !t.node {
			continue
		}
		if c == "" {
			c = "-"
		}
		last := i == numCols-1
		pad := t.widths[i] - utf8.RuneCountInString(c)
		if code := sevColor[c]; color && i == colSeverity && code != "" {
			c = code + c + "\x1b[0m"
		}
		b.WriteString(c)
		if !last {
			b.WriteString(strings.Repeat(" ", max(pad, 0)+2))
		}
	}
	b.WriteByte('\n')
	if t.err == nil {
		_, t.err = io.WriteString(t.w, b.String())
	}
}

// cell makes v safe for a terminal and cuts it to at most limit characters.
func cell(v string, limit int) string {
	var b strings.Builder
	n := 0
	for i, r := range v {
		if n == limit-1 && utf8.RuneCountInString(v[i:]) > 1 {
			b.WriteString("…")
			break
		}
		switch {
		case r == utf8.RuneError:
			b.WriteString(`\ufffd`)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			fmt.Fprintf(&b, `\x%02x`, r)
		case r == 0x200e || r == 0x200f || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		n++
	}
	return b.String()
}

// WriteCounts writes CountBy rows as an aligned two-column table.
func WriteCounts(w io.Writer, key Key, rows []Count) error {
	width := len("COUNT")
	for _, r := range rows {
		width = max(width, len(strconv.FormatInt(r.N, 10)))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%*s  %s\n", width, "COUNT", strings.ToUpper(key.String()))
	for _, r := range rows {
		v := cell(r.Value, 200)
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(&b, "%*d  %s\n", width, r.N, v)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
