package gateway

import (
	"testing"
)

// Choosing a subscriber's frame allocates nothing once the publication is
// encoded for its protocol: the codec hands every subscriber the shared
// frame (a WAMP v1 subscription made with another string than the topic
// name excepted, which needs its own).
func TestEventFrameDoesNotAllocate(t *testing.T) {
	for pr := range protoCount {
		c := &conn{fd: 1, state: stateOpen, proto: pr}
		ts := &topicSubs{name: "news", conns: []*conn{c}}
		c.subs = subscriptions{{topic: ts}}
		p := newPublication("news", []byte(`{"n":1}`))
		first := c.codec().eventFrame(c, p, ts)
		var f []byte
		allocs := testing.AllocsPerRun(1000, func() { f = c.codec().eventFrame(c, p, ts) })
		if allocs != 0 || len(f) == 0 || &f[0] != &first[0] {
			t.Errorf("%s: %v allocations per subscriber, shared frame %v", protoNames[pr], allocs, len(f) > 0 && &f[0] == &first[0])
		}
	}
}
