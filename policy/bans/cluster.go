package bans

import (
	"net/netip"
	"time"
)

// Bans in a cluster.
//
// Strikes stay per node; bans are shared. A Manager that Replicate was
// called on hands every ban it creates (by strikes or by Add) and every
// ban it lifts (Remove) to the channel Replicate returns, for the cluster
// sync (policy/bans/redisbans) to write to Redis and announce to the other
// nodes. Bans that come from other nodes are applied with Apply and
// ApplyRemove, which enforce and save them like local ones but hand
// nothing back to the channel, so that nothing echoes. Expiry needs no
// message: every node ends a ban at its Until.

// Change is a ban created or lifted on this node, for the other nodes.
type Change struct {
	Ban     Ban
	Removed bool // the ban was lifted (Remove); false: created or replaced
}

// Replicate makes m hand its changes to the returned channel, which holds
// up to capacity of them; a change that finds it full is dropped and
// counted (ReplicationDropped), so that a strike on an event loop never
// waits for the network. Call it once, before m is used.
func (m *Manager) Replicate(capacity int) <-chan Change {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.changes == nil {
		m.changes = make(chan Change, max(capacity, 1))
	}
	return m.changes
}

// ReplicationDropped is how many changes found the Replicate channel full.
func (m *Manager) ReplicationDropped() uint64 { return m.changesDropped.Load() }

// replicate hands b to the cluster, never blocking. Requires mu.
func (m *Manager) replicate(b *Ban, removed bool) {
	if m.changes == nil || b.DryRun {
		return
	}
	select {
	case m.changes <- Change{Ban: *b, Removed: removed}:
	default:
		m.changesDropped.Add(1)
	}
}

// Apply enforces b, a ban another node created, as of now, and saves it
// with the others: it survives a restart of this node. It reports whether
// it changed anything: a ban that has ended, a dry-run ban, one of an
// allow-listed client key, an invalid prefix or the very ban already held
// (same prefix, same Until) change nothing, and so does what Add would
// refuse: a prefix broader than MinBitsIPv4/MinBitsIPv6, a note or actor
// that is not clean text. Strikes inside the prefix are
// cleared; the repeat history is not touched (the creating node keeps its
// own).
func (m *Manager) Apply(b Ban, now time.Time) bool {
	p, err := normalize(b.Prefix)
	if err != nil || b.DryRun || !now.Before(b.Until) || m.allowedKey(p) ||
		p.Bits() < MinBitsIPv4 || (p.Addr().Is6() && p.Bits() < MinBitsIPv6) ||
		checkText("note", b.Note) != nil || checkActor(b.Actor) != nil {
		return false
	}
	b.Prefix = p
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	if old := m.bans[p]; old != nil && !old.DryRun && old.Until.Equal(b.Until) {
		return false
	}
	nb := b
	m.setBan(&nb)
	m.clearStrikes(p)
	m.publish(&nb)
	m.markDirty(p)
	m.kick()
	return true
}

// ApplyRemove lifts the ban of exactly p that another node lifted. It
// reports whether a ban in force at now was lifted here.
func (m *Manager) ApplyRemove(p netip.Prefix, now time.Time) bool {
	p, err := normalize(p)
	if err != nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	b := m.bans[p]
	m.clearStrikes(p)
	if b == nil {
		return false
	}
	delete(m.bans, p)
	if !b.DryRun {
		m.unpublish(b)
		m.markDirty(p)
		m.kick()
	}
	return now.Before(b.Until)
}
