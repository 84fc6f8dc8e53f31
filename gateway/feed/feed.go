// Package feed runs the pollers of `feed:` topic rules (docs/CONFIG.md): while a
// topic has at least one subscriber anywhere, its rule's URL is fetched
// every `every` and each good response is published to the topic. The
// first subscriber starts the poller, the last one leaving stops it, and
// there is exactly one poller per topic however many subscribe — the
// seed's per-subscription timers, done once.
//
// A response that is not 2xx, is larger than the cap, is not UTF-8 JSON,
// nests deeper than client data may or does not arrive in time publishes
// nothing and is audited (feed_failed). feed imports nothing from gateway:
// it publishes through a function.
package feed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// DefaultMaxBytes caps a feed response (1 MiB, the default message cap).
const DefaultMaxBytes = 1 << 20

// MaxDepth is the deepest feed response published, in levels of arrays
// and objects ("{}" is one): the depth a client's published data can have,
// its message envelope taking one of schema.DefaultMaxDepth.
const MaxDepth = schema.DefaultMaxDepth - 1

// Options wire a Runner.
type Options struct {
	Rules *topics.Set // where each topic's feed is configured
	// Publish publishes data to topic (gateway.Server.Publish, through
	// its broker); an error is audited as a failed poll.
	Publish  func(topic string, data []byte) (int, error)
	Audit    audit.Sink
	Log      *logrus.Logger
	Client   *http.Client // nil: a client with no redirects to other hosts and a per-poll timeout
	MaxBytes int          // response cap; 0: DefaultMaxBytes
	// Lease, in a cluster, lets one node at a time poll a topic
	// (lease.go); nil: this node polls every topic active here.
	Lease Lease
	// LeaseTTL is how long a poller's lease lasts unless renewed; 0:
	// DefaultLeaseTTL.
	LeaseTTL time.Duration
}

// Stats counts polls.
type Stats struct {
	Active   int    `json:"active"`   // topics being polled
	Polls    uint64 `json:"polls"`    // requests made
	Failures uint64 `json:"failures"` // polls that published nothing
}

// Runner owns the pollers. Active and Idle only signal (they are called
// from event loops under a lock); the polling happens on one goroutine
// per active topic. It is safe for concurrent use.
type Runner struct {
	o        Options
	rules    atomic.Pointer[topics.Set] // o.Rules, replaced by SetRules
	mu       sync.Mutex
	pollers  map[string]context.CancelFunc // guarded by mu
	wg       sync.WaitGroup
	closed   bool // guarded by mu
	polls    atomic.Uint64
	failures atomic.Uint64
}

// New returns a Runner.
func New(o Options) *Runner {
	if o.Audit == nil {
		o.Audit = audit.Discard{}
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Client == nil {
		o.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	r := &Runner{o: o, pollers: make(map[string]context.CancelFunc)}
	r.rules.Store(o.Rules)
	return r
}

// SetRules replaces the topic rules (a config reload): topics that become
// active from now on are polled as the new rules say; pollers running
// keep their URL and interval until their topic goes idle.
func (r *Runner) SetRules(rules *topics.Set) { r.rules.Store(rules) }

// Active starts topic's poller if its rule has a feed and none runs.
func (r *Runner) Active(topic string) {
	rule := r.rules.Load().Match(topic)
	if rule == nil || rule.Feed == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.pollers[topic] != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.pollers[topic] = cancel
	every := rule.Feed.Every
	if every <= 0 {
		every = topics.DefaultFeedEvery
	}
	r.wg.Add(1)
	if r.o.Lease != nil {
		go r.pollLeased(ctx, topic, rule.Feed.URL, every)
		return
	}
	go r.poll(ctx, topic, rule.Feed.URL, every)
}

// Idle stops topic's poller.
func (r *Runner) Idle(topic string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cancel := r.pollers[topic]; cancel != nil {
		cancel()
		delete(r.pollers, topic)
	}
}

// Close stops every poller and waits for them.
func (r *Runner) Close() {
	r.mu.Lock()
	r.closed = true
	for t, cancel := range r.pollers {
		cancel()
		delete(r.pollers, t)
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// Stats returns current counters.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	n := len(r.pollers)
	r.mu.Unlock()
	return Stats{Active: n, Polls: r.polls.Load(), Failures: r.failures.Load()}
}

func (r *Runner) poll(ctx context.Context, topic, url string, every time.Duration) {
	defer r.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		r.once(ctx, topic, url, every)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// once fetches url and publishes the body to topic.
func (r *Runner) once(ctx context.Context, topic, url string, every time.Duration) {
	if ctx.Err() != nil {
		return
	}
	r.polls.Add(1)
	data, why, err := r.fetch(ctx, url, min(every, 10*time.Second))
	if err != nil {
		if ctx.Err() != nil {
			return // stopped while fetching: nothing to report
		}
		r.failures.Add(1)
		r.o.Audit.Emit(audit.Event{Time: time.Now(), Event: audit.KindFeedFailed, Severity: audit.Warning,
			Stage: audit.StageSystem, Topic: topic, Reason: why, Detail: audit.Cap(err.Error())})
		r.o.Log.WithFields(logrus.Fields{"topic": topic, "reason": why.String()}).WithError(err).Warn("feed poll published nothing")
		return
	}
	if _, err := r.o.Publish(topic, data); err != nil {
		r.failures.Add(1)
		r.o.Audit.Emit(audit.Event{Time: time.Now(), Event: audit.KindFeedFailed, Severity: audit.Warning,
			Stage: audit.StageSystem, Topic: topic, Reason: reason.FeedPublish, Detail: audit.Cap(err.Error())})
		r.o.Log.WithField("topic", topic).WithError(err).Warn("feed poll fetched but could not publish")
	}
}

// fetch returns the body of a good response, or why there is none.
func (r *Runner) fetch(ctx context.Context, url string, timeout time.Duration) ([]byte, reason.Reason, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, reason.FeedRequest, fmt.Errorf("feed %s: %w", url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.o.Client.Do(req)
	if err != nil {
		return nil, reason.FeedUnreachable, fmt.Errorf("feed %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, reason.FeedStatus, fmt.Errorf("feed %s: HTTP %d", url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(r.o.MaxBytes)+1))
	if err != nil {
		return nil, reason.FeedUnreachable, fmt.Errorf("feed %s: read: %w", url, err)
	}
	if len(body) > r.o.MaxBytes {
		return nil, reason.FeedTooLarge, fmt.Errorf("feed %s: response over %d bytes", url, r.o.MaxBytes)
	}
	body = bytes.TrimSpace(body)
	// Relayed in text frames: a byte that is not UTF-8 would make every
	// browser subscribed drop its connection, and json.Valid accepts one
	// inside a string.
	if !utf8.Valid(body) {
		return nil, reason.FeedBadUTF8, fmt.Errorf("feed %s: response is not valid UTF-8", url)
	}
	if !json.Valid(body) {
		return nil, reason.FeedBadJSON, fmt.Errorf("feed %s: response is not JSON", url)
	}
	if !schema.DepthWithin(body, MaxDepth) {
		return nil, reason.FeedTooDeep, fmt.Errorf("feed %s: response nests deeper than %d levels of arrays and objects", url, MaxDepth)
	}
	return body, reason.None, nil
}
