package blocklist

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultWatchInterval is how often Watch polls the list files when asked
// with a zero interval.
const DefaultWatchInterval = 30 * time.Second

// Set is the gateway's current deny list (config `bans.block` plus the
// files of `bans.block_files`) and allow list (`bans.allow`). Lookups read
// an atomic pointer and never wait for a reload; Reload and Watch replace
// the lists as a whole, and keep the old ones when a file is bad.
//
// Blocked and Allowed are independent: what an address on both lists
// means is the caller's decision.
//
// A Set is safe for simultaneous use by multiple goroutines.
type Set struct {
	block []netip.Prefix // from the config, parsed once
	paths []string

	mu  sync.Mutex            // serializes loads
	cur atomic.Pointer[lists] // never nil after NewSet
}

// lists is one generation of a Set's lists; immutable.
type lists struct {
	block, allow *List
	files        []FileStat
}

// NewSet parses the config's block and allow entries (CIDRs or bare
// addresses) and reads blockFiles (see addFiles). It reports every bad
// entry and line at once.
func NewSet(block, allow []string, blockFiles []string) (*Set, error) {
	var errs []error
	bp, err := parseAll("block entry", block)
	if err != nil {
		errs = append(errs, err)
	}
	ap, err := parseAll("allow entry", allow)
	if err != nil {
		errs = append(errs, err)
	}
	s := &Set{block: bp, paths: slices.Clone(blockFiles)}
	l, err := s.load(ListFrom(ap))
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("blocklist: %w", err)
	}
	s.cur.Store(l)
	return s, nil
}

// load reads the files and builds a generation with allow as its allow
// list.
func (s *Set) load(allow *List) (*lists, error) {
	var b builder
	for _, p := range s.block {
		b.add(p)
	}
	files, err := b.addFiles(s.paths)
	if err != nil {
		return nil, err
	}
	return &lists{block: b.build(), allow: allow, files: files}, nil
}

// Blocked reports whether a is on the deny list.
func (s *Set) Blocked(a netip.Addr) bool { return s.cur.Load().block.Contains(a) }

// Allowed reports whether a is on the allow list.
func (s *Set) Allowed(a netip.Addr) bool { return s.cur.Load().allow.Contains(a) }

// Reload re-reads the block files and replaces the deny list. On any
// error it keeps the current lists and returns the error.
func (s *Set) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.load(s.cur.Load().allow)
	if err != nil {
		return fmt.Errorf("blocklist: reload: %w", err)
	}
	s.cur.Store(l)
	return nil
}

// Watch polls the block files every interval (0 means
// DefaultWatchInterval) and reloads when one's size or modification time
// changed, or it appeared or vanished; onReload, if not nil, gets each
// reload's result. A failed reload keeps the old lists and is retried only
// once the files change again. Watch blocks until ctx is done; it returns
// at once if the Set has no files.
func (s *Set) Watch(ctx context.Context, interval time.Duration, onReload func(error)) {
	if len(s.paths) == 0 {
		return
	}
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	s.watch(ctx, t.C, onReload, nil)
}

// watch is Watch driven by tick; polled, if not nil, is called at the end
// of each poll (for tests).
func (s *Set) watch(ctx context.Context, tick <-chan time.Time, onReload func(error), polled func()) {
	tried := stamps(s.cur.Load().files)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		if now := s.stat(); !slices.Equal(now, tried) {
			tried = now
			err := s.Reload()
			if onReload != nil {
				onReload(err)
			}
		}
		if polled != nil {
			polled()
		}
	}
}

// stamp identifies a version of a file; size -1 means it could not be
// statted.
type stamp struct {
	size  int64
	mtime int64
}

func stamps(files []FileStat) []stamp {
	st := make([]stamp, len(files))
	for i, f := range files {
		st[i] = stamp{f.Size, f.ModTime.UnixNano()}
	}
	return st
}

func (s *Set) stat() []stamp {
	st := make([]stamp, len(s.paths))
	for i, p := range s.paths {
		fi, err := os.Stat(p)
		if err != nil {
			st[i] = stamp{size: -1}
			continue
		}
		st[i] = stamp{fi.Size(), fi.ModTime().UnixNano()}
	}
	return st
}

// Len is the number of prefixes on the deny list (config and files) and
// on the allow list.
func (s *Set) Len() (block, allow int) {
	l := s.cur.Load()
	return l.block.Len(), l.allow.Len()
}

// Files describes the block files as last loaded.
func (s *Set) Files() []FileStat { return slices.Clone(s.cur.Load().files) }

// AllowedWithin reports whether any allow-listed address lies inside p.
func (s *Set) AllowedWithin(p netip.Prefix) bool { return s.cur.Load().allow.Overlaps(p) }
