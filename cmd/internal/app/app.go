//go:build linux

package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/alerting"
	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway"
	"github.com/portcullis-gw/portcullis/gateway/admin"
	"github.com/portcullis-gw/portcullis/gateway/cluster"
	"github.com/portcullis-gw/portcullis/gateway/config"
	"github.com/portcullis-gw/portcullis/gateway/feed"
	"github.com/portcullis-gw/portcullis/gateway/metrics"
	"github.com/portcullis-gw/portcullis/policy/guard"
)

// Options are what the command line adds to the config.
type Options struct {
	ConfigPath string    // the file, re-read on every reload; empty: the embedded defaults
	DataDir    string    // --data: overrides data_dir, at start and on every reload
	LogLevel   string    // --log-level: overrides log_level at start; empty: the config's
	Version    string    // reported in welcome frames and the trail
	Stderr     io.Writer // start-up lines and the operational log; nil: os.Stderr
	// PaceGC sets the Go GC target and moves it with the allocation rate
	// (gcpace.go); false leaves the target alone (GOGC is set).
	PaceGC bool
}

// component is one part of the running gateway, with one life: built
// from the config (its constructor), started, reloaded, closed.
type component interface {
	name() string
	// start starts its goroutines; it is called once, in build order.
	start() error
	// prepare builds what the changed keys of next change in it, without
	// changing anything, and returns the function that applies it (nil:
	// nothing of it changed). A reload applies only once every prepare
	// has succeeded.
	prepare(next *config.Config, changed keySet) (apply func() error, err error)
	// close stops it and releases its files; it is called once, in
	// reverse build order, also when start was not.
	close() error
}

// App is a running gateway.
type App struct {
	o    Options
	log  *logrus.Logger
	host string

	mu  sync.Mutex     // serializes reloads
	cfg *config.Config // in force; guarded by mu

	drain atomic.Int64 // time.Duration: shutdown.drain in force

	dirLock  *dirLock
	portLock *portLock
	lns      *gateway.Listeners
	adminLn  net.Listener

	trail  *trail
	alerts *alerts
	sink   audit.Durable // tee: the trail and the alert engine
	tokens *tokenComp
	pipe   *pipeline
	gw     *gw
	api    *adminAPI

	// cluster is the membership of a cluster (cluster.go); its node is
	// nil without a `cluster:` block.
	cluster *clusterComp

	// metrics counts every event of sink and serves GET /metrics.
	metrics *metrics.Metrics

	// built is every component in build order.
	built []component
}

// Serve runs the gateway until SIGTERM or SIGINT: it takes the data-dir
// and listen-address locks, binds the sockets, builds and starts every
// component, reloads on SIGHUP, and drains and closes on a stop signal.
// An error means it did not start, or did not stop cleanly.
func Serve(cfg *config.Config, o Options) error {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	a := &App{o: o, cfg: cfg}
	// Signals are caught before the gateway says it is up, so that a
	// SIGTERM right after that line still stops it cleanly.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	if err := a.open(); err != nil {
		a.close()
		return err
	}
	if err := a.start(); err != nil {
		a.emit(audit.Event{Event: audit.KindAdmin, Severity: audit.Warning, Stage: audit.StageSystem, Actor: "serve",
			Detail: audit.Cap("gateway failed to start: " + err.Error())})
		a.close()
		return err
	}
	s := <-sig
	for s == syscall.SIGHUP {
		if _, err := a.Reload("SIGHUP"); err != nil {
			a.log.WithError(err).Error("reload refused; the old config stays in force")
		}
		s = <-sig
	}
	return a.stop(s, sig)
}

