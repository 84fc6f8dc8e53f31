// Package index defines the per-file summary ("idx") that the audit writer
// leaves beside each rotated trail file and that audit query reads to skip
// files and to answer counts without decompressing them.
//
// An idx is advisory: it is never trusted for integrity (audit verify
// ignores it) and a missing, unreadable, foreign or stale idx simply means
// the file is scanned. It is a JSON object written atomically (temporary
// file, fsync, rename) as audit-<time>-<first seq>.idx, named after the
// rotated file's .log base so that it stays valid once the file is gzip'd.
//
// A reader checks that an idx describes the file beside it: same name and
// first seq, and the file's content matches: for X.log.gz the gzip trailer's
// CRC-32 and size of the uncompressed data equal the idx's crc32 and bytes;
// for X.log the size equals bytes and the last line ends with last_mac.
//
// index imports nothing from the rest of Portcullis.
package index

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Version is the format version of an idx; readers ignore other versions.
const Version = 1 // blocked Bloom filters (see Bloom)

// Bloom filter parameters: fixed, so every idx is read the same way.
const (
	BloomBytes = 64 << 10
	BloomBits  = BloomBytes * 8
	BloomK     = 4
)

// Ext is the extension of an idx file.
const Ext = ".idx"

// Name returns the idx name of a rotated file, given its name with or
// without ".gz": audit-X-N.log[.gz] → audit-X-N.idx.
func Name(logName string) string {
	return strings.TrimSuffix(strings.TrimSuffix(logName, ".gz"), ".log") + Ext
}

