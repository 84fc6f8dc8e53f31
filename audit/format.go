package audit

import (
	"bytes"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/portcullis-gw/portcullis/audit/chain"
	"github.com/portcullis-gw/portcullis/audit/index"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Formatting is the costly part of writing an event (logrus' JSONFormatter
// is ~10 µs for a full event here), so it runs on formatter goroutines, in
// parallel, and only sealing is sequential. A line's seq and prev are only
// known when it is sealed, so a formatter produces a template: the
// formatter's output with seq 0 and prev 64 zeros, which sealing replaces
// by the real values. Keys are sorted by name and these values have no
// effect on the rest of the output, so the sealed line is byte for byte
// what logrus would have produced with the real values.

var (
	seqPlaceholder  = []byte(`"` + FieldSeq + `":0`)
	prevKey         = []byte(`"` + FieldPrev + `":"`)
	prevPlaceholder = []byte(`"` + FieldPrev + `":"` + string(chain.ZeroMAC) + `"`)
)

// lineFormatter turns events into templates. It is not safe for concurrent
// use: each formatter goroutine has its own.
type lineFormatter struct {
	node string
	boot string
}

func newLineFormatter(node, boot string) *lineFormatter {
	return &lineFormatter{node: Cap(node), boot: boot}
}

// template appends to dst the template of e: the formatter's output without
// its closing brace and newline, with seq 0 and prev 64 zeros. It writes
// the bytes logrus' JSONFormatter would write for the same entry (keys in
// sorted order, encoding/json's string escaping without HTML escaping, the
// entry's level that of e's severity) — TestTemplateMatchesLogrus and
// FuzzTemplateMatchesLogrus hold it to that — but without building a map
// and reflecting over it, which cost ~10 µs of the ~11 µs per event.
func (lf *lineFormatter) template(dst []byte, e *Event) []byte {
	key := func(dst []byte, k string) []byte {
		dst = append(dst, ',', '"')
		dst = append(dst, k...)
		return append(dst, '"', ':')
	}
	str := func(dst []byte, k, v string) []byte {
		if v == "" {
			return dst
		}
		return AppendJSONString(key(dst, k), Cap(v))
	}
	num := func(dst []byte, k string, v int64) []byte {
		return strconv.AppendInt(key(dst, k), v, 10)
	}
	start := len(dst)
	// Keys in byte order, as encoding/json sorts a map's keys.
	dst = str(dst, FieldActor, e.Actor)
	dst = str(dst, FieldBoot, lf.boot)
	if e.Code != 0 {
		dst = num(dst, FieldCode, int64(e.Code))
	}
	if e.Conn != 0 {
		dst = strconv.AppendUint(key(dst, FieldConn), e.Conn, 10)
	}
	if e.Count != 0 {
		dst = num(dst, FieldCount, e.Count)
	}
	if e.CountedPrefix.IsValid() {
		dst = appendText(dst, FieldCountedPrefix, e.CountedPrefix)
	}
	dst = str(dst, FieldDetail, e.Detail)
	if e.Event == KindConnClose || e.DurationMS != 0 {
		dst = num(dst, FieldDurationMS, e.DurationMS)
	}
	dst = AppendJSONString(key(dst, FieldEvent), e.Event.String())
	if !e.First.IsZero() {
		dst = str(dst, FieldFirst, e.First.UTC().Format(time.RFC3339Nano))
	}
	if e.IP.IsValid() {
		dst = appendText(dst, FieldIP, e.IP)
	}
	if !e.Last.IsZero() {
		dst = str(dst, FieldLast, e.Last.UTC().Format(time.RFC3339Nano))
	}
	dst = append(key(dst, FieldLevel), '"')
	dst = append(dst, e.Severity.Level()...)
	dst = append(dst, '"')
	dst = str(dst, FieldNode, lf.node)
	if e.PeerIP.IsValid() {
		dst = appendText(dst, FieldPeerIP, e.PeerIP)
	}
	dst = append(key(dst, FieldPrev), '"')
	dst = append(dst, chain.ZeroMAC...)
	dst = append(dst, '"')
	dst = str(dst, FieldProto, e.Proto)
	if e.Reason != reason.None {
		dst = str(dst, FieldReason, e.Reason.String())
	}
	if e.RedeemedIP.IsValid() {
		dst = num(dst, FieldRedeemedAgoS, e.RedeemedAgoS)
		dst = appendText(dst, FieldRedeemedIP, e.RedeemedIP)
	}
	dst = append(key(dst, FieldSeq), '0')
	dst = AppendJSONString(key(dst, FieldSeverity), e.Severity.String())
	dst = str(dst, FieldStage, string(e.Stage))
	if e.Strikes != 0 {
		dst = num(dst, FieldStrikes, e.Strikes)
	}
	dst = append(key(dst, FieldTime), '"')
	dst = e.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, '"')
	dst = str(dst, FieldTokenFP, e.TokenFP)
	dst = str(dst, FieldTopic, e.Topic)
	dst = str(dst, FieldUserID, e.UserID)
	dst[start] = '{' // the first member's leading comma
	return dst
}

// textAppender is netip.Addr and netip.Prefix.
type textAppender interface {
	AppendTo(b []byte) []byte
}

// appendText appends the member ,"k":"<v's text>" as str would for
// v.String(), without building the string: an address is plain ASCII, and
// only a zone (fe80::1%eth0) could hold a byte that needs escaping or make
// it longer than MaxFieldLen.
func appendText[T textAppender](dst []byte, k string, v T) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, k...)
	dst = append(dst, '"', ':', '"')
	start := len(dst)
	dst = v.AppendTo(dst)
	if len(dst)-start <= MaxFieldLen && isSafe(dst[start:]) {
		return append(dst, '"')
	}
	s := string(dst[start:])
	return AppendJSONString(dst[:start-1], Cap(s))
}

