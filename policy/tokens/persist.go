package tokens

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis-gw/portcullis/policy/topics"
)

// Minted tokens survive a restart in two files beside each other in the
// data dir, both mode 0600 and both holding tokens only by their digest
// (the map's keys: a token cannot be recovered from them):
//
//   - the snapshot, <path> (tokens.db): every token held at one instant,
//     with its expiry, user, topics and, once redeemed, when and from which
//     address. Written to a temporary file, synced and renamed over the old
//     one, so that a crash leaves the old snapshot or the new one, never a
//     mix. A SHA-256 over the whole file detects corruption.
//   - the journal, <path>.journal.<gen>: one record per Mint and per first
//     redemption since the snapshot of generation gen, each with its own
//     CRC-32C. The store appends to it from a background goroutine
//     journalLinger after the first record of a burst (Mint and Redeem
//     never wait for the disk), so a kill -9 loses only what was not yet
//     written — at most the last journalLinger — and a power loss what
//     was not yet synced (at most journalSync).
//
// A checkpoint (every SnapshotInterval, when the journal passes
// maxJournalBytes, at start and at Close) starts journal gen+1, then
// writes snapshot gen+1, then deletes the older journals: every change
// made before the switch is in the snapshot, every one after it is in the
// new journal, and a crash in between leaves the old snapshot and both
// journals, which replay to the same tokens. Replaying is idempotent: a
// Mint record of a token already held, or a redemption of a token already
// redeemed, changes nothing.
//
// Redeemed tokens are kept with their redemption until they expire, so a
// token presented again after a restart is spent: a restored redemption
// has no connection, and Redemption.Again judges every presentation as a
// replay or a theft. Expired tokens are not restored.

// SnapshotInterval is how often the store writes a snapshot while its
// state file is open. The journal keeps every change between two
// snapshots, so the interval only bounds the journal's size and the time a
// start takes to replay it.
const SnapshotInterval = 5 * time.Minute

// Bounds of the state files.
const (
	journalSync     = time.Second      // longest a written journal record waits for fsync
	journalLinger   = time.Millisecond // how long the writer lets records gather after a wake-up
	maxJournalBytes = 64 << 20         // a larger journal triggers a checkpoint
	maxPendingBytes = 16 << 20         // records waiting for the writer; beyond, counted in Unsaved
)

// ErrCorrupt is wrapped by OpenState's error when the snapshot or a
// journal could not be read: a bad checksum, an unknown version, a record
// that does not parse. The store then started without the tokens the file
// held (a corrupt snapshot is moved aside to <path>.corrupt); clients must
// fetch new tokens.
var ErrCorrupt = errors.New("corrupt token state file")

// File formats. Integers are big-endian; lengths are uvarints.
//
//	snapshot: "PCTOKSNP" | version u16 | gen u64 | saved at i64 (Unix ns)
//	          | entries… | count u64 | SHA-256 of everything before it
//	entry:    digest [16] | expires i64 | flags u8 (1: redeemed)
//	          | [redeemed at i64 | redeemer address [16], when redeemed]
//	          | user (len, bytes) | topics (len, bytes; space-separated)
//	journal:  "PCTOKJNL" | version u16 | gen u64 | records…
//	record:   'M' | digest | expires | user | topics | CRC-32C  (a Mint)
//	          'R' | digest | at i64 | address [16]   | CRC-32C  (a first redemption)
const (
	snapshotMagic = "PCTOKSNP"
	journalMagic  = "PCTOKJNL"
	formatVersion = 1
	headerLen     = 8 + 2 + 8
	flagRedeemed  = 1
	recMint       = 'M'
	recRedeem     = 'R'
	redeemRecLen  = 1 + 16 + 8 + 16 + 4
)

// minEntryLen is the shortest snapshot entry: digest, expiry, flags, a
// one-byte user and no topics.
const minEntryLen = 16 + 8 + 1 + 2 + 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// StateStats describe the state files of a Store.
type StateStats struct {
	Path      string `json:"path"`
	Restored  int    `json:"restored"`  // tokens restored at start
	Snapshots uint64 `json:"snapshots"` // snapshots written
	Writes    uint64 `json:"writes"`    // writes to the journal, each of every record pending then
	Errors    uint64 `json:"errors"`    // writes that failed
	LastErr   string `json:"last_error,omitempty"`
	Unsaved   uint64 `json:"unsaved"` // records dropped: the writer fell maxPendingBytes behind
}

