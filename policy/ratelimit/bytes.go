package ratelimit

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// InboundConfig sizes an Inbound table. Byte counts are in bytes.
type InboundConfig struct {
	// HeldPerKey caps the inbound bytes one counted address may have held
	// (unfinished messages, per-connection tables) across all its
	// connections at once; > 0.
	HeldPerKey int64
	// HeldTotal caps the inbound bytes held for all addresses together;
	// >= HeldPerKey.
	HeldTotal int64
	// Rate is the inbound byte rate of one counted address: PerSecond
	// bytes per second on average and Burst bytes at once from a full
	// bucket. A disabled Rate (PerSecond <= 0) does not limit the rate.
	Rate Rate
}

// Inbound accounts the inbound bytes of every counted address: how many
// the gateway holds for it (a budget per address and one in all) and how
// fast it sends (a token bucket in bytes). Safe for concurrent use: every
// event loop calls it. Keys are counted prefixes (clientip.Key).
//
// An address costs an entry only while it holds bytes or its byte bucket
// is not full; idle entries are swept as new ones arrive, so the table
// grows with the addresses active in the last Burst/PerSecond seconds, not
// with every address ever seen.
type Inbound struct {
	cfg    InboundConfig
	held   atomic.Int64 // bytes held in all
	seed   [2]uint64
	shards [inboundShards]inboundShard
}

const inboundShards = 64

// minSweep is the entry count below which a shard is never swept.
const minSweep = 256

type inboundShard struct {
	mu      sync.Mutex
	m       map[netip.Prefix]*inboundEntry
	sweepAt int
	nowNS   int64    // the latest time Take saw, unix nanoseconds
	_       [32]byte // keep shards on separate cache lines
}

type inboundEntry struct {
	held   int64   // bytes held for this address
	used   float64 // bytes taken from the bucket and not yet refilled
	lastNS int64   // when used was computed, unix nanoseconds
}

// NewInbound returns an empty table for cfg.
func NewInbound(cfg InboundConfig) (*Inbound, error) {
	switch {
	case cfg.HeldPerKey <= 0:
		return nil, errors.New("ratelimit: inbound bytes held per address must be positive")
	case cfg.HeldTotal < cfg.HeldPerKey:
		return nil, fmt.Errorf("ratelimit: inbound bytes held in all (%d) below the per-address cap (%d)", cfg.HeldTotal, cfg.HeldPerKey)
	}
	if err := cfg.Rate.Validate(); err != nil {
		return nil, err
	}
	t := &Inbound{cfg: cfg}
	var b [16]byte
	_, _ = rand.Read(b[:])
	t.seed = [2]uint64{binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])}
	for i := range t.shards {
		t.shards[i].m = make(map[netip.Prefix]*inboundEntry)
		t.shards[i].sweepAt = minSweep
	}
	return t, nil
}

// HoldVerdict is the outcome of Inbound.Hold.
type HoldVerdict uint8

const (
	// HoldOK: the bytes are held.
	HoldOK HoldVerdict = iota
	// HoldOverKey: the address would exceed its own budget; nothing held.
	HoldOverKey
	// HoldOverTotal: all addresses together would exceed the global
	// budget; nothing held.
	HoldOverTotal
)

// Hold records n more bytes held for key if both budgets allow them, and
// reports which one refused them otherwise (nothing is then held). n <= 0
// is always accepted; a negative n releases like Release.
func (t *Inbound) Hold(key netip.Prefix, n int64) HoldVerdict {
	if n <= 0 {
		t.Release(key, -n)
		return HoldOK
	}
	if t.held.Add(n) > t.cfg.HeldTotal {
		t.held.Add(-n)
		return HoldOverTotal
	}
	s := t.shard(key)
	s.mu.Lock()
	e := t.getLocked(s, key)
	if e.held+n > t.cfg.HeldPerKey {
		s.mu.Unlock()
		t.held.Add(-n)
		return HoldOverKey
	}
	e.held += n
	s.mu.Unlock()
	return HoldOK
}

// Release gives back n bytes held for key (n <= what Hold took).
func (t *Inbound) Release(key netip.Prefix, n int64) {
	if n <= 0 {
		return
	}
	s := t.shard(key)
	s.mu.Lock()
	if e := s.m[key]; e != nil {
		n = min(n, e.held)
		e.held -= n
		t.held.Add(-n)
	}
	s.mu.Unlock()
}

// Held is how many bytes key holds now.
func (t *Inbound) Held(key netip.Prefix) int64 {
	s := t.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[key]; e != nil {
		return e.held
	}
	return 0
}

// HeldTotal is how many bytes all addresses hold now.
func (t *Inbound) HeldTotal() int64 { return t.held.Load() }

// Take takes n bytes read from key at now from its byte bucket and
// reports whether the bucket had them; refused bytes are not taken. A
// disabled rate allows everything and touches no entry.
func (t *Inbound) Take(key netip.Prefix, n int, now time.Time) bool {
	r := t.cfg.Rate
	if !r.Enabled() || n <= 0 {
		return true
	}
	ns := now.UnixNano()
	s := t.shard(key)
	s.mu.Lock()
	s.nowNS = max(s.nowNS, ns)
	e := t.getLocked(s, key)
	used := t.refilled(e, ns)
	ok := used+float64(n) <= float64(r.Burst)
	if ok {
		used += float64(n)
	}
	e.used, e.lastNS = used, ns
	s.mu.Unlock()
	return ok
}

// Len is the number of addresses with an entry.
func (t *Inbound) Len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// refilled is e's bucket usage at ns.
func (t *Inbound) refilled(e *inboundEntry, ns int64) float64 {
	if e.used == 0 {
		return 0
	}
	d := ns - e.lastNS
	if d <= 0 {
		return e.used
	}
	return max(e.used-float64(d)/float64(time.Second)*t.cfg.Rate.PerSecond, 0)
}

// getLocked returns key's entry, creating it; a shard that has grown past
// its sweep mark first drops its idle entries (nothing held, bucket full
// at the latest time the shard saw). Requires s.mu.
func (t *Inbound) getLocked(s *inboundShard, key netip.Prefix) *inboundEntry {
	if e := s.m[key]; e != nil {
		return e
	}
	if len(s.m) >= s.sweepAt {
		for k, e := range s.m {
			if e.held == 0 && t.refilled(e, s.nowNS) == 0 {
				delete(s.m, k)
			}
		}
		s.sweepAt = max(2*len(s.m), minSweep)
	}
	e := &inboundEntry{}
	s.m[key] = e
	return e
}

// Sweep drops the entries that hold nothing and whose byte bucket is full
// at now, and returns how many it dropped. Call it now and then (a
// minute's tick); a growing shard is also swept as entries are added.
func (t *Inbound) Sweep(now time.Time) int {
	ns := now.UnixNano()
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if e.held == 0 && t.refilled(e, ns) == 0 {
				delete(s.m, k)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// shard is a keyed hash of key, so that nobody can aim keys at one shard.
func (t *Inbound) shard(key netip.Prefix) *inboundShard {
	a := key.Addr().As16()
	hi := binary.BigEndian.Uint64(a[:8]) ^ t.seed[0]
	lo := binary.BigEndian.Uint64(a[8:]) ^ t.seed[1] ^ uint64(key.Bits())
	h1, h0 := bits.Mul64(hi, lo)
	return &t.shards[(h1^h0)%inboundShards]
}
