// Package lease gives one node of a cluster a task at a time: a lease is
// a Redis key holding the holder's node name, set only if absent and
// expiring unless renewed (SET NX PX), so that a holder that dies hands
// the task over once its lease runs out. Alert groups (one mail per group
// cluster-wide) and feed pollers (one poller per topic) use it, through
// interfaces of their own that Redis satisfies.
//
// Marks are the leases' companions: a value kept for a while under a
// name (an alert group's last mail), readable by every node.
//
// Every call is bounded by the Redis's timeout and does network I/O:
// never call it on an event loop. It imports nothing from gateway, audit
// or alerting.
package lease

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultTimeout bounds each call when Redis.Timeout is zero.
const DefaultTimeout = time.Second

// Redis is the Redis implementation of leases and marks. Its zero value
// is not usable: set every field but Timeout.
type Redis struct {
	Client  redis.UniversalClient
	Prefix  string        // key prefix (cluster.redis.key_prefix)
	Node    string        // this node's name: the value of the leases it holds
	Timeout time.Duration // bound of each call; 0: DefaultTimeout
}

func (r *Redis) leaseKey(name string) string { return r.Prefix + "lease:" + name }
func (r *Redis) markKey(name string) string  { return r.Prefix + "mark:" + name }

func (r *Redis) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	t := r.Timeout
	if t <= 0 {
		t = DefaultTimeout
	}
	return context.WithTimeout(ctx, t)
}

// holdScript takes the lease if it is free, or renews it if this node
// holds it. KEYS[1] the lease; ARGV node, ttl ms. It answers the holder.
var holdScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v
`)

// releaseScript deletes the lease if this node holds it.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// Hold takes the lease name for ttl, or renews it for ttl when this node
// holds it already. It reports whether this node holds it now and, when
// another does, which.
func (r *Redis) Hold(ctx context.Context, name string, ttl time.Duration) (held bool, holder string, err error) {
	if ttl < time.Millisecond {
		return false, "", fmt.Errorf("lease %s: ttl %s under 1 ms", name, ttl)
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	holder, err = holdScript.Run(ctx, r.Client, []string{r.leaseKey(name)}, r.Node, ttl.Milliseconds()).Text()
	if err != nil {
		return false, "", fmt.Errorf("lease %s: %w", name, err)
	}
	return holder == r.Node, holder, nil
}

// Release gives the lease name up if this node holds it, so that another
// node may take it at once.
func (r *Redis) Release(ctx context.Context, name string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	if err := releaseScript.Run(ctx, r.Client, []string{r.leaseKey(name)}, r.Node).Err(); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}

// Mark keeps value under name for ttl, replacing what was there.
func (r *Redis) Mark(ctx context.Context, name, value string, ttl time.Duration) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	if err := r.Client.Set(ctx, r.markKey(name), value, ttl).Err(); err != nil {
		return fmt.Errorf("mark %s: %w", name, err)
	}
	return nil
}

// Marked returns the value kept under name, and false when there is none
// (never marked, or expired).
func (r *Redis) Marked(ctx context.Context, name string) (string, bool, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	v, err := r.Client.Get(ctx, r.markKey(name)).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read mark %s: %w", name, err)
	}
	return v, true, nil
}