// stateFiles writes the journal and the snapshots of a Store.
type stateFiles struct {
	path string

	mu      sync.Mutex
	pending []byte // records not yet written; guarded by mu
	closed  bool   // Close ran: records are no longer kept; guarded by mu
	unsaved uint64 // guarded by mu

	wake chan struct{} // records are pending (capacity 1)
	quit chan struct{}
	done chan struct{}

	// fileMu serialises the writes: the writer goroutine's, a checkpoint's,
	// Close's. It is never held with a shard's lock or with mu, except that
	// a checkpoint walks the shards while holding it.
	fileMu sync.Mutex
	gen    uint64   // generation of the journal being written; guarded by fileMu
	jf     *os.File // guarded by fileMu
	jsize  int64    // bytes in jf; guarded by fileMu
	dirty  bool     // written to jf since its last fsync; guarded by fileMu
	spare  []byte   // the buffer pending had before the last flush; guarded by fileMu

	restored  int
	snapshots atomic.Uint64
	writes    atomic.Uint64
	errs      atomic.Uint64
	lastErr   atomic.Pointer[string]
	closeOnce sync.Once
	closeErr  error
}

// OpenState restores the tokens held at path (the snapshot) and in its
// journals that are still valid at now, then writes a fresh snapshot and
// starts the writer: from then on every Mint and first redemption is
// journalled, and a snapshot written every SnapshotInterval. It returns
// how many tokens it restored.
//
// A snapshot or journal that cannot be read is no reason to stop: the
// error then wraps ErrCorrupt, the store holds what could be read (nothing
// from a corrupt snapshot, which is moved aside to <path>.corrupt) and
// the state file is open. Any other error (the data dir not writable)
// means the state file is not open; the store then works in memory only.
//
// Call it once, before the store is used; Close stops the writer.
func (s *Store) OpenState(path string, now time.Time) (int, error) {
	if s.state != nil {
		return 0, errors.New("tokens: state file already open")
	}
	st := &stateFiles{path: path, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	gen, n, rerr := s.restore(path, now)
	if rerr != nil && !errors.Is(rerr, ErrCorrupt) {
		return 0, rerr
	}
	st.restored = n
	// A journal of a generation never used: the ones replayed stay until
	// the snapshot below holds what they did.
	if err := st.startJournal(gen + 1); err != nil {
		return 0, errors.Join(rerr, err)
	}
	s.state = st
	if err := s.checkpoint(now); err != nil {
		_ = st.jf.Close()
		s.state = nil
		return 0, errors.Join(rerr, err)
	}
	go s.writer()
	return n, rerr
}

// restore reads the snapshot at path and the journals after it into s. It
// returns the highest generation seen (the next journal's is one more) and
// how many tokens s holds afterwards.
func (s *Store) restore(path string, now time.Time) (gen uint64, n int, err error) {
	journals, err := journalsOf(path)
	if err != nil {
		return 0, 0, err
	}
	for _, j := range journals {
		gen = max(gen, j.gen)
	}
	snapGen, recs, err := readSnapshot(path, now)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		if errors.Is(err, ErrCorrupt) {
			if rerr := os.Rename(path, path+".corrupt"); rerr != nil {
				err = errors.Join(err, fmt.Errorf("tokens: move the corrupt snapshot aside: %w", rerr))
			} else {
				err = fmt.Errorf("%w; moved aside to %s, starting without its tokens", err, path+".corrupt")
			}
		}
		return gen, 0, err // a corrupt snapshot: no journal either, nothing restored
	default:
		gen = max(gen, snapGen)
		for _, r := range recs {
			s.restoreEntry(r.d, r.g, r.red)
		}
	}
	var errs []error
	for _, j := range journals {
		if j.gen < snapGen {
			continue // in the snapshot already; deleted at the next checkpoint
		}
		if jerr := s.replayJournal(j.path, j.gen, now); jerr != nil {
			errs = append(errs, jerr)
		}
	}
	if len(errs) > 0 {
		// The redemptions in the unreadable part are unknown: rather than
		// let a redeemed token live again, every token restored counts as
		// spent (its holder gets token_replayed and fetches a new one).
		s.spendAll(now)
		errs = append(errs, errors.New("every restored token is taken as spent"))
	}
	return gen, s.Len(), errors.Join(errs...)
}

