package bans

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The enforced bans are indexed twice for Banned, which runs for every
// accepted connection on several goroutines:
//
//   - bans of client keys (IPv4 /32, IPv6 /IPv6Prefix: every automatic ban)
//     live in a sharded map, each shard behind its own RWMutex. A ban costs
//     O(1) however many there are, so a storm of a million bans stays
//     linear; a lookup costs one read lock of one of 256 shards.
//   - bans of any other prefix (manual CIDRs, rare) live in an immutable
//     snapshot behind an atomic pointer, rebuilt on each change.
//
// Counters let Banned return after two atomic loads when nothing is banned.

const numShards = 256

type shard struct {
	mu sync.RWMutex
	m  map[netip.Prefix]*Ban // enforced client-key bans; *Ban immutable
	_  [64 - 8 - 24]byte     // keep shards on separate cache lines
}

// keyIndex holds the enforced client-key bans. Writers hold Manager.mu.
type keyIndex struct {
	n      atomic.Int64 // bans held, ended ones not yet swept included
	shards [numShards]shard
}

func (x *keyIndex) shard(k netip.Prefix) *shard {
	a := k.Addr().As16()
	// The key's significant bytes: IPv4 in the last 4, an IPv6 prefix in
	// the first 8 (at most /64 matters for spreading).
	h := uint64(a[0])<<56 | uint64(a[1])<<48 | uint64(a[2])<<40 | uint64(a[3])<<32 |
		uint64(a[4])<<24 | uint64(a[5])<<16 | uint64(a[6])<<8 | uint64(a[7])
	h ^= uint64(a[12])<<24 | uint64(a[13])<<16 | uint64(a[14])<<8 | uint64(a[15])
	h *= 0x9E3779B97F4A7C15
	return &x.shards[h>>56]
}

func (x *keyIndex) get(k netip.Prefix) *Ban {
	s := x.shard(k)
	s.mu.RLock()
	b := s.m[k]
	s.mu.RUnlock()
	return b
}

// put adds or replaces k's ban. Requires Manager.mu.
func (x *keyIndex) put(b *Ban) {
	s := x.shard(b.Prefix)
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[netip.Prefix]*Ban)
	}
	if _, ok := s.m[b.Prefix]; !ok {
		x.n.Add(1)
	}
	s.m[b.Prefix] = b
	s.mu.Unlock()
}

// del removes k's ban. Requires Manager.mu.
func (x *keyIndex) del(k netip.Prefix) {
	s := x.shard(k)
	s.mu.Lock()
	if _, ok := s.m[k]; ok {
		delete(s.m, k)
		x.n.Add(-1)
	}
	s.mu.Unlock()
}

// cidrSnapshot is an immutable index of the enforced bans of prefixes that
// are not client keys.
type cidrSnapshot struct {
	m      map[netip.Prefix]*Ban
	v4bits []int // distinct IPv4 prefix lengths in m, longest first
	v6bits []int // distinct IPv6 prefix lengths in m, longest first
}

var emptyCIDRs = &cidrSnapshot{}

func buildCIDRs(all map[netip.Prefix]*Ban, isExact func(netip.Prefix) bool) *cidrSnapshot {
	s := &cidrSnapshot{m: make(map[netip.Prefix]*Ban)}
	for p, b := range all {
		if b.DryRun || isExact(p) {
			continue
		}
		s.m[p] = b
		bits := &s.v6bits
		if p.Addr().Is4() {
			bits = &s.v4bits
		}
		if !slices.Contains(*bits, p.Bits()) {
			*bits = append(*bits, p.Bits())
		}
	}
	if len(s.m) == 0 {
		return emptyCIDRs
	}
	slices.Sort(s.v4bits)
	slices.Reverse(s.v4bits)
	slices.Sort(s.v6bits)
	slices.Reverse(s.v6bits)
	return s
}

// lookup returns a ban in force at now whose prefix contains addr (already
// unmapped, without zone), or nil.
func (s *cidrSnapshot) lookup(addr netip.Addr, now time.Time) *Ban {
	bits := s.v6bits
	if addr.Is4() {
		bits = s.v4bits
	}
	for _, n := range bits {
		p, err := addr.Prefix(n)
		if err != nil {
			continue
		}
		if b := s.m[p]; b != nil && now.Before(b.Until) {
			return b
		}
	}
	return nil
}
