//go:build linux

package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/alerting"
	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/admin"
	"github.com/portcullis-gw/portcullis/gateway/config"
)

// alerts is the alert engine as a component: off while alerting.smtp.host
// is empty and no webhook is listed. A reload that changes any alerting key closes the engine and
// opens it again with the new settings on the same outbox (pending mails
// and silences are kept there); events in that instant are not seen by
// the rules. As an audit.Sink it forwards to the engine in force.
type alerts struct {
	cur   atomic.Pointer[alerting.Engine] // nil while alerting is off
	path  string
	paths alerting.Paths // for the commands printed in mails
	host  string
	trail *audit.Writer
	// decisions is where the engine's decisions go: the trail, counted
	// by the metrics.
	decisions audit.Sink
	log       *logrus.Logger
	// lease shares the groups' mails with the cluster (alerting's
	// lease.go); set once the cluster is joined, nil alone.
	lease atomic.Pointer[alertLease]

	mu     sync.Mutex // serializes open and close against watchTrail's start
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func openAlerts(cfg *config.Config, host string, tr *audit.Writer, decisions audit.Sink, log *logrus.Logger) (*alerts, error) {
	ac, err := AlertConfig(cfg.Alerting)
	if err != nil {
		return nil, err
	}
	a := &alerts{path: filepath.Join(cfg.DataDir, "alerts.db"), paths: alerting.NewPaths(cfg.DataDir, cfg.Audit.Dir), host: host, trail: tr, decisions: decisions, log: log}
	if ac.Enabled() {
		eng, err := a.open(ac, nil, nil)
		if err != nil {
			return nil, err
		}
		a.cur.Store(eng)
	}
	return a, nil
}

// open opens an engine on the outbox with the mail notifier n (nil: SMTP
// from ac when set) and the webhooks hooks (nil: from ac).
func (a *alerts) open(ac alerting.Config, n alerting.Notifier, hooks []*alerting.Webhook) (*alerting.Engine, error) {
	eng, err := alerting.Open(alerting.Options{Config: ac, Path: a.path, Paths: a.paths, Node: a.host, Audit: a.decisions, Log: a.log,
		Notifier: n, Webhooks: hooks})
	if err != nil {
		return nil, err // "alerting: ..." or "alerting.<key>: ..." already
	}
	if l := a.lease.Load(); l != nil {
		eng.SetLease(l.l)
	}
	return eng, nil
}

// alertLease holds a GroupLease behind an atomic pointer.
type alertLease struct{ l alerting.GroupLease }

// setLease makes the engine in force, and those opened by later reloads,
// mail each group once cluster-wide through l (nil: nothing changes).
func (a *alerts) setLease(l alerting.GroupLease) {
	if l == nil {
		return
	}
	a.lease.Store(&alertLease{l})
	if eng := a.cur.Load(); eng != nil {
		eng.SetLease(l)
	}
}

// Emit implements audit.Sink.
func (a *alerts) Emit(e audit.Event) {
	if eng := a.cur.Load(); eng != nil {
		eng.Emit(e)
	}
}

func (a *alerts) name() string { return "alert engine" }

func (a *alerts) start() error {
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.watchTrail(a.ctx)
	}()
	return nil
}

// prepare checks the new alerting settings, the SMTP password and the
// webhook secrets included, before the engine in force is touched.
func (a *alerts) prepare(next *config.Config, changed keySet) (func() error, error) {
	if !changed.any("alerting") {
		return nil, nil
	}
	ac, err := AlertConfig(next.Alerting)
	if err != nil {
		return nil, err
	}
	var smtp alerting.Notifier
	if ac.SMTP.Enabled() {
		s, err := alerting.NewSMTP(ac.SMTP, os.Getenv)
		if err != nil {
			return nil, fmt.Errorf("alerting.smtp: %w", err)
		}
		smtp = s
	}
	var hooks []*alerting.Webhook
	for i, wc := range ac.Webhooks {
		w, err := alerting.NewWebhook(i, wc)
		if err != nil {
			return nil, err // "alerting.webhooks[i]...: ..." already
		}
		hooks = append(hooks, w)
	}
	return func() error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if old := a.cur.Swap(nil); old != nil {
			if err := old.Close(); err != nil {
				a.log.WithError(err).Error("alerting: close the engine for a reload")
			}
		}
		if !ac.Enabled() {
			return nil
		}
		eng, err := a.open(ac, smtp, hooks)
		if err != nil {
			return err
		}
		a.cur.Store(eng)
		return nil
	}, nil
}