// spendAll marks every unredeemed token as redeemed at now, by an unknown
// address on no connection.
func (s *Store) spendAll(now time.Time) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.walk(func(d digest, e entry) bool {
			if e.redeemed == nil {
				red := RestoredRedemption(netip.Addr{}, now)
				e.redeemed = &red
				sh.entries[d] = e // an update of the entry being visited
			}
			return false
		}, nil)
	}
}

// restored is one token read from a snapshot.
type restored struct {
	d   digest
	g   *Grant
	red *Redemption
}

// restoreEntry adds a token read back from disk, unless the store holds it
// already (a journal replaying what the snapshot has) or is full. A
// redemption read back is added to a token held unredeemed.
func (s *Store) restoreEntry(d digest, g *Grant, red *Redemption) {
	if g != nil {
		s.intern(g) // before the shard's lock: the interning lock is never held with another
	}
	sh := s.shardOf(&d)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.entries[d]; ok {
		if e.redeemed == nil && red != nil {
			e.redeemed = red
			sh.entries[d] = e
		}
		return
	}
	if g == nil || !s.reserve() {
		return // a redemption of a token not held (expired, or lost), or a full store
	}
	if sh.entries == nil {
		sh.entries = make(map[digest]entry)
	}
	sh.entries[d] = entry{grant: g, redeemed: red}
}

// journalFile is a journal found beside the snapshot.
type journalFile struct {
	path string
	gen  uint64
}

// journalsOf lists the journals of the snapshot at path, oldest first.
func journalsOf(path string) ([]journalFile, error) {
	dir, prefix := filepath.Dir(path), filepath.Base(path)+".journal."
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("tokens: list the state files in %s: %w", dir, err)
	}
	var out []journalFile
	for _, e := range ents {
		g, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		gen, err := strconv.ParseUint(g, 10, 64)
		if err != nil {
			continue // not one of ours
		}
		out = append(out, journalFile{path: filepath.Join(dir, e.Name()), gen: gen})
	}
	slices.SortFunc(out, func(a, b journalFile) int { return cmpU64(a.gen, b.gen) })
	return out, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// corrupt wraps ErrCorrupt with what is wrong where.
func corrupt(path string, format string, a ...any) error {
	return fmt.Errorf("tokens: read %s: %w: %s", path, ErrCorrupt, fmt.Sprintf(format, a...))
}

// readSnapshot reads and checks the snapshot at path, returning its
// generation and the tokens in it still valid at now. Nothing is returned
// unless the whole file checks.
func readSnapshot(path string, now time.Time) (uint64, []restored, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, nil, err
		}
		return 0, nil, fmt.Errorf("tokens: read %s: %w", path, err)
	}
	if len(b) < headerLen+8+sha256.Size || string(b[:8]) != snapshotMagic {
		return 0, nil, corrupt(path, "not a token snapshot")
	}
	if v := binary.BigEndian.Uint16(b[8:]); v != formatVersion {
		return 0, nil, corrupt(path, "format version %d, this build reads %d", v, formatVersion)
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return 0, nil, corrupt(path, "checksum mismatch")
	}
	gen := binary.BigEndian.Uint64(b[10:])
	count := binary.BigEndian.Uint64(body[len(body)-8:])
	r := reader{b: body[headerLen+8 : len(body)-8]}
	out := make([]restored, 0, min(count, uint64(len(r.b)/minEntryLen)))
	nowNs := now.UnixNano()
	for i := uint64(0); len(r.b) > 0; i++ {
		var d digest
		r.bytes(d[:])
		exp := r.i64()
		flags := r.u8()
		var red *Redemption
		if flags&flagRedeemed != 0 {
			red = &Redemption{at: r.i64()}
			r.bytes(red.addr[:])
		}
		g := r.grant(d, exp)
		if r.err != nil {
			return 0, nil, corrupt(path, "entry %d: %v", i, r.err)
		}
		if flags&^flagRedeemed != 0 {
			return 0, nil, corrupt(path, "entry %d: unknown flags %#x", i, flags)
		}
		if nowNs < exp {
			out = append(out, restored{d: d, g: g, red: red})
		}
		count-- // wraps if the file holds more entries than it says: caught below
	}
	if count != 0 {
		return 0, nil, corrupt(path, "entry count does not match")
	}
	return gen, out, nil
}

