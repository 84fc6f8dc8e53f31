// Package chain defines the on-disk format of the audit trail that the
// writer (package audit) produces and the verifier (package audit/verify)
// checks: how a line is sealed with its HMAC-SHA256 mac, how the files of a
// trail are named and found, the keys, and the signed checkpoints.
//
// A sealed line is L0[:len(L0)-1] + `,"mac":"<64 hex>"}` + "\n", where L0 is
// the logrus JSON formatter's output without its newline and
// mac = HMAC-SHA256(key, prev ‖ L0), prev being the 64 hex digits of the
// previous line's mac (64 zeros for the very first line of a trail). The
// suffix has a fixed length, so L0 is recovered without re-serializing JSON.
//
// chain imports nothing from the rest of Portcullis.
package chain

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// MACHexLen is the length of a mac in hex digits.
const MACHexLen = 64

// Keys of a line that sealing and verifying read; package audit names the
// rest of a line's keys beside these.
const (
	FieldSeq    = "seq"
	FieldPrev   = "prev"
	FieldMAC    = "mac"
	FieldEvent  = "event"
	FieldReason = "reason"
	FieldDetail = "detail"
	FieldCount  = "count"
	FieldTime   = "time"
	FieldBoot   = "boot"
)

const macKey = `,"` + FieldMAC + `":"`

// SuffixLen is the length of the spliced `,"mac":"<hex>"}` suffix.
const SuffixLen = len(macKey) + MACHexLen + len(`"}`)

// ZeroMAC is the prev of the very first line of a trail.
var ZeroMAC = bytes.Repeat([]byte{'0'}, MACHexLen)

// File names in an audit directory.
const (
	ActiveName      = "audit.log"       // the file being written
	CheckpointsName = "checkpoints.log" // signed checkpoints, JSON lines
)

// Events the writer itself writes into the trail.
const (
	EventHeader    = "audit_header"    // first line of a file, and on every (re)start
	EventRetention = "audit_retention" // a rotated file is about to be deleted (detail: its name)
	EventDropped   = "audit_dropped"   // count: events that could not be written
)

// Reasons of an EventHeader line.
const (
	HeaderNewTrail = "new_trail" // the first line of a trail: prev is ZeroMAC
	HeaderRotated  = "rotated"   // a new file; detail names the previous file
	HeaderResumed  = "resumed"   // a writer restarted and appends to the existing file
	HeaderRepaired = "repaired"  // a writer restarted after a crash left an incomplete tail; count = its bytes incl. newline
)

// Sealer computes line macs. It is not safe for concurrent use.
type Sealer struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// NewSealer returns a Sealer keyed with key.
func NewSealer(key []byte) *Sealer {
	return &Sealer{h: hmac.New(sha256.New, key)}
}

// closingBrace ends L0; a package variable, so that writing it to the
// hash allocates nothing per line.
var closingBrace = []byte{'}'}

// MAC appends to dst the hex mac of the line whose L0 is body+"}" (body is L0
// without its closing brace) following a line whose mac is prev (hex).
func (s *Sealer) MAC(dst, prev, body []byte) []byte {
	s.h.Reset()
	s.h.Write(prev)
	s.h.Write(body)
	s.h.Write(closingBrace)
	sum := s.h.Sum(s.sum[:0])
	return hex.AppendEncode(dst, sum)
}

// Seal appends to dst the written form of the line: body (L0 without its
// closing brace), the mac and a newline.
func Seal(dst, body, mac []byte) []byte {
	dst = append(dst, body...)
	dst = append(dst, macKey...)
	dst = append(dst, mac...)
	return append(dst, '"', '}', '\n')
}

// Split splits a written line (without its newline) into body (L0 without
// its closing brace, borrowed from line) and mac (hex, borrowed from line).
// ok is false when the line does not end in a well-formed mac suffix.
func Split(line []byte) (body, mac []byte, ok bool) {
	n := len(line)
	if n < SuffixLen+2 || line[0] != '{' || line[n-1] != '}' || line[n-2] != '"' {
		return nil, nil, false
	}
	s := n - SuffixLen
	if string(line[s:s+len(macKey)]) != macKey {
		return nil, nil, false
	}
	mac = line[s+len(macKey) : n-2]
	for _, c := range mac {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return nil, nil, false
		}
	}
	return line[:s], mac, true
}

// Keys that Field looks up, precomputed.
var (
	KeySeq    = []byte(`"` + FieldSeq + `":`)
	KeyPrev   = []byte(`"` + FieldPrev + `":`)
	KeyEvent  = []byte(`"` + FieldEvent + `":`)
	KeyReason = []byte(`"` + FieldReason + `":`)
	KeyDetail = []byte(`"` + FieldDetail + `":`)
	KeyCount  = []byte(`"` + FieldCount + `":`)
	KeyTime   = []byte(`"` + FieldTime + `":`)
	KeyBoot   = []byte(`"` + FieldBoot + `":`)
)

