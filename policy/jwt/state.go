package jwttoken

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/portcullis-gw/portcullis/policy/statefile"
)

// Layout of the jti state file (its own bbolt file: the bans' state.db is
// held open, and locked, by policy/bans). Bucket "jtis" maps
// until (8 bytes, big-endian unix ns: when the token stops being valid) ‖
// SHA-256 of the jti (32 bytes) to the redemption time (8 bytes,
// big-endian unix ns) ‖ the redeeming client's address (16 bytes, IPv4 in
// its IPv4-mapped form; all zero when unknown). Values of 8 bytes, written
// before the address was recorded, are read as "address unknown": their
// jtis are still refused, as replays. Keys sort by until, so the lapsed
// entries are a prefix of the bucket, deleted with one cursor walk.
var (
	bucketMeta = []byte("meta")
	bucketJTIs = []byte("jtis")
)

const stateVersion = "1"

// Lengths of a value in bucket "jtis": with the redeemer's address, and
// without it (files written before it was recorded).
const (
	valueLen    = 8 + 16
	oldValueLen = 8
)

// FlushInterval is the longest a redeemed jti waits before the state file
// deletes lapsed entries; new entries are written as soon as the writer
// is free (see OpenState).
const FlushInterval = time.Minute

// stateFile writes the redeemed jtis to disk from one goroutine.
type stateFile struct {
	db   *bolt.DB
	path string
	wake chan struct{} // a write is wanted (capacity 1)
	quit chan struct{}
	done chan struct{}

	closeOnce sync.Once
	closeErr  error

	writes   atomic.Uint64 // transactions committed
	errs     atomic.Uint64 // transactions failed
	lastErr  atomic.Pointer[string]
	restored int // entries read at open
}

// OpenState opens (or creates, mode 0600) the bbolt file at path, restores
// into s the jtis redeemed before — by any earlier run — whose tokens are
// still valid at now, deletes the lapsed ones, and starts the writer. From
// then on every jti s redeems is written to the file.
//
// Redeem never waits for the disk: the table in memory decides, and a
// background goroutine writes what was redeemed since its last
// transaction, one transaction (one fsync) per batch. A jti redeemed
// within one such transaction of a crash or power loss — typically a few
// milliseconds, at most the time the disk takes to commit — may be
// forgotten, and its token accepted once more until it expires; a clean
// stop (Close) writes everything. Should the disk fall behind by more
// than MaxEntries jtis, the newest are kept in memory only (counted in
// StateStats.Unsaved).
//
// Call it once, before the Source is used; Close stops the writer.
func (s *Source) OpenState(path string, now time.Time) error {
	if s.state != nil {
		return errors.New("jwt state: already open")
	}
	db, err := statefile.Open(path, statefile.Spec{What: "jti state file", Meta: bucketMeta, Version: stateVersion,
		Buckets: [][]byte{bucketJTIs},
		Hint:    "move it aside to start without it (tokens redeemed before may then be accepted once more until they expire)"})
	if err != nil {
		return fmt.Errorf("jwt: %w", err)
	}
	st := &stateFile{db: db, path: path, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	if st.restored, err = st.load(&s.cache, now); err != nil {
		_ = db.Close()
		return err
	}
	if err := st.write(nil, now); err != nil {
		_ = db.Close()
		return err
	}
	s.cache.mu.Lock()
	s.cache.persist = true
	s.cache.mu.Unlock()
	s.state = st
	go s.writer()
	return nil
}

// load restores the entries still valid at now. bbolt panics on some
// corrupt pages: that becomes an error naming the file.
func (st *stateFile) load(c *replayCache, now time.Time) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("jwt: read jti state file %s: corrupt file: %v", st.path, r)
		}
	}()
	err = st.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bucketJTIs).Cursor()
		from := binary.BigEndian.AppendUint64(nil, uint64(now.UnixNano())+1)
		for k, v := cur.Seek(from); k != nil; k, v = cur.Next() {
			if len(k) != 8+sha256.Size || (len(v) != valueLen && len(v) != oldValueLen) {
				return fmt.Errorf("entry of %d+%d bytes", len(k), len(v))
			}
			it := lapseItem{until: int64(binary.BigEndian.Uint64(k)), at: int64(binary.BigEndian.Uint64(v))}
			copy(it.jti[:], k[8:])
			var by netip.Addr
			if len(v) == valueLen {
				if a := [16]byte(v[8:]); a != ([16]byte{}) {
					by = netip.AddrFrom16(a).Unmap()
				}
			}
			c.restore(it, by)
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("jwt: read jti state file %s: %w", st.path, err)
	}
	return n, nil
}