// replayJournal applies the records of one journal. A torn last record (a
// crash in the middle of a write) ends it quietly; a bad record followed
// by more is corruption: the records before it are kept.
func (s *Store) replayJournal(path string, gen uint64, now time.Time) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("tokens: read %s: %w: %w", path, ErrCorrupt, err)
	}
	if len(b) < headerLen {
		return nil // created, header not yet written
	}
	if string(b[:8]) != journalMagic || binary.BigEndian.Uint16(b[8:]) != formatVersion || binary.BigEndian.Uint64(b[10:]) != gen {
		return corrupt(path, "not a token journal of this format and generation")
	}
	nowNs := now.UnixNano()
	for off := headerLen; off < len(b); {
		n, d, g, red, err := parseRecord(b[off:])
		if err != nil {
			if len(b)-off <= maxRecordLen {
				return nil // a torn last record
			}
			return corrupt(path, "record at byte %d: %v", off, err)
		}
		off += n
		if g != nil && nowNs >= g.Expires {
			continue
		}
		s.restoreEntry(d, g, red)
	}
	return nil
}

// maxRecordLen is the longest journal record: a Mint with the longest user
// id and a long topic list is far below it. A bad record closer than this
// to the end of a journal is taken for one torn by a crash.
const maxRecordLen = 64 << 10

// parseRecord parses one journal record: a Mint (g set) or a redemption
// (red set). It returns the record's length.
func parseRecord(b []byte) (n int, d digest, g *Grant, red *Redemption, err error) {
	if len(b) == 0 {
		return 0, d, nil, nil, io.ErrUnexpectedEOF
	}
	r := reader{b: b[1:]}
	r.bytes(d[:])
	switch b[0] {
	case recMint:
		exp := r.i64()
		g = r.grant(d, exp)
	case recRedeem:
		red = &Redemption{at: r.i64()}
		r.bytes(red.addr[:])
	default:
		return 0, d, nil, nil, fmt.Errorf("unknown record type %#x", b[0])
	}
	if r.err != nil {
		return 0, d, nil, nil, r.err
	}
	n = len(b) - len(r.b)
	if len(r.b) < 4 {
		return 0, d, nil, nil, io.ErrUnexpectedEOF
	}
	if crc32.Checksum(b[:n], castagnoli) != binary.BigEndian.Uint32(r.b) {
		return 0, d, nil, nil, errors.New("checksum mismatch")
	}
	return n + 4, d, g, red, nil
}

// reader decodes the fields of a state file; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = io.ErrUnexpectedEOF
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) bytes(dst []byte) { copy(dst, r.take(len(dst))) }

func (r *reader) u8() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) i64() int64 {
	if b := r.take(8); b != nil {
		return int64(binary.BigEndian.Uint64(b))
	}
	return 0
}

func (r *reader) str(limit int) string {
	if r.err != nil {
		return ""
	}
	l, k := binary.Uvarint(r.b)
	if k <= 0 || l > uint64(limit) {
		r.err = errors.New("bad length")
		return ""
	}
	r.b = r.b[k:]
	return string(r.take(int(l)))
}

// grant reads a token's user and topics and checks them as Mint would.
func (r *reader) grant(d digest, exp int64) *Grant {
	user := r.str(topics.MaxUserIDLen)
	bound := r.str(maxRecordLen)
	if r.err != nil {
		return nil
	}
	if !topics.ValidUserID(user) {
		r.err = errors.New("invalid user id")
		return nil
	}
	if bound != "" {
		for t := range strings.SplitSeq(bound, " ") {
			if !topics.ValidPattern(t) {
				r.err = errors.New("invalid topic")
				return nil
			}
		}
	}
	return &Grant{userFP: user + fingerprint(d), topics: bound, Expires: exp, nUser: uint32(len(user))}
}

// appendGrant appends what a record or entry holds of g.
func appendGrant(b []byte, g *Grant) []byte {
	b = binary.AppendUvarint(b, uint64(g.nUser))
	b = append(b, g.UserID()...)
	b = binary.AppendUvarint(b, uint64(len(g.topics)))
	return append(b, g.topics...)
}

