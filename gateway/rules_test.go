package gateway

import (
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// swapRules changes the rules for new messages at once, while live
// connections keep their subscriptions and their deliveries.
func TestSwapRules(t *testing.T) {
	s, store, rec := startWAMPServer(t)
	w := dialProto(t, s, "portcullis.v1")
	w.recv() // welcome
	tok := mint(t, store, "u1", "news")
	w.send(`{"op":"subscribe","id":1,"topic":"news","userId":"u1","token":"` + tok + `"}`)
	if b := w.recv(); !strings.Contains(string(b), "subscribed") {
		t.Fatalf("subscribe news: %q", b)
	}
	w.send(`{"op":"subscribe","id":2,"topic":"later"}`)
	if b := w.recv(); !strings.Contains(string(b), `"forbidden"`) {
		t.Fatalf("subscribe later before the swap: %q", b)
	}

	set, err := topics.Compile([]topics.Rule{{Match: "later", Subscribe: topics.Public}}, topics.Deny)
	if err != nil {
		t.Fatal(err)
	}
	o := s.opts
	o.Topics = set
	o.Limits.MaxSubscriptionsConn = 2
	if err := s.swapRules(&o); err != nil {
		t.Fatal(err)
	}
	w.send(`{"op":"subscribe","id":3,"topic":"later"}`)
	if b := w.recv(); !strings.Contains(string(b), "subscribed") {
		t.Fatalf("subscribe later after the swap: %q", b)
	}
	// news is no longer in the rules, but the live subscription stays.
	if n, err := s.Publish("news", []byte(`{"n":1}`)); err != nil || n != 1 {
		t.Fatalf("publish news: %d %v", n, err)
	}
	if b := w.recv(); !strings.Contains(string(b), `"topic":"news"`) {
		t.Fatalf("event: %q", b)
	}
	// The new per-connection cap applies to the next subscription.
	w.send(`{"op":"subscribe","id":4,"topic":"later.x"}`)
	if b := w.recv(); !strings.Contains(string(b), `"forbidden"`) {
		t.Fatalf("third subscription under a cap of 2: %q", b)
	}
	rec.find(t, audit.KindSubscribeDenied, "too_many_subscriptions")

	bad := o
	bad.Topics = nil
	if err := s.swapRules(&bad); err == nil {
		t.Fatal("rules without topics swapped in")
	}
	if s.rules.Load().topics != set {
		t.Fatal("a refused swap changed the rules")
	}
}
