//go:build linux

package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/portcullis-gw/portcullis/alerting"
	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway"
	"github.com/portcullis-gw/portcullis/gateway/admin"
	"github.com/portcullis-gw/portcullis/gateway/config"
	"github.com/portcullis-gw/portcullis/gateway/feed"
	"github.com/portcullis-gw/portcullis/policy/clientip"
	"github.com/portcullis-gw/portcullis/policy/origin"
	"github.com/portcullis-gw/portcullis/policy/ratelimit"
	"github.com/portcullis-gw/portcullis/policy/schema"
)

func serveCommand() *cobra.Command {
	var cfgPath, dataDir, logLevel, cpuProfile, memProfile string
	cmd := &cobra.Command{
		Use:   "serve [--config FILE] [--data DIR]",
		Short: "run the gateway (with no config: safe embedded defaults)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			if dataDir != "" {
				cfg.DataDir = dataDir
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return failf("--cpuprofile: %v", err)
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					return failf("--cpuprofile: %v", err)
				}
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
			if memProfile != "" {
				// A heap profile on demand, for benchmarks: kill -USR1 PID.
				// Sampled every 4 KiB rather than 512 KiB, so that objects
				// of a few hundred bytes per connection show up.
				runtime.MemProfileRate = 4096
				usr1 := make(chan os.Signal, 1)
				signal.Notify(usr1, syscall.SIGUSR1)
				go func() {
					for range usr1 {
						runtime.GC()
						if f, err := os.Create(memProfile); err == nil {
							_ = pprof.WriteHeapProfile(f)
							f.Close()
						}
					}
				}()
			}
			return serve(cfg, logLevel)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "YAML config file (see `portcullis config default`)")
	cmd.Flags().StringVar(&dataDir, "data", "", "data directory (overrides data_dir)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "operational log level: debug, info, warn, error")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile to FILE until shutdown (for benchmarks)")
	cmd.Flags().StringVar(&memProfile, "memprofile", "", "write a Go heap profile to FILE on each SIGUSR1 (for benchmarks)")
	return cmd
}

