package bans

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Layout of the state file: three buckets, keys are prefixes in their
// netip text form ("198.51.100.0/24"), values JSON.
var (
	bucketMeta    = []byte("bans.meta")    // "version" → storeVersion
	bucketBans    = []byte("bans")         // prefix → banRecord
	bucketHistory = []byte("bans.history") // prefix → historyRecord
)

const storeVersion = "1"

// banRecord is a saved ban. Reason is a reason's name; records written
// before manual bans had a note hold a manual ban's free text there, which
// decodeBan reads back as reason.Manual with that note.
type banRecord struct {
	Until   time.Time `json:"until"`
	Reason  string    `json:"reason"`
	Note    string    `json:"note,omitempty"`
	Actor   string    `json:"actor"`
	Strikes int       `json:"strikes,omitempty"`
	Repeat  int       `json:"repeat,omitempty"`
	Created time.Time `json:"created"`
}

type historyRecord struct {
	Count  int       `json:"count"`
	Forget time.Time `json:"forget"`
}

// restore loads the state file as of now: bans still running and not
// allow-listed, history not yet forgotten. Stale and unreadable records are
// deleted. A file bbolt cannot read is an error naming the path.
func (m *Manager) restore(now time.Time) (err error) {
	defer func() {
		// bbolt panics on some corrupt pages rather than returning an error.
		if r := recover(); r != nil {
			err = fmt.Errorf("bans: read state db %s: corrupt file: %v", m.path, r)
		}
	}()
	err = m.db.Update(func(tx *bolt.Tx) error {
		// statefile.Open checked the version and made the buckets.
		bb, err := tx.CreateBucketIfNotExists(bucketBans)
		if err != nil {
			return err
		}
		hb, err := tx.CreateBucketIfNotExists(bucketHistory)
		if err != nil {
			return err
		}
		var drop [][]byte
		err = bb.ForEach(func(k, v []byte) error {
			b, ok := decodeBan(k, v)
			switch {
			case !ok || !now.Before(b.Until) || m.allowedKey(b.Prefix):
				drop = append(drop, k)
				m.restoreDropped++
			default:
				m.setBan(b)
				m.restored++
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			if err := bb.Delete(k); err != nil {
				return err
			}
		}
		drop = drop[:0]
		err = hb.ForEach(func(k, v []byte) error {
			p, err := netip.ParsePrefix(string(k))
			var h historyRecord
			if err != nil || json.Unmarshal(v, &h) != nil || h.Count < 0 || !now.Before(h.Forget) {
				drop = append(drop, k)
				return nil
			}
			m.setHistory(p, history{count: h.Count, forget: h.Forget})
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			if err := hb.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bans: read state db %s: %w", m.path, err)
	}
	return nil
}

// decodeBan parses one saved ban; ok is false for a record we cannot trust.
func decodeBan(k, v []byte) (*Ban, bool) {
	p, err := netip.ParsePrefix(string(k))
	if err != nil {
		return nil, false
	}
	if q, err := normalize(p); err != nil || q != p {
		return nil, false
	}
	var r banRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, false
	}
	if r.Actor == "" || checkText("actor", r.Actor) != nil || checkText("reason", r.Reason) != nil ||
		checkText("note", r.Note) != nil {
		return nil, false
	}
	why, ok := reason.Parse(r.Reason)
	note := r.Note
	if !ok {
		why, note = reason.Manual, r.Reason
	}
	return &Ban{
		Prefix:  p,
		Until:   r.Until,
		Reason:  why,
		Note:    note,
		Actor:   r.Actor,
		Strikes: r.Strikes,
		Repeat:  r.Repeat,
		Created: r.Created,
	}, true
}

// change is the state of one key to save: nil means delete.
type change struct {
	key  netip.Prefix
	k    string // key.String(), the bbolt key
	ban  *Ban
	hist *history
}

// flush writes the changed keys in one transaction. On failure the keys
// stay dirty for the next flush. Flushes are serialized by wmu, and each
// reads the state under mu, so the newest state is written last.
func (m *Manager) flush() error {
	if m.db == nil {
		return nil
	}
	m.wmu.Lock()
	defer m.wmu.Unlock()
	if m.dbClosed {
		return ErrClosed
	}
	m.mu.Lock()
	if len(m.dirty) == 0 {
		m.mu.Unlock()
		return nil
	}
	cs := make([]change, 0, len(m.dirty))
	for p := range m.dirty {
		c := change{key: p}
		if b := m.bans[p]; b != nil && !b.DryRun {
			c.ban = b
		}
		if h, ok := m.history[p]; ok {
			c.hist = &h
		}
		cs = append(cs, c)
	}
	clear(m.dirty)
	m.mu.Unlock()
	for i := range cs {
		cs[i].k = cs[i].key.String()
	}

	// bbolt inserts into a node's sorted slice and splits nodes only at
	// commit: sorted keys and bounded transactions keep a big batch linear.
	slices.SortFunc(cs, func(a, b change) int { return strings.Compare(a.k, b.k) })
	for len(cs) > 0 {
		n := min(len(cs), maxBatch)
		if err := m.db.Update(func(tx *bolt.Tx) error { return m.write(tx, cs[:n]) }); err != nil {
			err = fmt.Errorf("bans: save to state db %s: %w", m.path, err)
			m.mu.Lock()
			for _, c := range cs {
				if !m.closed {
					m.dirty[c.key] = struct{}{}
				}
			}
			m.persistErrors++
			m.lastPersistErr = err.Error()
			m.mu.Unlock()
			return err
		}
		cs = cs[n:]
	}
	return nil
}

// maxBatch is the most changes one bbolt transaction writes.
const maxBatch = 1024

// write saves cs in tx.
func (m *Manager) write(tx *bolt.Tx, cs []change) error {
	bb, hb := tx.Bucket(bucketBans), tx.Bucket(bucketHistory)
	if bb == nil || hb == nil {
		return errors.New("buckets missing")
	}
	for _, c := range cs {
		k := []byte(c.k)
		if err := putOrDelete(bb, k, c.ban != nil, func() any {
			return banRecord{Until: c.ban.Until, Reason: c.ban.Reason.String(), Note: c.ban.Note, Actor: c.ban.Actor,
				Strikes: c.ban.Strikes, Repeat: c.ban.Repeat, Created: c.ban.Created}
		}); err != nil {
			return err
		}
		if m.cfg.DryRun {
			continue // dry-run history is not saved, nor is saved history touched
		}
		if err := putOrDelete(hb, k, c.hist != nil, func() any {
			return historyRecord{Count: c.hist.count, Forget: c.hist.forget}
		}); err != nil {
			return err
		}
	}
	return nil
}

func putOrDelete(b *bolt.Bucket, k []byte, put bool, rec func() any) error {
	if !put {
		return b.Delete(k)
	}
	v, err := json.Marshal(rec())
	if err != nil {
		return err
	}
	return b.Put(k, v)
}