// open takes the locks, binds the sockets, then builds every component
// in dependency order. Nothing is written to the data dir before the lock
// is held, and nothing to the trail before the sockets are bound.
func (a *App) open() error {
	cfg := a.cfg
	a.log = logrus.New()
	a.log.SetOutput(a.o.Stderr)
	level := cfg.LogLevel
	if a.o.LogLevel != "" {
		level = a.o.LogLevel
	}
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	a.log.SetLevel(lvl)
	a.drain.Store(int64(cfg.Shutdown.Drain))
	a.host, _ = os.Hostname()
	if cfg.Cluster.Node != "" {
		a.host = cfg.Cluster.Node // the node's name in every audit line and alert
	}

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if a.dirLock, err = lockDataDir(cfg.DataDir); err != nil {
		return err
	}
	_ = os.Chmod(cfg.DataDir, 0o700)
	keyFile := cfg.Admin.KeyFile
	if keyFile == "" {
		keyFile = filepath.Join(cfg.DataDir, "admin.key")
	}
	adminKey, err := ensureSecret(keyFile)
	if err != nil {
		return fmt.Errorf("admin key: %w", err)
	}
	if err := a.bind(); err != nil {
		return err
	}

	if a.trail, err = openTrail(cfg, a.host, a.log); err != nil {
		return err
	}
	a.built = append(a.built, a.trail)
	// Every event goes to the trail and, with alerting on, to the alert
	// engine; the engine's own decisions go to the trail only.
	// Every event is counted for GET /metrics on its way to the trail.
	if a.metrics, err = metrics.New(metrics.Options{State: a.metricsState}); err != nil {
		return err
	}
	if a.alerts, err = openAlerts(cfg, a.host, a.trail.w, a.metrics.Wrap(a.trail.w), a.log); err != nil {
		return err
	}
	a.built = append(a.built, a.alerts)
	a.sink = a.metrics.Wrap(tee{trail: a.trail.w, alerts: a.alerts})
	checkUncleanStop(cfg.DataDir, a.sink)

	if a.cluster, err = openCluster(cfg, a.sink, a.log); err != nil {
		return err
	}
	a.built = append(a.built, a.cluster)

	src, err := NewTokenSource(cfg, a.sink)
	if err != nil {
		return err
	}
	if src, err = a.cluster.tokenSource(cfg, src); err != nil {
		return err
	}
	a.alerts.setLease(a.cluster.alertLease())
	a.tokens = newTokenComp(cfg, src, a.sink, a.log)
	a.built = append(a.built, a.tokens)

	link := &gatewayLink{}
	if a.pipe, err = buildPipeline(cfg, a.sink, a.log, link); err != nil {
		return err
	}
	a.built = append(a.built, a.pipe)

	a.gw, err = buildGateway(cfg, gatewayParts{lns: a.lns, guard: a.pipe.guard, tokens: src.Redeemer,
		healthy: a.trail.w.Healthy, sink: a.sink, log: a.log, version: a.o.Version,
		messages: a.metrics.Messages(), broker: a.cluster.broker(), clusterHealthy: a.cluster.accepting(),
		feedLease: a.cluster.feedLease()}, link)
	if err != nil {
		return err
	}
	a.lns = nil // the gateway owns the sockets now
	a.built = append(a.built, a.gw)

	srv := a.gw.srv
	banSync, err := a.cluster.shareBans(a.pipe.bans, a.pipe.guard,
		func(p netip.Prefix) { go srv.DisconnectPrefix(p, "banned") }, a.sink, a.log)
	if err != nil {
		return err
	}
	a.built = append(a.built, banSync)

	api := admin.New(admin.Options{
		Key:       adminKey,
		Publisher: a.cluster.publisher(a.metrics.TimePublisher(a.gw.srv), a.metrics),
		Tokens:    a.tokens.minter(),
		Bans:      a.pipe.guard,
		Routes:    a.alerts.routes(),
		Stats:     func() any { return a.stats() },
		Ready:     a.ready,
		Reload:    a.Reload,
		Audit:     a.sink,
		// GET /metrics: no key from loopback (or anywhere when public).
		Metrics:       a.metrics.Handler(),
		MetricsPublic: cfg.Admin.MetricsPublic,
	})
	if a.api, err = newAdminAPI(cfg, a.adminLn, api, a.log); err != nil {
		return err
	}
	a.adminLn = nil
	a.built = append(a.built, a.api)
	a.built = append(a.built, &watchdog{srv: a.gw.srv, sink: a.sink})
	if a.o.PaceGC {
		a.built = append(a.built, &gcPacer{})
	}
	return nil
}

// bind takes the listen-address lock and binds the public sockets and the
// admin listener. A port given explicitly is locked before it is bound,
// so that a second process never holds it even for an instant (it would
// take connections and reset them); port 0 is locked once the kernel has
// chosen it.
func (a *App) bind() error {
	cfg := a.cfg
	_, portText, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %q: %w", cfg.Listen, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return fmt.Errorf("listen %q: bad port", cfg.Listen)
	}
	if port != 0 {
		if a.portLock, err = lockPort(uint16(port)); err != nil {
			return err
		}
	}
	loops := runtime.GOMAXPROCS(0)
	if a.lns, err = gateway.Bind(cfg.Listen, loops); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// One event loop per core, plus one processor for everything else: a
	// loop blocked in epoll_wait keeps its processor until the runtime
	// takes it back (up to ~10 ms), so with exactly one per loop the admin
	// API's goroutines wait that long to notice their sockets, and a
	// publish answer waits with them (docs/ARCHITECTURE.md, "The publish
	// path").
	runtime.GOMAXPROCS(loops + 1)
	if port == 0 {
		if a.portLock, err = lockPort(a.lns.Addr().Port()); err != nil {
			return err
		}
	}
	if a.adminLn, err = bindAdmin(cfg); err != nil {
		return err
	}
	return nil
}

