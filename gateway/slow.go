package gateway

import (
	"bytes"

	"github.com/portcullis-gw/portcullis/policy/topics"
)

// enqueueEvent queues a publication's frame f of topic ts for c, applying
// the topic's slow-consumer policy when c's backlog is over its cap:
// disconnect closes c (1008, then reset); drop_oldest drops the oldest
// queued events of the topic until f fits; keep_latest drops every queued
// event of the topic, so only the newest is sent. Frames already being
// written, replies and control frames are never dropped; if f still does
// not fit, c is a slow consumer after all.
func (c *conn) enqueueEvent(ls *loopState, f []byte, ts *topicSubs) bool {
	limit := ls.rules().limits.WriteQueueBytes
	if c.fd >= 0 && c.state == stateOpen && c.queued() > 0 && int(c.queued())+len(f) > limit &&
		ts.policy != topics.Disconnect {
		keepLatest := ts.policy == topics.KeepLatest
		n := c.dropEvents(ts, keepLatest, limit-len(f))
		if n > 0 {
			ls.srv.droppedEvents.Add(uint64(n))
		}
	}
	return c.enqueue(ls, f, true)
}

// dropEvents removes queued event frames of topic ts, oldest first,
// until the backlog is at most room bytes (all of them with all). The head
// frame is kept when part of it is already written. It returns how many
// frames it dropped.
func (c *conn) dropEvents(ts *topicSubs, all bool, room int) int {
	b := c.out
	if b == nil {
		return 0
	}
	first := 0
	if b.off > 0 {
		first = 1
	}
	dropped := 0
	kept := b.frames[:first]
	prefix := c.codec().eventPrefix(c, ts)
	for i := first; i < len(b.frames); i++ {
		fr := b.frames[i]
		if (all || int(b.bytes) > room) && isEventOf(fr, prefix) {
			b.bytes -= int32(len(fr))
			dropped++
			continue
		}
		kept = append(kept, fr)
	}
	clear(b.frames[len(kept):])
	b.frames = kept
	return dropped
}

// isEventOf reports whether fr, a server frame (unmasked), is a text frame
// whose payload starts with prefix.
func isEventOf(fr []byte, prefix []byte) bool {
	if len(fr) < 2 || fr[0] != 0x81 {
		return false
	}
	hdr := 2
	switch fr[1] & 0x7f {
	case 126:
		hdr = 4
	case 127:
		hdr = 10
	}
	return len(fr) >= hdr && bytes.HasPrefix(fr[hdr:], prefix)
}