// Field returns the raw value of key (one of the Key… patterns) in body:
// the content of a string without its quotes (still JSON-escaped), or the
// literal of a number. The result is borrowed from body. A raw '"' never
// occurs inside a JSON string, so a match is always a real key.
func Field(body, key []byte) ([]byte, bool) {
	off := 0
	for {
		i := bytes.Index(body[off:], key)
		if i < 0 {
			return nil, false
		}
		i += off
		if i > 0 && (body[i-1] == ',' || body[i-1] == '{') {
			v := body[i+len(key):]
			if len(v) > 0 && v[0] == '"' {
				for j := 1; j < len(v); j++ {
					switch v[j] {
					case '\\':
						j++
					case '"':
						return v[1:j], true
					}
				}
				return nil, false
			}
			j := 0
			for j < len(v) && (v[j] == '-' || v[j] >= '0' && v[j] <= '9') {
				j++
			}
			return v[:j], j > 0
		}
		off = i + 1
	}
}

// Uint parses a Field value as an unsigned integer.
func Uint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// PreviousDetail is the detail of a header line naming the previous file.
func PreviousDetail(name string, mac []byte) string {
	return "previous file " + name + ", last mac " + string(mac)
}

// PreviousFile returns the file named by a header's detail.
func PreviousFile(detail []byte) (string, bool) {
	const p = "previous file "
	i := bytes.Index(detail, []byte(p))
	if i < 0 {
		return "", false
	}
	rest := detail[i+len(p):]
	if j := bytes.IndexByte(rest, ','); j >= 0 {
		rest = rest[:j]
	}
	return string(rest), len(rest) > 0
}

const nameTime = "20060102T150405Z"

// RotatedName is the name of a rotated file that started at start with line firstSeq.
func RotatedName(start time.Time, firstSeq uint64) string {
	return "audit-" + start.UTC().Format(nameTime) + "-" + strconv.FormatUint(firstSeq, 10) + ".log"
}

// ParseRotatedName parses a rotated file's name (with or without ".gz").
func ParseRotatedName(name string) (start time.Time, firstSeq uint64, gz, ok bool) {
	if strings.HasSuffix(name, ".gz") {
		gz = true
		name = strings.TrimSuffix(name, ".gz")
	}
	if !strings.HasPrefix(name, "audit-") || !strings.HasSuffix(name, ".log") {
		return time.Time{}, 0, false, false
	}
	mid := strings.TrimSuffix(strings.TrimPrefix(name, "audit-"), ".log")
	ts, seq, found := strings.Cut(mid, "-")
	if !found {
		return time.Time{}, 0, false, false
	}
	t, err := time.Parse(nameTime, ts)
	if err != nil {
		return time.Time{}, 0, false, false
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}, 0, false, false
	}
	return t, n, gz, true
}

// File is one file of a trail.
type File struct {
	Path     string
	Name     string // base name without ".gz": what header lines call it
	FirstSeq uint64 // from the name; 0 for the active file
	Start    time.Time
	Gz       bool
	Active   bool
}

// ListTrail returns the files of the trail in dir in order: rotated files by
// first seq, then the active file if it exists. When both X.log and X.log.gz
// exist (a crash after compressing, before removing), X.log.gz is complete
// and X.log is left out.
func ListTrail(dir string) ([]File, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	byName := map[string]File{}
	var active *File
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		n := e.Name()
		if n == ActiveName {
			active = &File{Path: filepath.Join(dir, n), Name: n, Active: true}
			continue
		}
		start, seq, gz, ok := ParseRotatedName(n)
		if !ok {
			continue
		}
		f := File{Path: filepath.Join(dir, n), Name: strings.TrimSuffix(n, ".gz"), FirstSeq: seq, Start: start, Gz: gz}
		if old, dup := byName[f.Name]; dup && old.Gz {
			continue
		}
		byName[f.Name] = f
	}
	out := make([]File, 0, len(byName)+1)
	for _, f := range byName {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].FirstSeq < out[j].FirstSeq })
	if active != nil {
		out = append(out, *active)
	}
	return out, nil
}

// FileOf describes a file given by path, for a trail assembled from paths.
func FileOf(path string) File {
	base := filepath.Base(path)
	f := File{Path: path, Name: strings.TrimSuffix(base, ".gz"), Gz: strings.HasSuffix(base, ".gz")}
	if start, seq, _, ok := ParseRotatedName(base); ok {
		f.FirstSeq, f.Start = seq, start
	} else {
		f.Active = true
	}
	return f
}

// SortFiles orders files as ListTrail does: rotated by first seq, active last.
func SortFiles(fs []File) {
	sort.SliceStable(fs, func(i, j int) bool {
		if fs[i].Active != fs[j].Active {
			return !fs[i].Active
		}
		return fs[i].FirstSeq < fs[j].FirstSeq
	})
}

// Errorf is a small helper for errors quoting a path.
func errorf(path, format string, a ...any) error {
	return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, a...))
}