// Hash is the 64-bit FNV-1a hash of s (as hash/fnv's New64a computes it),
// stable across processes and machines.
func Hash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// HashBytes is Hash(string(b)), without the conversion.
func HashBytes(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// HashAddr is HashIP of a's text (a valid address): the hash of its
// canonical form, unmapped and without zone. It does not allocate.
func HashAddr(a netip.Addr) uint64 {
	var buf [64]byte
	return HashBytes(a.Unmap().WithZone("").AppendTo(buf[:0]))
}

// HashASCII is Hash(s) when s is ASCII; ok is false otherwise.
func HashASCII(s string) (h uint64, ok bool) {
	h = 14695981039346656037
	var or byte
	for i := 0; i < len(s); i++ {
		or |= s[i]
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h, or < 0x80
}

// Bloom is a blocked Bloom filter of BloomBits bits: a value's BloomK bits
// all lie in one 64-byte block (one cache line for the writer to touch).
// The block is the value's Hash modulo the number of blocks; bit i of the
// value is the 9 bits of the hash at bit 32+9i, within the block.
type Bloom []byte

const bloomBlocks = BloomBytes / 64

// NewBloom returns an empty filter.
func NewBloom() Bloom { return make(Bloom, BloomBytes) }

// AddHash adds a value by its Hash.
func (b Bloom) AddHash(h uint64) {
	blk := b[(uint32(h)%bloomBlocks)*64:][:64]
	for i := 0; i < BloomK; i++ {
		p := uint32(h>>(32+9*i)) & 511
		blk[p>>3] |= 1 << (p & 7)
	}
}

// Has reports whether s may have been added; false is certain.
func (b Bloom) Has(s string) bool {
	if len(b) != BloomBytes {
		return true
	}
	h := Hash(s)
	blk := b[(uint32(h)%bloomBlocks)*64:][:64]
	for i := 0; i < BloomK; i++ {
		p := uint32(h>>(32+9*i)) & 511
		if blk[p>>3]&(1<<(p&7)) == 0 {
			return false
		}
	}
	return true
}

// HashIP is the hash of an address value as it goes into the ip filter:
// an address (or address:port) unmapped, without zone, in canonical form;
// other values as they are. audit query looks up a single address in that
// form. It does not allocate.
func HashIP(s string) uint64 {
	// Fast path: a dotted quad, alone or with a port, is already in the
	// canonical form if it parses at all (netip rejects leading zeros),
	// and if it does not parse no single-address filter can match it.
	if i := strings.LastIndexByte(s, ':'); i < 0 {
		if quadLike(s) {
			return Hash(s)
		}
	} else if quadLike(s[:i]) && i+1 < len(s) && digits(s[i+1:]) {
		return Hash(s[:i])
	}
	a, ok := parseAddr(s)
	if !ok {
		return Hash(s)
	}
	var buf [64]byte
	b := a.AppendTo(buf[:0])
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

func quadLike(s string) bool {
	dots := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			dots++
		case c < '0' || c > '9':
			return false
		}
	}
	return dots == 3 && len(s) >= 7
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

// parseAddr reads an address or address:port as audit query does, unmapped
// and without zone. It tries the likelier form first (an error allocates).
func parseAddr(s string) (netip.Addr, bool) {
	port := len(s) > 0 && s[0] == '['
	if !port {
		if c, d := strings.LastIndexByte(s, ':'), strings.LastIndexByte(s, '.'); d >= 0 && c > d {
			port = true // a.b.c.d:port
		}
	}
	for range 2 {
		if port {
			if ap, err := netip.ParseAddrPort(s); err == nil {
				return ap.Addr().Unmap().WithZone(""), true
			}
		} else if a, err := netip.ParseAddr(s); err == nil {
			return a.Unmap().WithZone(""), true
		}
		port = !port
	}
	return netip.Addr{}, false
}

// Summary is the content of an idx file.
type Summary struct {
	V        int    `json:"v"`
	File     string `json:"file"` // the rotated file's .log name
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	LastMAC  string `json:"last_mac"` // mac of the file's last line
	Lines    int64  `json:"lines"`
	Bytes    int64  `json:"bytes"` // uncompressed size
	CRC32    uint32 `json:"crc32"` // IEEE CRC-32 of the uncompressed content (as in the gzip trailer), set by Checksum's caller
	// First and Last bound every event time of the file, summary events'
	// first and last included; zero when the file has no line.
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// Occurrences by event, reason ("" for none) and severity name; a
	// summary event counts as its count.
	Events     map[string]int64 `json:"events"`
	Reasons    map[string]int64 `json:"reasons"`
	Severities map[string]int64 `json:"severities"`
	BloomBits  int              `json:"bloom_bits"`
	BloomK     int              `json:"bloom_k"`
	// Bloom filters of the values written: ip and peer_ip (see HashIP),
	// counted_prefix, userId, topic. They are the object's last members,
	// base64 strings in this order (bloomKeys), so that a reader that does
	// not need them stops before them and one that does decodes them
	// without a JSON scanner.
	IP            Bloom `json:"-"`
	CountedPrefix Bloom `json:"-"`
	User          Bloom `json:"-"`
	Topic         Bloom `json:"-"`
}

var bloomKeys = [4]string{"bloom_ip", "bloom_counted_prefix", "bloom_user", "bloom_topic"}

func (s *Summary) blooms() [4]*Bloom {
	return [4]*Bloom{&s.IP, &s.CountedPrefix, &s.User, &s.Topic}
}

// marshal is the JSON object: the members of Summary, then the filters.
func (s *Summary) marshal() ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	b = b[:len(b)-1] // '}'
	for i, f := range s.blooms() {
		b = append(b, `,"`...)
		b = append(b, bloomKeys[i]...)
		b = append(b, `":"`...)
		b = base64.StdEncoding.AppendEncode(b, *f)
		b = append(b, '"')
	}
	return append(b, '}'), nil
}

// unmarshal reads what marshal wrote; blooms false leaves the filters nil.
func (s *Summary) unmarshal(b []byte, blooms bool) error {
	b = bytes.TrimRight(b, "\n")
	k := bytes.Index(b, []byte(`,"`+bloomKeys[0]+`":"`))
	if k < 0 || len(b) == 0 || b[len(b)-1] != '}' {
		return errors.New("no bloom filters")
	}
	head := append(b[:k:k], '}')
	if err := json.Unmarshal(head, s); err != nil {
		return err
	}
	if !blooms {
		return nil
	}
	rest := b[k : len(b)-1]
	for i, f := range s.blooms() {
		key := `,"` + bloomKeys[i] + `":"`
		if !bytes.HasPrefix(rest, []byte(key)) {
			return errors.New("malformed bloom filters")
		}
		rest = rest[len(key):]
		e := bytes.IndexByte(rest, '"')
		if e < 0 {
			return errors.New("malformed bloom filters")
		}
		v, err := base64.StdEncoding.AppendDecode(make([]byte, 0, BloomBytes), rest[:e])
		if err != nil {
			return err
		}
		*f = v
		rest = rest[e+1:]
	}
	if len(rest) != 0 {
		return errors.New("malformed bloom filters")
	}
	return nil
}

// Write writes s to path atomically with mode 0600: a temporary file
// (path+".tmp"), fsynced, renamed, and the directory synced.
func Write(path string, s *Summary) error {
	b, err := s.marshal()
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// read reads and checks the shape of the idx at path; it skips decoding
// the Bloom filters unless blooms is set.
func read(path string, blooms bool) (*Summary, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Summary
	if err := s.unmarshal(b, blooms); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if s.V != Version || s.BloomBits != BloomBits || s.BloomK != BloomK {
		return nil, fmt.Errorf("%s: unsupported idx version or shape", path)
	}
	if blooms {
		for _, f := range s.blooms() {
			if len(*f) != BloomBytes {
				return nil, fmt.Errorf("%s: unsupported idx version or shape", path)
			}
		}
	}
	return &s, nil
}

// Checksum returns the size and IEEE CRC-32 of the file at path, and its
// last 128 bytes (fewer if it is shorter).
func Checksum(path string) (size int64, crc uint32, tail []byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, nil, err
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			crc = crc32.Update(crc, crc32.IEEETable, buf[:n])
			size += int64(n)
			tail = append(tail, buf[:n]...)
			if len(tail) > 128 {
				tail = append(tail[:0], tail[len(tail)-128:]...)
			}
		}
		if rerr == io.EOF {
			return size, crc, tail, nil
		}
		if rerr != nil {
			return 0, 0, nil, rerr
		}
	}
}

