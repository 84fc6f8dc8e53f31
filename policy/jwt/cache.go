package jwttoken

import (
	"container/heap"
	"crypto/sha256"
	"crypto/subtle"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/tokens"
)

// replayCache remembers each redeemed jti — by its SHA-256, so an entry has
// a fixed size whatever the jti — with who redeemed it (tokens.Redemption:
// the connection, its client address, the time) and the digest of the
// token that carried it, until that token can no longer
// be valid (exp + leeway). A min-heap on that instant lets every call drop
// what has lapsed in O(log n) per entry, never a full scan: expired entries
// always make room before anything is refused.
//
// When full of live entries it refuses new jtis (reason.Internal) instead
// of evicting: an evicted, unexpired jti could be redeemed again by another
// connection, which is the one thing this table exists to prevent. Since
// no token is accepted with exp further than MaxTTL (+ leeway) ahead, the
// table holds at most the jtis redeemed in the last MaxTTL + 2×leeway, and
// capacity frees up as they lapse: to fill it an attacker must collect
// MaxEntries valid tokens (page views of the site) within that window; a
// site that legitimately issues more must raise MaxEntries or lower
// MaxTTL. A full table is an alarm (TableEvent), once per episode.
//
// Entries restored from the state file (OpenState) have conn 0, which no
// connection has: any presentation of their jti finds it spent, a replay
// or a theft as the recorded address tells (always a replay when the file
// did not record it).
type replayCache struct {
	max     int
	refused atomic.Uint64

	mu      sync.Mutex
	entries map[[sha256.Size]byte]redeemed // guarded by mu
	lapse   lapseHeap                      // guarded by mu
	full    bool                           // a full-table episode is running; guarded by mu
	persist bool                           // new entries are queued in pending; guarded by mu
	pending []savedItem                    // redeemed, not yet written to the state file; guarded by mu
	unsaved uint64                         // entries not queued because pending was at its cap; guarded by mu
}

// redeemed is a table entry: 64 bytes.
type redeemed struct {
	by     tokens.Redemption
	digest [sha256.Size]byte
}

func (c *replayCache) init(max int) {
	c.max = max
	c.entries = make(map[[sha256.Size]byte]redeemed)
}

// redeem binds jti to p and digest, or judges a new presentation of a
// bound jti by p of a token for sub (tokens.Redemption.Again; another
// token carrying the same jti on the redeeming connection is a replay).
// until is when the token stops being valid. ev is non-nil when the table
// just became full or just got room again.
func (c *replayCache) redeem(jti, digest [sha256.Size]byte, p tokens.Presenter, sub string, until, now time.Time) (res tokens.Result, ev *TableEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepLocked(now)
	ev = c.drainedLocked(now)
	if e, ok := c.entries[jti]; ok {
		res = e.by.Again(p, sub)
		if res.Reason == reason.None && subtle.ConstantTimeCompare(e.digest[:], digest[:]) != 1 {
			res = tokens.Result{Spent: tokens.Spent{By: e.by.By(), At: e.by.At()}, Reason: reason.TokenReplayed,
				Detail: tokens.DetailSameConnOther}
		}
		return res, ev
	}
	if len(c.entries) >= c.max {
		n := c.refused.Add(1)
		if !c.full {
			c.full = true
			ev = &TableEvent{Full: true, Held: len(c.entries), Max: c.max, Refused: n, At: now}
		}
		return tokens.Result{Reason: reason.Internal}, ev
	}
	by := tokens.NewRedemption(p, now)
	c.entries[jti] = redeemed{by: by, digest: digest}
	it := lapseItem{until: until.UnixNano(), jti: jti, at: now.UnixNano()}
	heap.Push(&c.lapse, it)
	if c.persist {
		if len(c.pending) < c.max {
			c.pending = append(c.pending, savedItem{lapseItem: it, by: by.By()})
		} else {
			c.unsaved++
		}
	}
	return tokens.Result{}, ev
}

// restore adds a jti redeemed before a restart, by the client address by
// (invalid: not recorded), bound to no connection.
func (c *replayCache) restore(it lapseItem, by netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[it.jti]; ok {
		return
	}
	c.entries[it.jti] = redeemed{by: tokens.RestoredRedemption(by, time.Unix(0, it.at))}
	heap.Push(&c.lapse, it)
}

// drainedLocked ends a full-table episode once the table is below nine
// tenths of its capacity (so that a table hovering at its cap does not
// raise an alarm per token). It requires that c.mu is held.
func (c *replayCache) drainedLocked(now time.Time) *TableEvent {
	if !c.full || len(c.entries) >= c.max-c.max/10 {
		return nil
	}
	c.full = false
	return &TableEvent{Full: false, Held: len(c.entries), Max: c.max, Refused: c.refused.Load(), At: now}
}

func (c *replayCache) sweep(now time.Time) (int, *TableEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.sweepLocked(now)
	return n, c.drainedLocked(now)
}

// sweepLocked drops the entries whose tokens have lapsed by now. It
// requires that c.mu is held.
func (c *replayCache) sweepLocked(now time.Time) int {
	n := 0
	t := now.UnixNano()
	for len(c.lapse) > 0 && c.lapse[0].until <= t {
		it := heap.Pop(&c.lapse).(lapseItem)
		delete(c.entries, it.jti)
		n++
	}
	return n
}

// takePending hands over the entries not yet written, reusing buf.
func (c *replayCache) takePending(buf []savedItem) []savedItem {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.pending
	c.pending = buf[:0]
	return out
}

func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// lapseItem says when the jti's entry may go (unix ns) and when it was
// redeemed. Each jti has one item: entries are never renewed.
type lapseItem struct {
	until int64
	at    int64
	jti   [sha256.Size]byte
}

// savedItem is a redeemed jti waiting to be written to the state file,
// with the client address that redeemed it (invalid when unknown).
type savedItem struct {
	lapseItem
	by netip.Addr
}

// lapseHeap is a min-heap on until (container/heap).
type lapseHeap []lapseItem

func (h lapseHeap) Len() int           { return len(h) }
func (h lapseHeap) Less(i, j int) bool { return h[i].until < h[j].until }
func (h lapseHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }

// Push appends x (heap.Interface).
func (h *lapseHeap) Push(x any) { *h = append(*h, x.(lapseItem)) }

// Pop removes the last item (heap.Interface).
func (h *lapseHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