func (a *alerts) close() error {
	if a.cancel != nil {
		a.cancel()
		a.wg.Wait()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if eng := a.cur.Swap(nil); eng != nil {
		if err := eng.Close(); err != nil {
			return fmt.Errorf("alerting: close: %w", err)
		}
	}
	return nil
}

// watchTrail reports to the engine, once a second, what the audit writer
// itself cannot send through the tee: events it lost (audit_dropped) and
// a failing sink.
func (a *alerts) watchTrail(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastDropped uint64
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			st := a.trail.Stats()
			if st.Dropped > lastDropped {
				a.Emit(audit.Event{Time: now, Event: audit.KindAuditDropped, Severity: audit.Critical, Stage: audit.StageSystem,
					Count: int64(st.Dropped - lastDropped), Detail: "audit events could not be written"})
				lastDropped = st.Dropped
			}
			if f := a.trail.Failing(); f && !failing {
				a.Emit(audit.Event{Time: now, Event: audit.KindAuditFailing, Severity: audit.Critical, Stage: audit.StageSystem,
					Detail: "the audit trail cannot be written"})
				failing = true
			} else if !f {
				failing = false
			}
		}
	}
}

// The bodies of the alerting endpoints.
type (
	silencesReply struct {
		Silences []alerting.Silence `json:"silences"`
	}
	silenceCreated struct {
		ID string `json:"id"`
	}
	silenceExpired struct {
		Expired string `json:"expired"`
	}
	testSent struct {
		Sent bool `json:"sent"`
	}
	silenceRequest struct {
		Matchers []alerting.Matcher `json:"matchers"`
		For      string             `json:"for"`
		Comment  string             `json:"comment"`
		Actor    string             `json:"actor"`
	}
)

// routes are the /v1/silences handlers and POST /v1/alerts/test. They
// reach the engine in force at each request; with alerting off they
// answer 409 alerting_off.
func (a *alerts) routes() map[string]http.Handler {
	writeJSON := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	engine := func(w http.ResponseWriter) *alerting.Engine {
		eng := a.cur.Load()
		if eng == nil {
			admin.Error(w, http.StatusConflict, "alerting_off",
				"alerting is off: set alerting.smtp.host (and from, to) or alerting.webhooks in the config, then reload (docs/ALERTS.md)")
		}
		return eng
	}
	return map[string]http.Handler{
		"GET /v1/silences": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if eng := engine(w); eng != nil {
				writeJSON(w, http.StatusOK, silencesReply{Silences: eng.Silences()})
			}
		}),
		"POST /v1/silences": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			eng := engine(w)
			if eng == nil {
				return
			}
			var req silenceRequest
			if err := admin.Decode(r, &req); err != nil {
				admin.Error(w, http.StatusBadRequest, "bad_request", err.Error())
				return
			}
			d, err := time.ParseDuration(req.For)
			if err != nil || d <= 0 {
				admin.Error(w, http.StatusBadRequest, "bad_request", "for: a positive duration such as \"2h\" is required")
				return
			}
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			by := "api@" + host
			if req.Actor != "" {
				by = audit.Cap(req.Actor) + " via " + by
			}
			id, err := eng.Silence(r.Context(), req.Matchers, time.Now().Add(d), by, req.Comment)
			if errors.Is(err, audit.ErrNotDurable) {
				admin.Error(w, http.StatusServiceUnavailable, reason.AuditUnavailable.String(), err.Error())
				return
			}
			if err != nil {
				admin.Error(w, http.StatusBadRequest, "bad_request", err.Error())
				return
			}
			writeJSON(w, http.StatusCreated, silenceCreated{ID: id})
		}),
		"DELETE /v1/silences/{id}": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			eng := engine(w)
			if eng == nil {
				return
			}
			if err := eng.Expire(r.Context(), r.PathValue("id")); err != nil {
				if errors.Is(err, audit.ErrNotDurable) {
					admin.Error(w, http.StatusServiceUnavailable, reason.AuditUnavailable.String(), err.Error())
					return
				}
				if errors.Is(err, alerting.ErrNoSilence) {
					admin.Error(w, http.StatusNotFound, "not_found", "no such silence")
					return
				}
				admin.Error(w, http.StatusInternalServerError, "internal", err.Error())
				return
			}
			writeJSON(w, http.StatusOK, silenceExpired{Expired: r.PathValue("id")})
		}),
		"POST /v1/alerts/test": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			eng := engine(w)
			if eng == nil {
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
			defer cancel()
			if err := eng.Test(ctx); err != nil {
				admin.Error(w, http.StatusBadGateway, "alert_test_failed", err.Error())
				return
			}
			writeJSON(w, http.StatusOK, testSent{Sent: true})
		}),
	}
}

// stats is the engine's counters; nil while alerting is off.
func (a *alerts) stats() *alerting.Stats {
	eng := a.cur.Load()
	if eng == nil {
		return nil
	}
	st := eng.Stats()
	return &st
}