// start starts the components in build order, then writes the run
// marker and says where it listens: only a gateway that serves leaves a
// marker.
func (a *App) start() error {
	for _, c := range a.built {
		if err := c.start(); err != nil {
			return fmt.Errorf("start the %s: %w", c.name(), err)
		}
	}
	a.emit(audit.Event{Event: audit.KindAdmin, Severity: audit.Notice, Stage: audit.StageSystem, Actor: "serve",
		Detail: "gateway started, version " + a.o.Version})
	// The marker goes down before the first line announces the gateway:
	// whoever reads that line (a supervisor, a test) and kills the process
	// must find it on the next start.
	writeMarker(a.cfg.DataDir)
	a.logStartup()
	return nil
}

// logStartup prints where the gateway listens and which proxies it
// believes. The first line's format is what scripts and tests wait for.
func (a *App) logStartup() {
	cfg := a.cfg
	scheme := "ws"
	if a.gw.srv.TLSEnabled() {
		scheme = "wss"
	}
	fmt.Fprintf(a.o.Stderr, "portcullis %s listening on %s://%s%s (WebSocket), admin API on %s\n",
		a.o.Version, scheme, a.gw.srv.Addr(), cfg.Path, a.api.url)
	keyFile := cfg.Admin.KeyFile
	if keyFile == "" {
		keyFile = filepath.Join(cfg.DataDir, "admin.key")
	}
	fmt.Fprintf(a.o.Stderr, "admin key: %s   audit trail: %s\n", keyFile, a.trail.dir)
	fmt.Fprintln(a.o.Stderr, trustLine(cfg))
}

// trustLine says which proxies' forwarding headers the gateway believes.
func trustLine(cfg *config.Config) string {
	if len(cfg.TrustedProxies) == 0 {
		return "trusting no proxy: forwarding headers are ignored"
	}
	how := cfg.ClientIPHeader + " header"
	if cfg.ProxyProtocol {
		how = "PROXY protocol header"
	}
	return fmt.Sprintf("trusting proxies %s: the client address is read from their %s", strings.Join(cfg.TrustedProxies, ", "), how)
}

// stop drains the gateway over shutdown.drain (a second signal on sigs
// ends the drain at once), then closes everything in reverse order.
func (a *App) stop(s os.Signal, sigs <-chan os.Signal) error {
	window := time.Duration(a.drain.Load())
	a.log.WithFields(logrus.Fields{"signal": s.String(), "drain": window}).Info("shutting down: draining connections with 1001")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for s := range sigs {
			if s != syscall.SIGHUP {
				a.log.WithField("signal", s.String()).Warn("second signal: closing every connection now")
				cancel()
				return
			}
		}
	}()
	if err := a.gw.drain(ctx, window); err != nil {
		a.log.WithError(err).Warn("drain: remaining connections reset")
	}
	a.emit(audit.Event{Event: audit.KindAdmin, Severity: audit.Notice, Stage: audit.StageSystem, Actor: "serve",
		Detail: "gateway stopped on " + s.String()})
	return a.close()
}

// close closes every component built, in reverse order, the audit trail
// last, then removes the run marker (a clean stop) and gives the locks up.
func (a *App) close() error {
	var errs []error
	for i := len(a.built) - 1; i >= 0; i-- {
		if err := a.built[i].close(); err != nil {
			a.log.WithError(err).Errorf("close the %s", a.built[i].name())
			errs = append(errs, err)
		}
	}
	if a.api == nil && a.adminLn != nil {
		_ = a.adminLn.Close()
	}
	if a.lns != nil {
		a.lns.Close()
	}
	if a.trail != nil && len(errs) == 0 {
		removeMarker(a.cfg.DataDir)
	}
	a.portLock.release()
	a.dirLock.release()
	return errors.Join(errs...)
}

// emit writes e to the trail and the alert engine, once they are open.
func (a *App) emit(e audit.Event) {
	if a.sink != nil {
		a.sink.Emit(e)
	}
}

// ready is the admin API's readiness: not while draining, not while the
// trail fails.
func (a *App) ready() error {
	if a.gw.srv.Draining() {
		return errors.New("draining: shutting down")
	}
	if !a.trail.w.Healthy() {
		return errors.New("audit trail failing")
	}
	return nil
}

// Stats is the body of GET /v1/stats.
type Stats struct {
	gateway.Stats
	Pipeline guard.Stats     `json:"pipeline"`
	Audit    audit.Stats     `json:"audit"`
	Alerts   *alerting.Stats `json:"alerts"` // null while alerting is off
	Feeds    feed.Stats      `json:"feeds"`
	Cluster  *cluster.Stats  `json:"cluster"` // null without a cluster
}

func (a *App) stats() Stats {
	return Stats{Stats: a.gw.srv.Stats(), Pipeline: a.pipe.guard.Stats(), Audit: a.trail.w.Stats(),
		Alerts: a.alerts.stats(), Feeds: a.gw.feeds.Stats(), Cluster: a.cluster.stats()}
}
