package gateway

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/portcullis-gw/portcullis/gateway/native"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

func topicFor(name string, p topics.Policy) *topicSubs {
	return &topicSubs{name: name, policy: p, prefix: native.AppendString([]byte(`{"op":"event","topic":`), name)}
}

func queue(c *conn, frames ...[]byte) {
	ls := &loopState{}
	for _, f := range frames {
		c.push(ls, f)
	}
}

func TestDropEvents(t *testing.T) {
	ev := func(topic string, i int) []byte {
		return newPublication(topic, []byte(fmt.Sprintf(`{"n":%d}`, i))).frame(protoNative)
	}
	reply := []byte("\x81\x05reply")
	news, other := topicFor("news", topics.DropOldest), topicFor("news2", topics.KeepLatest)

	// drop_oldest: the oldest events of the topic go first, until it fits;
	// other topics' events and replies stay.
	c := &conn{state: stateOpen}
	queue(c, ev("news", 1), reply, ev("news2", 1), ev("news", 2), ev("news", 3))
	room := int(c.queued()) - 2*len(ev("news", 1))
	if n := c.dropEvents(news, false, room); n != 2 {
		t.Fatalf("drop_oldest dropped %d, want 2", n)
	}
	if q := c.out.frames; len(q) != 3 || !bytes.Equal(q[0], reply) || !bytes.Equal(q[1], ev("news2", 1)) || !bytes.Equal(q[2], ev("news", 3)) {
		t.Fatalf("queue after drop_oldest: %q", q)
	}

	// keep_latest: every queued event of the topic goes; a head frame
	// already partly written stays.
	c = &conn{state: stateOpen}
	queue(c, ev("news2", 1), ev("news2", 2), ev("news", 1), ev("news2", 3))
	c.out.off = 3
	if n := c.dropEvents(other, true, 0); n != 2 {
		t.Fatalf("keep_latest dropped %d, want 2", n)
	}
	if q := c.out.frames; len(q) != 2 || !bytes.Equal(q[0], ev("news2", 1)) || !bytes.Equal(q[1], ev("news", 1)) {
		t.Fatalf("queue after keep_latest: %q", q)
	}
	var sum int32
	for _, f := range c.out.frames {
		sum += int32(len(f))
	}
	if sum != c.queued() {
		t.Fatalf("queued %d, frames hold %d", c.queued(), sum)
	}
	// A topic whose name is a prefix of another's is not confused with it.
	if isEventOf(ev("news2", 1), news.prefix) {
		t.Fatal("news2 event taken for a news event")
	}
}
