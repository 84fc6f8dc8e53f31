package bans

import "net/netip"

// strike is one counted failure: when (Unix nanoseconds) and its weight.
type strike struct {
	at int64
	w  int32
}

// strikeEntry is the strike history of one key within FindTime, linked into
// the table's LRU list (most recently struck at the head).
type strikeEntry struct {
	key        netip.Prefix
	prev, next *strikeEntry
	last       int64    // newest strike, Unix nanoseconds
	events     []strike // within FindTime; at most MaxRetry (each weighs ≥ 1)
}

// strikeTable is a bounded map of strike entries with LRU eviction. It is
// not safe for concurrent use: the Manager calls it with mu held.
type strikeTable struct {
	max       int
	perEntry  int // most strikes an entry holds: MaxRetry
	m         map[netip.Prefix]*strikeEntry
	head      *strikeEntry // most recent
	tail      *strikeEntry // least recent
	evictions uint64
}

func newStrikeTable(max, perEntry int) *strikeTable {
	return &strikeTable{max: max, perEntry: perEntry, m: make(map[netip.Prefix]*strikeEntry)}
}

// get returns the entry for k, creating it (and evicting the least recently
// struck entry if the table is full), and moves it to the head.
func (t *strikeTable) get(k netip.Prefix) *strikeEntry {
	e := t.m[k]
	if e != nil {
		t.moveToFront(e)
		return e
	}
	if len(t.m) >= t.max && t.tail != nil {
		// Reuse the evicted entry: a spray of new addresses allocates nothing.
		e = t.tail
		t.unlink(e)
		delete(t.m, e.key)
		t.evictions++
		e.events = e.events[:0]
		e.last = 0
	} else {
		e = &strikeEntry{events: make([]strike, 0, min(t.perEntry, 8))}
	}
	e.key = k
	t.m[k] = e
	t.pushFront(e)
	return e
}

// remove drops k's entry if present.
func (t *strikeTable) remove(k netip.Prefix) {
	if e := t.m[k]; e != nil {
		t.unlink(e)
		delete(t.m, k)
	}
}

// removeOverlapping drops every entry whose key overlaps p.
func (t *strikeTable) removeOverlapping(p netip.Prefix) {
	for k := range t.m {
		if k.Overlaps(p) {
			t.remove(k)
		}
	}
}

// expire drops entries whose newest strike is at or before cutoff, walking
// from the least recently struck end.
func (t *strikeTable) expire(cutoff int64) {
	for e := t.tail; e != nil && e.last <= cutoff; e = t.tail {
		t.unlink(e)
		delete(t.m, e.key)
	}
}

func (t *strikeTable) pushFront(e *strikeEntry) {
	e.prev, e.next = nil, t.head
	if t.head != nil {
		t.head.prev = e
	}
	t.head = e
	if t.tail == nil {
		t.tail = e
	}
}

func (t *strikeTable) unlink(e *strikeEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		t.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		t.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (t *strikeTable) moveToFront(e *strikeEntry) {
	if t.head == e {
		return
	}
	t.unlink(e)
	t.pushFront(e)
}

// add records a strike of weight w at time at in e, drops strikes at or
// before cutoff, and returns the weight still in the window.
func (e *strikeEntry) add(at, cutoff int64, w int32) int {
	kept := e.events[:0]
	sum := 0
	for _, s := range e.events {
		if s.at > cutoff {
			kept = append(kept, s)
			sum += int(s.w)
		}
	}
	// kept holds fewer than MaxRetry strikes (each weighs ≥ 1 and the sum
	// was below MaxRetry, or the entry would have been removed by a ban):
	// an entry never holds more than MaxRetry strikes.
	e.events = append(kept, strike{at: at, w: w})
	if at > e.last {
		e.last = at
	}
	return sum + int(w)
}
