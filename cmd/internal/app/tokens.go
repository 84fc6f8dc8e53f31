//go:build linux

package app

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/admin"
	"github.com/portcullis-gw/portcullis/gateway/config"
	"github.com/portcullis-gw/portcullis/policy/tokens"
)

// tokenSweepEvery is how often expired tokens (or used jtis) are dropped.
const tokenSweepEvery = 30 * time.Second

// sqlWarmConns is how many of the sql source's pool connections are opened
// at start (at most tokens.sql.max_open).
const sqlWarmConns = 4

// tokenComp is the token source as a component: the store the admin API
// mints into, with its tokens kept in <data>/tokens.db across restarts,
// or the jwt source with its used-jti file (<data>/jti.db).
// tokens.ttl changes live: it is the lifetime of a token minted without
// one; the rest of `tokens:` needs a restart.
type tokenComp struct {
	src     TokenSource
	ttl     atomic.Int64 // time.Duration: tokens.ttl in force
	dataDir string
	sink    audit.Sink
	log     *logrus.Logger

	stop   chan struct{}
	wg     sync.WaitGroup
	opened bool // the jti state file is open
}

func newTokenComp(cfg *config.Config, src TokenSource, sink audit.Sink, log *logrus.Logger) *tokenComp {
	t := &tokenComp{src: src, dataDir: cfg.DataDir, sink: sink, log: log, stop: make(chan struct{})}
	t.ttl.Store(int64(cfg.Tokens.TTL))
	return t
}

func (t *tokenComp) name() string { return "token source" }

func (t *tokenComp) start() error {
	if st := t.src.Store; st != nil {
		// Minted, unredeemed tokens survive a restart: <data>/tokens.db.
		n, err := st.OpenState(filepath.Join(t.dataDir, "tokens.db"), time.Now())
		switch {
		case errors.Is(err, tokens.ErrCorrupt):
			t.log.WithError(err).Error("tokens.db is corrupt: started with the tokens that could be read")
			t.sink.Emit(audit.Event{Event: audit.KindTokenStateLost, Severity: audit.Critical, Stage: audit.StageSystem, Actor: "serve",
				Count: int64(n), Detail: audit.Cap("tokens.db is corrupt; started with the " + strconv.Itoa(n) +
					" tokens that could be read (minted tokens may be refused): " + err.Error())})
		case err != nil:
			return fmt.Errorf("tokens: %w", err)
		case n > 0:
			t.log.WithField("tokens", n).Info("minted tokens restored from tokens.db")
		}
		t.opened = true
	}
	if t.src.JWT != nil {
		if err := t.src.JWT.OpenState(filepath.Join(t.dataDir, "jti.db"), time.Now()); err != nil {
			return fmt.Errorf("tokens.jwt: %w", err)
		}
		t.opened = true
	}
	if sq := t.src.SQL; sq != nil {
		// Connect part of the pool now, so the first page views do not
		// wait for connection set-ups; a database that is down is
		// reported by the first redemption (token_source_down).
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			n := sq.Warm(context.Background(), sqlWarmConns)
			t.log.WithField("connections", n).Info("token database: pool warmed")
		}()
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		tick := time.NewTicker(tokenSweepEvery)
		defer tick.Stop()
		for {
			select {
			case now := <-tick.C:
				t.src.Sweep(now)
			case <-t.stop:
				return
			}
		}
	}()
	return nil
}

func (t *tokenComp) prepare(next *config.Config, changed keySet) (func() error, error) {
	if !changed.any("tokens.ttl") {
		return nil, nil
	}
	ttl := next.Tokens.TTL
	return func() error { t.ttl.Store(int64(ttl)); return nil }, nil
}

func (t *tokenComp) close() error {
	close(t.stop)
	t.wg.Wait()
	if err := t.closeSQL(); err != nil {
		return err
	}
	if !t.opened {
		return nil
	}
	if t.src.Store != nil {
		if err := t.src.Store.Close(time.Now()); err != nil {
			return fmt.Errorf("tokens: save tokens.db: %w", err)
		}
	}
	if t.src.JWT != nil {
		if err := t.src.JWT.Close(time.Now()); err != nil {
			return fmt.Errorf("tokens: close the jti state file: %w", err)
		}
	}
	return nil
}

// closeSQL closes the sql source's database connections.
func (t *tokenComp) closeSQL() error {
	if t.src.SQL == nil {
		return nil
	}
	if err := t.src.SQL.Close(); err != nil {
		return fmt.Errorf("tokens.sql: close the database: %w", err)
	}
	return nil
}

// minter is what the admin API mints with: the store, with the lifetime
// in force for a request that names none. Nil for jwt.
func (t *tokenComp) minter() admin.Minter {
	if t.src.Store == nil && t.src.Cluster == nil {
		return nil
	}
	return ttlMinter{t}
}

type ttlMinter struct{ t *tokenComp }

// Mint implements admin.Minter.
func (m ttlMinter) Mint(userID string, topics []string, ttl time.Duration, now time.Time) (string, time.Time, error) {
	if ttl == 0 {
		ttl = time.Duration(m.t.ttl.Load())
	}
	if c := m.t.src.Cluster; c != nil {
		return c.Mint(userID, topics, ttl, now)
	}
	return m.t.src.Store.Mint(userID, topics, ttl, now)
}
