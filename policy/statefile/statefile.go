// Package statefile opens the gateway's bbolt files (the bans' state.db,
// the alerts' outbox): mode 0600, a one-second lock timeout, errors that
// say what to do about a locked or corrupt file, and a format version kept
// in a meta bucket. It imports nothing from the project.
package statefile

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Spec describes one kind of state file.
type Spec struct {
	What    string   // for errors: "state db", "alerts file"
	Meta    []byte   // bucket holding the format version
	Version string   // format version this build writes and reads
	Buckets [][]byte // buckets created if missing
	Hint    string   // what a user can do about a corrupt file
}

var keyVersion = []byte("version")

// Open opens (or creates) the bbolt file at path, checks or records its
// format version and creates the buckets. bbolt panics on some corrupt
// pages: that becomes an error naming the file.
func Open(path string, s Spec) (_ *bolt.DB, err error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			err = fmt.Errorf("%w: file locked, is another portcullis using it?", err)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
			err = fmt.Errorf("%w: corrupt or not a %s; %s", err, s.What, s.Hint)
		}
		return nil, fmt.Errorf("open %s %s: %w", s.What, path, err)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("read %s %s: corrupt file: %v", s.What, path, r)
		}
		if err != nil {
			_ = db.Close()
		}
	}()
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(s.Meta)
		if err != nil {
			return err
		}
		switch v := meta.Get(keyVersion); {
		case v == nil:
			if err := meta.Put(keyVersion, []byte(s.Version)); err != nil {
				return err
			}
		case string(v) != s.Version:
			return fmt.Errorf("unsupported %s version %q (want %q)", s.What, v, s.Version)
		}
		for _, b := range s.Buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", s.What, path, err)
	}
	return db, nil
}