// write stores items and deletes the entries lapsed by now, in one
// transaction.
func (st *stateFile) write(items []savedItem, now time.Time) error {
	err := st.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJTIs)
		var k [8 + sha256.Size]byte
		// bbolt copies a key but keeps the value slice until the
		// transaction ends: one value buffer per item.
		vals := make([]byte, valueLen*len(items))
		for i, it := range items {
			binary.BigEndian.PutUint64(k[:8], uint64(it.until))
			copy(k[8:], it.jti[:])
			v := vals[i*valueLen : (i+1)*valueLen : (i+1)*valueLen]
			binary.BigEndian.PutUint64(v[:8], uint64(it.at))
			if it.by.IsValid() {
				a := it.by.WithZone("").As16()
				copy(v[8:], a[:])
			}
			if err := b.Put(k[:], v); err != nil {
				return err
			}
		}
		// Deleting under a cursor can skip the next key: seek again after
		// each delete.
		limit := binary.BigEndian.AppendUint64(nil, uint64(now.UnixNano())+1)
		cur := b.Cursor()
		for k, _ := cur.First(); k != nil && bytes.Compare(k, limit) < 0; k, _ = cur.First() {
			if err := cur.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		st.errs.Add(1)
		msg := err.Error()
		st.lastErr.Store(&msg)
		return fmt.Errorf("jwt: write jti state file %s: %w", st.path, err)
	}
	st.writes.Add(1)
	return nil
}

// writer writes what Redeem queued, as soon as it can, until Close.
func (s *Source) writer() {
	st := s.state
	defer close(st.done)
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	var buf []savedItem
	for {
		select {
		case <-st.wake:
		case <-t.C:
		case <-st.quit:
			return
		}
		// Errors are counted (StateStats); the entries stay in memory.
		buf, _ = s.sync(buf, time.Now())
	}
}

// sync writes the queued entries and deletes the lapsed ones, returning
// the emptied batch for reuse.
func (s *Source) sync(buf []savedItem, now time.Time) ([]savedItem, error) {
	items := s.cache.takePending(buf)
	err := s.state.write(items, now)
	return items[:0], err
}

// kick wakes the writer without waiting.
func (s *Source) kick() {
	if s.state == nil {
		return
	}
	select {
	case s.state.wake <- struct{}{}:
	default:
	}
}

// StateStats describe the jti state file.
type StateStats struct {
	Path     string `json:"path"`
	Restored int    `json:"restored"` // jtis restored at start
	Writes   uint64 `json:"writes"`   // transactions committed
	Errors   uint64 `json:"errors"`   // transactions failed
	LastErr  string `json:"last_error,omitempty"`
	Unsaved  uint64 `json:"unsaved"` // jtis kept in memory only: the writer fell MaxEntries behind
}

// StateStats returns the state file's counters; the zero value without
// OpenState.
func (s *Source) StateStats() StateStats {
	st := s.state
	if st == nil {
		return StateStats{}
	}
	out := StateStats{Path: st.path, Restored: st.restored, Writes: st.writes.Load(), Errors: st.errs.Load()}
	if p := st.lastErr.Load(); p != nil {
		out.LastErr = *p
	}
	s.cache.mu.Lock()
	out.Unsaved = s.cache.unsaved
	s.cache.mu.Unlock()
	return out
}

// Close stops the writer, writes the jtis still queued as of now and
// closes the state file. Redeem keeps working in memory afterwards. It is
// safe to call more than once; without OpenState it does nothing.
func (s *Source) Close(now time.Time) error {
	st := s.state
	if st == nil {
		return nil
	}
	st.closeOnce.Do(func() {
		close(st.quit)
		<-st.done
		s.cache.mu.Lock()
		s.cache.persist = false
		s.cache.mu.Unlock()
		_, err := s.sync(nil, now)
		if cerr := st.db.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("jwt: close jti state file %s: %w", st.path, cerr))
		}
		st.closeErr = err
	})
	return st.closeErr
}
