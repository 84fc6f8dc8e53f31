package jwttoken

import (
	"container/heap"
	"crypto/sha256"
	"crypto/subtle"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis-gw/portcullis/policy/reason"
)

// replayCache remembers each redeemed jti — by its SHA-256, so an entry has
// a fixed size whatever the jti — with the connection that redeemed it and
// the digest of the token that carried it, until that token can no longer
// be valid (exp + leeway). A min-heap on that instant lets every call drop
// what has lapsed in O(log n) per entry, never a full scan.
//
// When full it refuses new jtis (reason.Internal) instead of evicting: an
// evicted, unexpired jti could be redeemed again by another connection,
// which is the one thing this cache exists to prevent. Capacity frees up as
// entries lapse, at the latest MaxTTL + leeway after they were added; a
// site that legitimately mints more than MaxEntries tokens per MaxTTL must
// raise MaxEntries. Refusals are counted (Source.Refused).
type replayCache struct {
	max     int
	refused atomic.Uint64

	mu      sync.Mutex
	entries map[[sha256.Size]byte]redeemed // guarded by mu
	lapse   lapseHeap                      // guarded by mu
}

type redeemed struct {
	conn   uint64
	digest [sha256.Size]byte
}

func (c *replayCache) init(max int) {
	c.max = max
	c.entries = make(map[[sha256.Size]byte]redeemed)
}

// redeem binds jti to conn and digest, or checks an existing binding.
// until is when the token stops being valid.
func (c *replayCache) redeem(jti, digest [sha256.Size]byte, conn uint64, until, now time.Time) reason.Reason {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepLocked(now)
	if e, ok := c.entries[jti]; ok {
		if e.conn == conn && subtle.ConstantTimeCompare(e.digest[:], digest[:]) == 1 {
			return reason.None
		}
		return reason.TokenReplayed
	}
	if len(c.entries) >= c.max {
		c.refused.Add(1)
		return reason.Internal
	}
	c.entries[jti] = redeemed{conn: conn, digest: digest}
	heap.Push(&c.lapse, lapseItem{until: until.UnixNano(), jti: jti})
	return reason.None
}

func (c *replayCache) sweep(now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sweepLocked(now)
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

func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// lapseItem says when the jti's entry may go (unix ns). Each jti has one
// item: entries are never renewed.
type lapseItem struct {
	until int64
	jti   [sha256.Size]byte
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