// isSafe reports whether b needs no JSON escaping: printable ASCII without
// '"' or '\'.
func isSafe(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// AppendJSONString appends s as a JSON string exactly as encoding/json
// does with HTML escaping off (the audit line format; the gateway's wire
// encoders use it too): \" \\ \b \f \n \r \t, other control
// characters as \u00xx, invalid UTF-8 as \ufffd, U+2028 and U+2029
// escaped (so a line can never be split by a JavaScript reader).
func AppendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// fill appends to dst the template t with its seq and prev set; t's prev
// placeholder is overwritten.
func fill(dst, t []byte, seq uint64, prev []byte) []byte {
	if i := structural(t, prevKey); i >= 0 && bytes.HasPrefix(t[i:], prevPlaceholder) {
		copy(t[i+len(prevKey):], prev)
	}
	i := structural(t, seqPlaceholder)
	if i < 0 {
		return append(dst, t...)
	}
	dst = append(dst, t[:i+len(`"seq":`)]...)
	dst = strconv.AppendUint(dst, seq, 10)
	return append(dst, t[i+len(seqPlaceholder):]...)
}

// structural finds key (starting with a '"') where it starts a member: a
// raw '"' never occurs inside a JSON string, so after ',' or '{' it is a key.
func structural(b, key []byte) int {
	off := 0
	for {
		i := bytes.Index(b[off:], key)
		if i < 0 {
			return -1
		}
		i += off
		if i > 0 && (b[i-1] == ',' || b[i-1] == '{') {
			// A number value must end here: "seq":0 not "seq":01.
			if end := i + len(key); key[len(key)-1] != '"' && end < len(b) && b[end] >= '0' && b[end] <= '9' {
				off = i + 1
				continue
			}
			return i
		}
		off = i + 1
	}
}

// batch is a run of events formatted together.
type batch struct {
	evs  []Event
	slab []byte         // templates, back to back
	ends []int          // end of each template in slab
	hs   []index.Hashes // summary hashes of each event's values
}

const maxBatch = 256

// smallBatch is the size up to which a batch is taken as a sign that the
// backlog is gone; trimAfter is how long only such batches must come
// before the writer lets go of the arrays a burst grew (batch.reset,
// Queue.Trim). A burst drains the queue many times a second, each time
// with a small batch among the large ones: dropping the arrays on the
// first small batch made a mass reconnect allocate them again and again
// (two thirds of the gateway's allocations, and the collections they
// cost, while 15,000 clients reconnected).
const (
	smallBatch = 16
	trimAfter  = time.Second
)

// reset empties b for reuse, releasing the strings its events hold; with
// trim it also lets go of its arrays, so that a quiet gateway keeps small
// batches.
func (b *batch) reset(trim bool) {
	clear(b.evs)
	if trim && cap(b.evs) > 4*smallBatch {
		*b = batch{}
		return
	}
	b.evs, b.slab, b.ends, b.hs = b.evs[:0], b.slab[:0], b.ends[:0], b.hs[:0]
}

// formatWorker formats batches in the order they arrive.
type formatWorker struct {
	in  chan *batch
	out chan *batch
}

func (fw *formatWorker) run(lf *lineFormatter) {
	defer close(fw.out)
	for b := range fw.in {
		b.slab, b.ends = b.slab[:0], b.ends[:0]
		b.hs = slices.Grow(b.hs[:0], len(b.evs))[:len(b.evs)]
		for i := range b.evs {
			b.slab = lf.template(b.slab, &b.evs[i])
			b.ends = append(b.ends, len(b.slab))
			hashesOf(&b.hs[i], &b.evs[i])
		}
		fw.out <- b
	}
}