// Matches reports whether a plain file's size and last bytes are those s
// describes.
func (s *Summary) Matches(size int64, tail []byte) bool {
	return size == s.Bytes && bytes.HasSuffix(tail, []byte(`"mac":"`+s.LastMAC+"\"}\n"))
}

// ErrStale says an idx does not describe the file beside it.
var ErrStale = errors.New("idx does not match its file")

// ForFile returns the idx of the rotated file at path (X.log or X.log.gz)
// when there is one and it describes that file's current content. Without
// blooms the filters are not decoded (nil: Has answers true).
func ForFile(path string, firstSeq uint64, blooms bool) (*Summary, error) {
	base := strings.TrimSuffix(filepath.Base(path), ".gz")
	s, err := read(filepath.Join(filepath.Dir(path), Name(base)), blooms)
	if err != nil {
		return nil, err
	}
	if s.File != base || s.FirstSeq != firstSeq {
		return nil, ErrStale
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if strings.HasSuffix(path, ".gz") {
		var t [8]byte
		if st.Size() < 18+8 {
			return nil, ErrStale
		}
		if _, err := f.ReadAt(t[:], st.Size()-8); err != nil {
			return nil, err
		}
		if binary.LittleEndian.Uint32(t[:4]) != s.CRC32 || binary.LittleEndian.Uint32(t[4:]) != uint32(s.Bytes) {
			return nil, ErrStale
		}
		return s, nil
	}
	if st.Size() != s.Bytes {
		return nil, ErrStale
	}
	suffix := `"mac":"` + s.LastMAC + "\"}\n"
	if s.Bytes == 0 {
		if s.Lines == 0 {
			return s, nil
		}
		return nil, ErrStale
	}
	if int64(len(suffix)) > st.Size() {
		return nil, ErrStale
	}
	t := make([]byte, len(suffix))
	if _, err := f.ReadAt(t, st.Size()-int64(len(t))); err != nil && err != io.EOF {
		return nil, err
	}
	if !bytes.Equal(t, []byte(suffix)) {
		return nil, ErrStale
	}
	return s, nil
}

// Hashes are the Bloom hashes of one line's values, computed off the
// writer's critical path. A zero Has bit means the field is absent.
type Hashes struct {
	IP, PeerIP, CountedPrefix, User, Topic uint64
	Has                                    uint8
}

// Bits of Hashes.Has.
const (
	HasIP uint8 = 1 << iota
	HasPeerIP
	HasCountedPrefix
	HasUser
	HasTopic
)

// Set fills h from a line's values as written (already capped); empty
// values are absent. ip and peerIP are normalized as HashIP does.
func (h *Hashes) Set(ip, peerIP, countedPrefix, user, topic string) {
	*h = Hashes{}
	if ip != "" {
		h.IP, h.Has = HashIP(ip), h.Has|HasIP
	}
	if peerIP != "" {
		h.PeerIP, h.Has = HashIP(peerIP), h.Has|HasPeerIP
	}
	if countedPrefix != "" {
		h.CountedPrefix, h.Has = Hash(countedPrefix), h.Has|HasCountedPrefix
	}
	if user != "" {
		h.User, h.Has = Hash(user), h.Has|HasUser
	}
	if topic != "" {
		h.Topic, h.Has = Hash(topic), h.Has|HasTopic
	}
}

// Builder accumulates the Summary of the file being written. The zero
// Builder is not usable: use NewBuilder.
type Builder struct {
	s               Summary
	events, reasons counter
	sev             [5]int64 // info, notice, warning, critical, unknown
	Incomplete      bool     // lines were written before the builder saw them: no idx
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder {
	return &Builder{s: Summary{IP: NewBloom(), CountedPrefix: NewBloom(), User: NewBloom(), Topic: NewBloom()}}
}

// Add records one line as written: its size (newline included), seq, event
// and reason (as written), severity rank (0..3, anything else "unknown"),
// occurrences n, its time span [lo, hi] and value hashes.
func (b *Builder) Add(size int, seq uint64, event, reason string, sev int, n int64, lo, hi time.Time, h *Hashes) {
	s := &b.s
	if s.Lines == 0 {
		s.FirstSeq, s.First, s.Last = seq, lo, hi
	} else {
		if lo.Before(s.First) {
			s.First = lo
		}
		if hi.After(s.Last) {
			s.Last = hi
		}
	}
	s.LastSeq = seq
	s.Lines++
	s.Bytes += int64(size)
	*b.events.get(event) += n
	*b.reasons.get(reason) += n
	if sev < 0 || sev > 3 {
		sev = 4
	}
	b.sev[sev] += n
	if h.Has&HasIP != 0 {
		s.IP.AddHash(h.IP)
	}
	if h.Has&HasPeerIP != 0 {
		s.IP.AddHash(h.PeerIP)
	}
	if h.Has&HasCountedPrefix != 0 {
		s.CountedPrefix.AddHash(h.CountedPrefix)
	}
	if h.Has&HasUser != 0 {
		s.User.AddHash(h.User)
	}
	if h.Has&HasTopic != 0 {
		s.Topic.AddHash(h.Topic)
	}
}

// counter counts by string; consecutive lines often repeat a value, so the
// last one is remembered.
type counter struct {
	m     map[string]*int64
	lastK string
	lastV *int64
}

func (c *counter) get(k string) *int64 {
	if c.lastV != nil && k == c.lastK {
		return c.lastV
	}
	p := c.m[k]
	if p == nil {
		if c.m == nil {
			c.m = map[string]*int64{}
		}
		p = new(int64)
		c.m[k] = p
	}
	c.lastK, c.lastV = k, p
	return p
}

func (c *counter) result() map[string]int64 {
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = *v
	}
	return out
}

// Lines is how many lines were added.
func (b *Builder) Lines() int64 { return b.s.Lines }

var sevNames = [5]string{"info", "notice", "warning", "critical", "unknown"}

// Finish returns the Summary of the file named name (its .log name) whose
// last line's mac is lastMAC; the Builder must not be used afterwards.
func (b *Builder) Finish(name, lastMAC string) *Summary {
	s := b.s
	s.V, s.File, s.LastMAC, s.BloomBits, s.BloomK = Version, name, lastMAC, BloomBits, BloomK
	s.Events, s.Reasons = b.events.result(), b.reasons.result()
	s.Severities = map[string]int64{}
	for i, n := range b.sev {
		if n != 0 {
			s.Severities[sevNames[i]] = n
		}
	}
	return &s
}

// FirstSeq is the seq of the first line added, 0 if none.
func (b *Builder) FirstSeq() uint64 {
	if b.s.Lines == 0 {
		return 0
	}
	return b.s.FirstSeq
}