func appendCRC(b []byte, start int) []byte {
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// minted journals a Mint. It never blocks: the writer goroutine writes it.
func (st *stateFiles) minted(d *digest, g *Grant) {
	st.mu.Lock()
	if !st.closed {
		if len(st.pending) < maxPendingBytes {
			start := len(st.pending)
			b := append(st.pending, recMint)
			b = append(b, d[:]...)
			b = binary.BigEndian.AppendUint64(b, uint64(g.Expires))
			b = appendGrant(b, g)
			st.pending = appendCRC(b, start)
		} else {
			st.unsaved++
		}
	}
	st.mu.Unlock()
	st.kick()
}

// redeemed journals the first redemption of the token with digest d.
func (st *stateFiles) redeemed(d *digest, red *Redemption) {
	st.mu.Lock()
	if !st.closed {
		if len(st.pending) < maxPendingBytes {
			start := len(st.pending)
			b := append(st.pending, recRedeem)
			b = append(b, d[:]...)
			b = binary.BigEndian.AppendUint64(b, uint64(red.at))
			b = append(b, red.addr[:]...)
			st.pending = appendCRC(b, start)
		} else {
			st.unsaved++
		}
	}
	st.mu.Unlock()
	st.kick()
}

func (st *stateFiles) kick() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// startJournal creates the journal of generation gen. fileMu must be held
// or the writer not running.
func (st *stateFiles) startJournal(gen uint64) error {
	p := st.path + ".journal." + strconv.FormatUint(gen, 10)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("tokens: create journal: %w", err)
	}
	hdr := make([]byte, 0, headerLen)
	hdr = append(hdr, journalMagic...)
	hdr = binary.BigEndian.AppendUint16(hdr, formatVersion)
	hdr = binary.BigEndian.AppendUint64(hdr, gen)
	if _, err := f.Write(hdr); err != nil {
		_ = f.Close()
		return fmt.Errorf("tokens: write journal %s: %w", p, err)
	}
	st.jf, st.gen, st.jsize, st.dirty = f, gen, int64(len(hdr)), true
	return nil
}

// flushLocked writes the pending records to the journal. fileMu must be
// held.
func (st *stateFiles) flushLocked() error {
	st.mu.Lock()
	b := st.pending
	st.pending = st.spare[:0]
	st.mu.Unlock()
	st.spare = b
	if len(b) == 0 {
		return nil
	}
	st.writes.Add(1)
	n, err := st.jf.Write(b)
	st.jsize += int64(n)
	st.dirty = true
	if err != nil {
		return fmt.Errorf("tokens: write journal: %w", err)
	}
	return nil
}

// syncLocked fsyncs the journal if written since its last fsync.
func (st *stateFiles) syncLocked() error {
	if !st.dirty {
		return nil
	}
	st.dirty = false
	if err := st.jf.Sync(); err != nil {
		return fmt.Errorf("tokens: sync journal: %w", err)
	}
	return nil
}

// failed counts a failed write; the tokens stay in memory.
func (st *stateFiles) failed(err error) error {
	if err != nil {
		st.errs.Add(1)
		msg := err.Error()
		st.lastErr.Store(&msg)
	}
	return err
}

// writer writes the journal as records come, syncs it every journalSync,
// and checkpoints every SnapshotInterval, until Close.
func (s *Store) writer() {
	st := s.state
	defer close(st.done)
	t := time.NewTicker(journalSync)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-st.wake:
			// Let the burst gather first: while this goroutine sleeps,
			// kick finds the wake-up already pending and readies nobody.
			time.Sleep(journalLinger)
			st.fileMu.Lock()
			_ = st.failed(st.flushLocked())
			big := st.jsize > maxJournalBytes
			st.fileMu.Unlock()
			if big {
				_ = s.checkpoint(time.Now())
				last = time.Now()
			}
		case now := <-t.C:
			if now.Sub(last) >= SnapshotInterval {
				_ = s.checkpoint(now)
				last = now
				continue
			}
			st.fileMu.Lock()
			_ = st.failed(errors.Join(st.flushLocked(), st.syncLocked()))
			st.fileMu.Unlock()
		case <-st.quit:
			return
		}
	}
}

// Checkpoint writes a snapshot of the store now and deletes the journals
// it makes redundant. The writer calls it every SnapshotInterval; it does
// nothing without OpenState.
func (s *Store) Checkpoint(now time.Time) error {
	if s.state == nil {
		return nil
	}
	return s.checkpoint(now)
}

