package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/gateway/reactor"
	"github.com/portcullis-gw/portcullis/policy/origin"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/tokens"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// BenchmarkSubscribePipeline measures the message stage (pipeline step 4, docs/ARCHITECTURE.md) for one
// subscribe: JSON size/depth caps and JSON Schema, then redeeming a fresh
// one-use token, then the topic rule ({userId} rule, as the worst case).
// Issue bar: ≤ 10 µs and ≤ 10 allocations per subscribe.
//
//	go test -run=^$ -bench=SubscribePipeline -benchmem ./gateway/
func BenchmarkSubscribePipeline(b *testing.B) {
	val, err := schema.New(schema.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	rules, err := topics.Compile([]topics.Rule{
		{Match: "news", Subscribe: topics.Public},
		{Match: "user.{userId}.**", Subscribe: topics.Token},
	}, topics.Deny)
	if err != nil {
		b.Fatal(err)
	}
	chk, err := origin.NewChecker(nil, true)
	if err != nil {
		b.Fatal(err)
	}
	store := tokens.NewStore(tokens.Options{TTL: time.Hour, MaxTTL: time.Hour})
	now := time.Now()
	const n = 1 << 16 // distinct tokens, reused round-robin by fresh connections
	payloads := make([][]byte, n)
	for i := range payloads {
		user := fmt.Sprint(1000 + i)
		tok, _, err := store.Mint(user, nil, time.Hour, now)
		if err != nil {
			b.Fatal(err)
		}
		payloads[i] = fmt.Appendf(nil, `{"op":"subscribe","id":%d,"topic":"user.%s.inbox","userId":%q,"token":%q}`, i, user, user, tok)
	}
	loop, err := reactor.New(0, nil)
	if err != nil {
		b.Fatal(err)
	}
	loop.Now = now
	o := Options{Schema: val, Topics: rules, Tokens: store, Guard: openGuard{}, Origins: chk}
	o.Limits.setDefaults()
	ls := &loopState{srv: &Server{opts: o}, loop: loop}
	if err := ls.srv.initRules(&o); err != nil {
		b.Fatal(err)
	}
	c := &conn{state: stateOpen}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Each iteration is a new connection presenting its token: the
		// first presentation of a token redeems it, later rounds of the
		// round-robin present it again on the same connection id.
		c.id = uint64(i%n) + 1
		c.grant = nil
		delete(ls.older, c.id)
		m, v := val.Check(payloads[i%n])
		if v != nil {
			b.Fatal(v.Message)
		}
		if a := c.authorize(ls, &m, nil); !a.Allowed() {
			b.Fatalf("subscribe refused: %v", a.Why())
		}
	}
}
