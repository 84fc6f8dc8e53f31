//go:build linux

package app

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway"
	"github.com/portcullis-gw/portcullis/gateway/config"
	"github.com/portcullis-gw/portcullis/gateway/feed"
	"github.com/portcullis-gw/portcullis/gateway/metrics"
	"github.com/portcullis-gw/portcullis/gateway/tlsfront"
	"github.com/portcullis-gw/portcullis/policy/clientip"
	"github.com/portcullis-gw/portcullis/policy/origin"
	"github.com/portcullis-gw/portcullis/policy/schema"
	"github.com/portcullis-gw/portcullis/policy/topics"
)

// gatewayLink is how the parts built before the gateway (the guard, the
// feeds) reach it: set when the gateway is built, before anything starts,
// so every goroutine that uses it sees it set.
type gatewayLink struct {
	srv *gateway.Server
}

// Publish publishes through the gateway (feed pollers).
func (l *gatewayLink) Publish(topic string, data []byte) (int, error) {
	return l.srv.Publish(topic, data)
}

// rules are the gateway's live rules built from a config.
type rules struct {
	origins  *origin.Checker
	topics   *topics.Set
	data     map[string]schema.DataSchema
	clientIP *clientip.Resolver
}

func buildRules(cfg *config.Config, val *schema.Validator) (rules, error) {
	allowMissing := origin.DefaultAllowMissing
	if cfg.AllowMissingOrigin != nil {
		allowMissing = *cfg.AllowMissingOrigin
	}
	orig, err := origin.NewChecker(cfg.Origins, allowMissing)
	if err != nil {
		return rules{}, fmt.Errorf("origins: %w", err)
	}
	set, data, err := TopicRules(cfg, val)
	if err != nil {
		return rules{}, err // names topics[i] already
	}
	resolver, err := clientip.NewResolver(cfg.TrustedProxies, cfg.ClientIPHeader)
	if err != nil {
		return rules{}, fmt.Errorf("trusted_proxies: %w", err)
	}
	return rules{origins: orig, topics: set, data: data, clientIP: resolver}, nil
}

// gw is the gateway as a component, with the feed pollers of its topics.
// Its rules (topics, origins, trusted proxies, per-connection limits)
// change live through gateway.Server.Reload.
type gw struct {
	srv     *gateway.Server
	running bool // Run succeeded
	drained bool // Drain returned: the loops have stopped
	opts    gateway.Options
	val     *schema.Validator
	feeds   *feed.Runner
}

// gatewayParts are what the gateway is built on.
type gatewayParts struct {
	lns      *gateway.Listeners
	guard    gateway.Guard
	tokens   gateway.TokenSource
	healthy  func() bool
	sink     audit.Sink
	log      *logrus.Logger
	version  string
	messages *metrics.Messages
	// broker carries publications (the cluster's); nil: this node alone.
	broker gateway.Broker
	// clusterHealthy is gateway.Options.ClusterHealthy; nil: always.
	clusterHealthy func() bool
	// feedLease gives one node of the cluster each feed's poller; nil:
	// this node alone.
	feedLease feed.Lease
}

