package alerting

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/portcullis-gw/portcullis/policy/statefile"
)

// Layout of the alerts file (its own bbolt file, never shared with the
// bans' state.db): keys are outbox ids (16 hex digits, in queue order) and
// silence ids; values JSON.
var (
	bucketMeta     = []byte("alerting.meta")     // "version" → storeVersion
	bucketOutbox   = []byte("alerting.outbox")   // id → item
	bucketSilences = []byte("alerting.silences") // id → Silence
)

const storeVersion = "1"

// item is one delivery in the outbox: a notification for one destination
// (the mail, or one webhook), so that each is retried on its own.
type item struct {
	ID       string    `json:"id"`
	GroupKey string    `json:"group"`
	Dest     string    `json:"dest,omitempty"` // "": the mail; else a webhook's Dest()
	Rule     string    `json:"rule"`
	Summary  string    `json:"summary"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	Next     time.Time `json:"next"` // next attempt not before
	Attempts int       `json:"attempts"`
	LastErr  string    `json:"last_error,omitempty"`
	Msg      Message   `json:"msg"`
}

// store is the bbolt file. bbolt serializes writers itself; store adds no
// lock and is safe for use by multiple goroutines.
type store struct {
	db   *bolt.DB
	path string
}

func openStore(path string) (*store, error) {
	db, err := statefile.Open(path, statefile.Spec{What: "alerts file", Meta: bucketMeta, Version: storeVersion,
		Buckets: [][]byte{bucketOutbox, bucketSilences}, Hint: "move it aside to start with an empty outbox"})
	if err != nil {
		return nil, fmt.Errorf("alerting: %w", err)
	}
	return &store{db: db, path: path}, nil
}

func (s *store) close() error { return s.db.Close() }

// enqueue persists it under a new id, replacing any delivery of the same
// group to the same destination still waiting (one per group update: the
// newest supersedes). It returns the ids replaced.
func (s *store) enqueue(it *item) (replaced []string, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		it.ID = fmt.Sprintf("%016x", seq)
		it.Msg.ID = it.ID
		if it.GroupKey != "" {
			var old [][]byte
			err = b.ForEach(func(k, v []byte) error {
				var o item
				if json.Unmarshal(v, &o) == nil && o.GroupKey == it.GroupKey && o.Dest == it.Dest {
					old = append(old, slices.Clone(k))
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, k := range old {
				if err := b.Delete(k); err != nil {
					return err
				}
				replaced = append(replaced, string(k))
			}
		}
		v, err := json.Marshal(it)
		if err != nil {
			return err
		}
		return b.Put([]byte(it.ID), v)
	})
	if err != nil {
		return nil, fmt.Errorf("alerting: save to %s: %w", s.path, err)
	}
	return replaced, nil
}

// update saves it if it is still in the outbox (it may have been replaced
// meanwhile); ok reports whether it was.
func (s *store) update(it *item) (ok bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		if b.Get([]byte(it.ID)) == nil {
			return nil
		}
		ok = true
		v, err := json.Marshal(it)
		if err != nil {
			return err
		}
		return b.Put([]byte(it.ID), v)
	})
	if err != nil {
		err = fmt.Errorf("alerting: save to %s: %w", s.path, err)
	}
	return ok, err
}

func (s *store) remove(id string) error {
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketOutbox).Delete([]byte(id)) })
	if err != nil {
		err = fmt.Errorf("alerting: save to %s: %w", s.path, err)
	}
	return err
}

// pending returns the outbox in queue order; unreadable records are
// deleted and counted in bad.
func (s *store) pending() (its []item, bad int, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		var drop [][]byte
		err := b.ForEach(func(k, v []byte) error {
			var it item
			if json.Unmarshal(v, &it) != nil || it.ID != string(k) || !validStored(&it) {
				drop = append(drop, slices.Clone(k))
				return nil
			}
			its = append(its, it)
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		bad = len(drop)
		return nil
	})
	if err != nil {
		err = fmt.Errorf("alerting: read %s: %w", s.path, err)
	}
	return its, bad, err
}

// validStored checks a stored delivery before it is attempted again: the
// Subject is re-checked for control characters, as a tampered file must
// not inject headers either, and a webhook's body must still be JSON.
func validStored(it *item) bool {
	return it.Msg.Subject != "" && !hasCtl(it.Msg.Subject) && !it.Created.IsZero() && !it.Expires.IsZero() &&
		!strings.ContainsRune(it.Msg.ID, '\n') && !hasCtl(it.Dest) && (it.Dest == "" || json.Valid(it.Msg.JSON))
}

func (s *store) count() int {
	n := 0
	_ = s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketOutbox).Stats().KeyN
		return nil
	})
	return n
}

func (s *store) putSilence(sl Silence) error {
	v, err := json.Marshal(sl)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSilences).Put([]byte(sl.ID), v) })
	if err != nil {
		err = fmt.Errorf("alerting: save to %s: %w", s.path, err)
	}
	return err
}

func (s *store) removeSilence(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSilences).Delete([]byte(id)) })
}

func (s *store) loadSilences() ([]Silence, error) {
	var out []Silence
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSilences).ForEach(func(k, v []byte) error {
			var sl Silence
			if json.Unmarshal(v, &sl) == nil && sl.ID == string(k) && sl.valid() == nil {
				out = append(out, sl)
			}
			return nil
		})
	})
	if err != nil {
		err = fmt.Errorf("alerting: read %s: %w", s.path, err)
	}
	return out, err
}