func (s *Store) checkpoint(now time.Time) error {
	st := s.state
	st.fileMu.Lock()
	defer st.fileMu.Unlock()
	if st.jf == nil {
		return errors.New("tokens: checkpoint: the state file is closed")
	}
	// Everything changed before this flush is in the snapshot below;
	// everything after it goes to the next journal.
	if err := errors.Join(st.flushLocked(), st.syncLocked()); err != nil {
		return st.failed(err)
	}
	old := st.jf
	if err := st.startJournal(st.gen + 1); err != nil {
		return st.failed(err)
	}
	_ = old.Close()
	if err := s.writeSnapshot(st.path, st.gen, now); err != nil {
		return st.failed(err)
	}
	st.snapshots.Add(1)
	journals, err := journalsOf(st.path)
	if err != nil {
		return st.failed(err)
	}
	for _, j := range journals {
		if j.gen < st.gen {
			if err := os.Remove(j.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return st.failed(fmt.Errorf("tokens: delete an old journal: %w", err))
			}
		}
	}
	return nil
}

// writeSnapshot writes every token valid at now to path, atomically.
func (s *Store) writeSnapshot(path string, gen uint64, now time.Time) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return fmt.Errorf("tokens: write snapshot: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<16)
	hdr := make([]byte, 0, headerLen+8)
	hdr = append(hdr, snapshotMagic...)
	hdr = binary.BigEndian.AppendUint16(hdr, formatVersion)
	hdr = binary.BigEndian.AppendUint64(hdr, gen)
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(now.UnixNano()))
	_, _ = w.Write(hdr)
	nowNs := now.UnixNano()
	var count uint64
	var buf []byte
	for i := range s.shards {
		buf = buf[:0]
		s.shards[i].walk(func(d digest, e entry) bool {
			if nowNs >= e.grant.Expires {
				return false
			}
			buf = append(buf, d[:]...)
			buf = binary.BigEndian.AppendUint64(buf, uint64(e.grant.Expires))
			if e.redeemed != nil {
				buf = append(buf, flagRedeemed)
				buf = binary.BigEndian.AppendUint64(buf, uint64(e.redeemed.at))
				buf = append(buf, e.redeemed.addr[:]...)
			} else {
				buf = append(buf, 0)
			}
			buf = appendGrant(buf, e.grant)
			count++
			return false
		}, nil)
		if _, err := w.Write(buf); err != nil {
			return fmt.Errorf("tokens: write snapshot %s: %w", f.Name(), err)
		}
	}
	_, _ = w.Write(binary.BigEndian.AppendUint64(nil, count))
	if err := w.Flush(); err != nil {
		return fmt.Errorf("tokens: write snapshot %s: %w", f.Name(), err)
	}
	if _, err := f.Write(h.Sum(nil)); err != nil {
		return fmt.Errorf("tokens: write snapshot %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("tokens: sync snapshot %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("tokens: close snapshot %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("tokens: install snapshot %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil { // the rename survives a power loss
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// StateStats returns the state files' counters; the zero value without
// OpenState.
func (s *Store) StateStats() StateStats {
	st := s.state
	if st == nil {
		return StateStats{}
	}
	out := StateStats{Path: st.path, Restored: st.restored, Snapshots: st.snapshots.Load(),
		Writes: st.writes.Load(), Errors: st.errs.Load()}
	if p := st.lastErr.Load(); p != nil {
		out.LastErr = *p
	}
	st.mu.Lock()
	out.Unsaved = st.unsaved
	st.mu.Unlock()
	return out
}

// Close stops the writer and writes a last snapshot as of now, so that a
// graceful stop keeps every token. Mint and Redeem keep working in memory
// afterwards. It is safe to call more than once; without OpenState it
// does nothing.
func (s *Store) Close(now time.Time) error {
	st := s.state
	if st == nil {
		return nil
	}
	st.closeOnce.Do(func() {
		close(st.quit)
		<-st.done
		err := s.checkpoint(now)
		st.fileMu.Lock()
		defer st.fileMu.Unlock()
		// What changed while the snapshot was written is in the new
		// journal; from here on, nothing is kept.
		st.mu.Lock()
		st.closed = true
		st.mu.Unlock()
		err = errors.Join(err, st.flushLocked(), st.syncLocked())
		if cerr := st.jf.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("tokens: close journal: %w", cerr))
		}
		st.jf = nil
		st.closeErr = st.failed(err)
	})
	return st.closeErr
}
