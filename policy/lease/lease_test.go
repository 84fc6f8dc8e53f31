package lease

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-gw/portcullis/policy/redistest"
)

func nodes(t *testing.T, names ...string) ([]*Redis, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{srv.Addr}, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	var out []*Redis
	for _, n := range names {
		out = append(out, &Redis{Client: c, Prefix: "pc:", Node: n, Timeout: 500 * time.Millisecond})
	}
	return out, srv
}

func TestHoldRenewRelease(t *testing.T) {
	ns, _ := nodes(t, "a", "b")
	a, b := ns[0], ns[1]
	ctx := context.Background()
	if held, holder, err := a.Hold(ctx, "feed:x", time.Minute); err != nil || !held || holder != "a" {
		t.Fatalf("a takes it: %v %q %v", held, holder, err)
	}
	if held, holder, err := b.Hold(ctx, "feed:x", time.Minute); err != nil || held || holder != "a" {
		t.Fatalf("b while a holds it: %v %q %v", held, holder, err)
	}
	// b's release of a's lease changes nothing.
	if err := b.Release(ctx, "feed:x"); err != nil {
		t.Fatal(err)
	}
	if held, _, _ := a.Hold(ctx, "feed:x", time.Minute); !held {
		t.Fatal("a lost its lease to b's release")
	}
	if err := a.Release(ctx, "feed:x"); err != nil {
		t.Fatal(err)
	}
	if held, holder, err := b.Hold(ctx, "feed:x", time.Minute); err != nil || !held || holder != "b" {
		t.Fatalf("b after a released: %v %q %v", held, holder, err)
	}
}

// A holder that stops renewing loses the lease when it runs out.
func TestTakeoverAfterExpiry(t *testing.T) {
	ns, _ := nodes(t, "a", "b")
	a, b := ns[0], ns[1]
	ctx := context.Background()
	if held, _, _ := a.Hold(ctx, "l", 100*time.Millisecond); !held {
		t.Fatal("a did not take it")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		held, holder, err := b.Hold(ctx, "l", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if held {
			break
		}
		if holder != "a" {
			t.Fatalf("holder %q", holder)
		}
		if time.Now().After(deadline) {
			t.Fatal("b never took the expired lease")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if held, holder, _ := a.Hold(ctx, "l", time.Minute); held || holder != "b" {
		t.Fatalf("a after the takeover: %v %q", held, holder)
	}
}

func TestMarks(t *testing.T) {
	ns, _ := nodes(t, "a", "b")
	ctx := context.Background()
	if _, ok, err := ns[1].Marked(ctx, "m"); err != nil || ok {
		t.Fatalf("unmarked: %v %v", ok, err)
	}
	if err := ns[0].Mark(ctx, "m", "a 123", time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := ns[1].Marked(ctx, "m"); err != nil || !ok || v != "a 123" {
		t.Fatalf("marked: %q %v %v", v, ok, err)
	}
}

func TestRedisDown(t *testing.T) {
	ns, srv := nodes(t, "a")
	srv.Stop()
	ctx := context.Background()
	if _, _, err := ns[0].Hold(ctx, "l", time.Second); err == nil || !strings.HasPrefix(err.Error(), "lease l: ") {
		t.Fatalf("Hold with Redis down: %v", err)
	}
	if _, _, err := ns[0].Marked(ctx, "m"); err == nil {
		t.Fatal("Marked with Redis down: no error")
	}
	if _, _, err := ns[0].Hold(ctx, "l", 0); err == nil {
		t.Fatal("ttl 0 accepted")
	}
}