func buildGateway(cfg *config.Config, p gatewayParts, link *gatewayLink) (*gw, error) {
	val, err := schema.New(schema.Limits{MaxBytes: cfg.Limits.MaxMessageBytes})
	if err != nil {
		return nil, fmt.Errorf("schemas: %w", err)
	}
	r, err := buildRules(cfg, val)
	if err != nil {
		return nil, err
	}
	feeds := feed.New(feed.Options{Rules: r.topics, Audit: p.sink, Log: p.log, MaxBytes: cfg.Limits.MaxMessageBytes,
		Publish: link.Publish, Lease: p.feedLease})
	o := gateway.Options{
		Path:          cfg.Path,
		Version:       p.version,
		Listeners:     p.lns,
		Limits:        gateway.LimitsFrom(cfg.Limits),
		Guard:         p.guard,
		AuditHealthy:  p.healthy,
		ClientIP:      r.clientIP,
		ProxyProtocol: cfg.ProxyProtocol,
		WriteSyscalls: !cfg.IOURing,
		Origins:       r.origins,
		Topics:        r.topics,
		DataSchemas:   r.data,
		Feeds:         feeds,
		Tokens:        p.tokens,
		Messages:      p.messages,
		Broker:        p.broker,
		Schema:        val,
		Audit:         p.sink,
		Log:           p.log,
	}
	o.ClusterHealthy = p.clusterHealthy
	if cfg.TLS.CertFile != "" {
		v, err := tlsfront.ParseVersion(cfg.TLS.MinVersion)
		if err != nil {
			feeds.Close()
			return nil, err
		}
		o.TLS = &gateway.TLS{CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile, MinVersion: v}
	}
	srv, err := gateway.New(o)
	if err != nil {
		feeds.Close()
		return nil, err
	}
	link.srv = srv
	return &gw{srv: srv, opts: o, val: val, feeds: feeds}, nil
}

func (g *gw) name() string { return "gateway" }
func (g *gw) start() error {
	if err := g.srv.Run(); err != nil {
		return err
	}
	g.running = true
	return nil
}

// prepare builds the gateway's new rules when a key of theirs changed,
// and with wss:// loads the certificate pair again on every reload (the
// files are renewed in place, so no key needs to change). The apply puts
// the rules in force first, the only step that can fail, then the pair.
func (g *gw) prepare(next *config.Config, changed keySet) (func() error, error) {
	var pair *tlsfront.Pair
	if g.srv.TLSEnabled() {
		p, err := tlsfront.LoadPair(next.TLS.CertFile, next.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file: %w; the certificate in use stays", err)
		}
		pair = p
	}
	var o *gateway.Options
	var r rules
	if changed.any("origins", "allow_missing_origin", "trusted_proxies", "client_ip_header", "topics", "default", "limits") {
		var err error
		if r, err = buildRules(next, g.val); err != nil {
			return nil, err
		}
		no := g.opts
		no.Listeners = nil
		no.Origins, no.Topics, no.DataSchemas, no.ClientIP = r.origins, r.topics, r.data, r.clientIP
		no.Limits = gateway.LimitsFrom(next.Limits)
		o = &no
	}
	if o == nil && pair == nil {
		return nil, nil
	}
	return func() error {
		if o != nil {
			if err := g.srv.Reload(*o); err != nil {
				return err
			}
			g.opts = *o
			g.feeds.SetRules(r.topics)
		}
		if pair != nil {
			g.srv.UseTLSPair(pair)
		}
		return nil
	}, nil
}

// tlsDetail names the certificate the public listener serves, for the
// reload's audit line; empty without wss://.
func (g *gw) tlsDetail() string {
	leaf := g.srv.TLSCertificate()
	if leaf == nil {
		return ""
	}
	return "wss:// certificate " + certSummary(leaf)
}

// certSummary is a certificate as an operator recognizes it: serial
// (hex), subject and expiry.
func certSummary(leaf *x509.Certificate) string {
	return fmt.Sprintf("serial %x (%s), expires %s", leaf.SerialNumber, leaf.Subject.CommonName,
		leaf.NotAfter.UTC().Format(time.RFC3339))
}

// drain stops accepting and closes the clients over window; ctx done
// (a second signal) ends it at once.
func (g *gw) drain(ctx context.Context, window time.Duration) error {
	if !g.running {
		return nil
	}
	g.drained = true
	return g.srv.Drain(ctx, window)
}

// close stops the loops (after a drain, nothing is left to close) and the
// feed pollers.
func (g *gw) close() error {
	var err error
	switch {
	case !g.running:
		g.srv.Abandon()
	case !g.drained:
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err = g.srv.Shutdown(ctx)
	}
	g.feeds.Close()
	if err != nil {
		return fmt.Errorf("gateway: shutdown deadline passed; remaining connections reset: %w", err)
	}
	return nil
}
