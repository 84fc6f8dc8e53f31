package alerting

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/policy/lease"
	"github.com/portcullis-gw/portcullis/policy/redistest"
)

// clusterHarness is a harness whose engine shares group leases with other
// nodes through Redis.
func clusterHarness(t *testing.T, c redis.UniversalClient, node string, cfg Config, n Notifier) *harness {
	t.Helper()
	h := &harness{t: t, clk: &fakeClock{t: t0}, sink: &recSink{}, path: filepath.Join(t.TempDir(), node+".db"), cfg: cfg, n: n}
	e, err := Open(Options{Config: cfg, Path: h.path, Node: node, Notifier: n, Audit: h.sink, Log: quietLog(),
		Now: h.clk.Now, Jitter: func() float64 { return 0.5 }, Manual: true,
		Lease: &lease.Redis{Client: c, Prefix: "pc:", Node: node}})
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	t.Cleanup(func() { h.e.Close() })
	return h
}

func redisClient(t *testing.T) redis.UniversalClient {
	t.Helper()
	srv := redistest.Start(t)
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// An attack seen by three nodes fires the same group on each: one mail
// leaves the cluster, the other two nodes drop theirs as sent_by_other_node.
func TestClusterOneMailPerGroup(t *testing.T) {
	c := redisClient(t)
	var hs []*harness
	var recs []*recNotifier
	for _, node := range []string{"a", "b", "c"} {
		rec := &recNotifier{}
		recs = append(recs, rec)
		hs = append(hs, clusterHarness(t, c, node, Config{}, rec))
	}
	for i, h := range hs {
		for j := range 5 {
			h.e.Emit(ban(time.Duration(j)*time.Second, "10.0."+string(rune('0'+i))+"."+string(rune('0'+j))+"/32"))
		}
	}
	for d := time.Duration(0); d <= 2*time.Minute; d += 10 * time.Second {
		for _, h := range hs {
			h.at(d)
		}
	}
	total := 0
	for _, r := range recs {
		total += len(r.sent())
	}
	if total != 1 {
		t.Fatalf("%d mails from three nodes, want 1", total)
	}
	elsewhere := 0
	for _, h := range hs {
		elsewhere += h.sink.count(audit.KindAlertSent, "sent_by_other_node")
		if n := h.e.Stats().Pending; n != 0 {
			t.Fatalf("%d mails left in an outbox", n)
		}
	}
	if elsewhere != 2 {
		t.Fatalf("%d sent_by_other_node, want 2", elsewhere)
	}
	for _, h := range hs {
		h.sink.mu.Lock()
		evs := append([]audit.Event(nil), h.sink.evs...)
		h.sink.mu.Unlock()
		for _, e := range evs {
			if e.Reason.String() == "sent_by_other_node" && !strings.Contains(e.Detail, "node a sent a mail of this group") {
				t.Fatalf("detail %q", e.Detail)
			}
		}
	}
}

// hangingNotifier hangs in Notify until released, like a node that dies
// mid-send, then fails.
type hangingNotifier struct{ entered, release chan struct{} }

func (h *hangingNotifier) Notify(ctx context.Context, _ Message) (bool, error) {
	close(h.entered)
	<-h.release
	return true, errors.New("connection reset")
}

// The node holding a group's lease hangs mid-send: the other node's mail
// waits in its outbox, and is sent once the lease has run out.
func TestClusterHolderDiesMidSend(t *testing.T) {
	c := redisClient(t)
	cfg := Config{}
	cfg.SMTP.Timeout = 100 * time.Millisecond // a lease of 300 ms
	hang := &hangingNotifier{entered: make(chan struct{}), release: make(chan struct{})}
	a := clusterHarness(t, c, "a", cfg, hang)
	rec := &recNotifier{}
	b := clusterHarness(t, c, "b", cfg, rec)
	a.e.Emit(ban(0, "10.0.0.1/32"))
	b.e.Emit(ban(0, "10.0.0.2/32"))
	defer close(hang.release)
	go a.at(time.Minute) // a takes the lease and hangs in the send
	<-hang.entered
	b.at(time.Minute)
	if n := len(rec.sent()); n != 0 {
		t.Fatalf("b sent while a held the lease")
	}
	if n := b.e.Stats().Pending; n != 1 {
		t.Fatalf("b's outbox holds %d mails, want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for d := time.Minute; len(rec.sent()) == 0; d += 200 * time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatal("b never sent after a's lease ran out")
		}
		time.Sleep(20 * time.Millisecond)
		b.at(d)
	}
	if n := b.sink.count(audit.KindAlertSent, "sent"); n != 1 {
		t.Fatalf("b audited %d sent", n)
	}
}