// ensureSecret returns the secret in path, creating it (0600, 256 random
// bits) when missing. A file readable by group or others is refused.
func ensureSecret(path string) (string, error) {
	st, err := os.Stat(path)
	if err == nil {
		if st.Mode().Perm()&0o077 != 0 {
			return "", fmt.Errorf("%s is readable by others (mode %v): chmod 600 %s", path, st.Mode().Perm(), path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("read %s: %w", path, err)
		}
		k := strings.TrimSpace(string(b))
		if len(k) < 16 {
			return "", fmt.Errorf("%s: key shorter than 16 characters", path)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("stat %s: %w", path, err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	k := base64.RawURLEncoding.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(k+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return k, nil
}

func serve(cfg *config.Config, logLevel string) error {
	log := logrus.New()
	log.SetOutput(os.Stderr)
	lvl, err := logrus.ParseLevel(logLevel)
	if err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("--log-level: %w", err)}
	}
	log.SetLevel(lvl)
	if os.Getenv("GOGC") == "" {
		// Idle connections are the bulk of the heap and barely change: a
		// tighter GC target keeps RSS near the live heap for little CPU.
		debug.SetGCPercent(20)
	}

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return failf("create data dir: %v", err)
	}
	_ = os.Chmod(cfg.DataDir, 0o700)
	keyFile := cfg.Admin.KeyFile
	if keyFile == "" {
		keyFile = filepath.Join(cfg.DataDir, "admin.key")
	}
	adminKey, err := ensureSecret(keyFile)
	if err != nil {
		return failf("admin key: %v", err)
	}

	auditDir := cfg.Audit.Dir
	if auditDir == "" {
		auditDir = filepath.Join(cfg.DataDir, "audit")
	}
	host, _ := os.Hostname()
	fsync, err := audit.ParseFsync(cfg.Audit.Fsync)
	if err != nil {
		return failf("audit.fsync: %v", err)
	}
	onFailure, err := audit.ParseFailurePolicy(cfg.Audit.OnFailure)
	if err != nil {
		return failf("audit.on_failure: %v", err)
	}
	aw, err := audit.Open(audit.Options{
		Dir:           auditDir,
		KeyFile:       filepath.Join(cfg.DataDir, "audit.key"),
		Node:          host,
		Fsync:         fsync,
		RotateBytes:   cfg.Audit.RotateBytes,
		Retain:        cfg.Audit.Retain,
		RetainBytes:   cfg.Audit.RetainBytes,
		OnFailure:     onFailure,
		CheckpointDir: cfg.Audit.CheckpointDir,
		Log:           log,
	})
	if err != nil {
		return failf("open audit trail: %v", err)
	}
	// Every event goes to the trail and, with alerting on, to the alert
	// engine; the engine's own decisions go to the trail only.
	var sink audit.Sink = aw
	var eng *alerting.Engine
	alertCfg, err := alertConfig(cfg.Alerting)
	if err != nil {
		_ = aw.Close()
		return failf("%v", err)
	}
	if alertCfg.SMTP.Enabled() {
		eng, err = alerting.Open(alerting.Options{Config: alertCfg, Path: filepath.Join(cfg.DataDir, "alerts.db"),
			Node: host, Audit: aw, Log: log})
		if err != nil {
			_ = aw.Close()
			return failf("alerting: %v", err)
		}
		sink = tee{trail: aw, alerts: eng}
	}
	// The engine closes before the trail, so its last decisions are written.
	var closeOnce sync.Once
	closeAlerts := func() {
		closeOnce.Do(func() {
			if eng != nil {
				if err := eng.Close(); err != nil {
					log.WithError(err).Error("alerting: close")
				}
			}
		})
	}
	defer aw.Close()
	defer closeAlerts()

	allowMissingOrigin := origin.DefaultAllowMissing
	if cfg.AllowMissingOrigin != nil {
		allowMissingOrigin = *cfg.AllowMissingOrigin
	}
	orig, err := origin.NewChecker(cfg.Origins, allowMissingOrigin)
	if err != nil {
		return failf("origins: %v", err)
	}
	val, err := schema.New(schema.Limits{MaxBytes: cfg.Limits.MaxMessageBytes})
	if err != nil {
		return failf("schemas: %v", err)
	}
	rules, dataSchemas, err := topicRules(cfg, val)
	if err != nil {
		return failf("topics: %v", err)
	}
	src, err := newTokenSource(cfg, sink)
	if err != nil {
		return failf("%v", err)
	}
	if src.jwt != nil {
		if err := src.jwt.OpenState(filepath.Join(cfg.DataDir, "jti.db"), time.Now()); err != nil {
			return failf("tokens.jwt: %v", err)
		}
	}
	defer func() {
		if err := src.close(time.Now()); err != nil {
			log.WithError(err).Error("tokens: close the jti state file")
		}
	}()
	resolver, err := clientip.NewResolver(cfg.TrustedProxies, cfg.ClientIPHeader)
	if err != nil {
		return failf("%v", err)
	}
	// The guard and the feed pollers reach the server, which exists only
	// after Start, through running.
	var running atomic.Pointer[gateway.Server]
	disconnect := func(p netip.Prefix) {
		if s := running.Load(); s != nil {
			go s.DisconnectPrefix(p, "banned") // called from event loops: never wait for them here
		}
	}
	kernelDrop := func(ps []netip.Prefix) {
		if s := running.Load(); s != nil {
			s.DropInKernel(ps)
		}
	}
	pipe, err := buildPipeline(cfg, sink, log, disconnect, kernelDrop)
	if err != nil {
		return failf("%v", err)
	}
	defer pipe.close()

	checkUncleanStop(cfg.DataDir, sink)
	feeds := feed.New(feed.Options{Rules: rules, Audit: sink, Log: log, MaxBytes: cfg.Limits.MaxMessageBytes,
		Publish: func(topic string, data []byte) (int, error) {
			if s := running.Load(); s != nil {
				return s.Publish(topic, data)
			}
			return 0, nil
		}})
	defer feeds.Close()
	srv, err := gateway.Start(gateway.Options{
		Listen:  cfg.Listen,
		Path:    cfg.Path,
		Version: version,
		Limits: gateway.Limits{
			MaxConnections:       cfg.Limits.MaxConnections,
			MaxFrameBytes:        cfg.Limits.MaxFrameBytes,
			MaxMessageBytes:      cfg.Limits.MaxMessageBytes,
			HandshakeTimeout:     cfg.Limits.HandshakeTimeout,
			PingInterval:         cfg.Limits.PingInterval,
			WriteQueueBytes:      cfg.Limits.WriteQueueBytes,
			WriteStallTimeout:    cfg.Limits.WriteStallTimeout,
			MaxSubscriptionsConn: cfg.Limits.MaxSubscriptionsPerConn,
			MsgRate:              ratelimit.Rate{PerSecond: cfg.Limits.MsgRate.Rate, Burst: cfg.Limits.MsgRate.Burst},
			MessageTimeout:       cfg.Limits.MessageTimeout,
			InboundBufferPerIP:   cfg.Limits.InboundBufferPerIP,
			InboundBufferTotal:   cfg.Limits.InboundBufferTotal,
			BytesRate:            ratelimit.Rate{PerSecond: cfg.Limits.BytesRate.Rate, Burst: cfg.Limits.BytesRate.Burst},
		},
		Guard:         pipe.guard,
		AuditHealthy:  aw.Healthy,
		ClientIP:      resolver,
		ProxyProtocol: cfg.ProxyProtocol,
		Origins:       orig,
		Topics:        rules,
		DataSchemas:   dataSchemas,
		Feeds:         feeds,
		Tokens:        src.redeemer,
		Schema:        val,
		Audit:         sink,
		Log:           log,
	})
	if err != nil {
		return failf("%v", err)
	}

	running.Store(srv)
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	pipe.run(runCtx, sink, log)
	go watchdog(runCtx, srv, sink)
	var routes map[string]http.Handler
	if eng != nil {
		go watchTrail(runCtx, aw, eng)
		routes = silenceRoutes(eng, sink)
	}

	api := admin.New(admin.Options{
		Key:       adminKey,
		Publisher: srv,
		Tokens:    src.minter,
		Bans:      pipe.guard,
		Routes:    routes,
		Stats: func() any {
			var alerts any
			if eng != nil {
				alerts = eng.Stats()
			}
			return struct {
				gateway.Stats
				Pipeline any `json:"pipeline"`
				Audit    any `json:"audit"`
				Alerts   any `json:"alerts"`
				Feeds    any `json:"feeds"`
			}{srv.Stats(), pipe.guard.Stats(), aw.Stats(), alerts, feeds.Stats()}
		},
		Ready: func() error {
			if !aw.Healthy() {
				return errors.New("audit trail failing")
			}
			return nil
		},
		Audit: sink,
	})
	ln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		_ = srv.Shutdown(context.Background())
		return failf("admin listener %s: %v", cfg.Admin.Listen, err)
	}
	adminURL := "http://" + ln.Addr().String()
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "admin.url"), []byte(adminURL+"\n"), 0o600); err != nil {
		log.WithError(err).Warn("cannot record the admin URL in the data dir")
	}
	hs := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 16 << 10}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error("admin API stopped")
		}
	}()

	aw.Emit(audit.Event{Event: audit.KindAdmin, Severity: audit.Notice, Stage: audit.StageSystem, Actor: "serve",
		Detail: "gateway started, version " + version})
	// Signals are caught before the gateway says it is up, so that a
	// SIGTERM right after that line still stops it cleanly.
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	fmt.Fprintf(os.Stderr, "portcullis %s listening on ws://%s%s (WebSocket), admin API on %s\n",
		version, srv.Addr(), cfg.Path, adminURL)
	fmt.Fprintf(os.Stderr, "admin key: %s   audit trail: %s\n", keyFile, auditDir)

	stopSweep := make(chan struct{})
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				src.sweep(now)
			case <-stopSweep:
				return
			}
		}
	}()

	s := <-sig
	for s == syscall.SIGHUP {
		pipe.reload(sink, log)
		s = <-sig
	}
	log.WithField("signal", s.String()).Info("shutting down: closing connections with 1001")
	close(stopSweep)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.WithError(err).Warn("shutdown deadline passed; remaining connections reset")
	}
	sctx, scancel := context.WithTimeout(context.Background(), time.Second)
	defer scancel()
	_ = hs.Shutdown(sctx)
	aw.Emit(audit.Event{Event: audit.KindAdmin, Severity: audit.Notice, Stage: audit.StageSystem, Actor: "serve",
		Detail: "gateway stopped on " + s.String()})
	closeAlerts()
	_ = os.Remove(runMarker(cfg.DataDir)) // a clean stop
	if err := aw.Close(); err != nil {
		return failf("close audit trail: %v", err)
	}
	return nil
}
