//go:build linux

package app

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/gateway/admin"
	"github.com/portcullis-gw/portcullis/gateway/config"
	"github.com/portcullis-gw/portcullis/gateway/tlsfront"
)

// adminAPI is the admin HTTP listener as a component. Its socket is bound
// with the public ones, before the trail is written to; it serves from
// start, and on a stop it keeps serving through the drain (publications
// still reach the clients not yet closed) and closes after the gateway.
// With admin.tls it serves HTTPS, its certificate pair re-read on every
// reload.
type adminAPI struct {
	ln      net.Listener
	hs      *http.Server
	url     string
	dataDir string
	log     *logrus.Logger
	done    chan struct{}
	pair    atomic.Pointer[tlsfront.Pair] // admin.tls in use; nil: plain HTTP
}

// bindAdmin binds admin.listen.
func bindAdmin(cfg *config.Config) (net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin.listen %s: %w", cfg.Admin.Listen, err)
	}
	return ln, nil
}

func newAdminAPI(cfg *config.Config, ln net.Listener, api *admin.API, log *logrus.Logger) (*adminAPI, error) {
	a := &adminAPI{ln: ln, url: "http://" + ln.Addr().String(), dataDir: cfg.DataDir, log: log, done: make(chan struct{}),
		hs: &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 16 << 10}}
	if t := cfg.Admin.TLS; t.CertFile != "" {
		p, err := tlsfront.LoadPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("admin.tls.cert_file: %w", err)
		}
		a.pair.Store(p)
		a.url = "https://" + ln.Addr().String()
		a.hs.TLSConfig = &tls.Config{
			MinVersion: tls.VersionTLS12,
			// The pair in use, swapped by a reload: new connections get it.
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return a.pair.Load().Certificate(), nil },
		}
	}
	return a, nil
}

func (a *adminAPI) name() string { return "admin API" }

func (a *adminAPI) start() error {
	if err := os.WriteFile(filepath.Join(a.dataDir, "admin.url"), []byte(a.url+"\n"), 0o600); err != nil {
		a.log.WithError(err).Warn("cannot record the admin URL in the data dir")
	}
	go func() {
		defer close(a.done)
		var err error
		if a.hs.TLSConfig != nil {
			err = a.hs.ServeTLS(a.ln, "", "") // the certificate from TLSConfig.GetCertificate
		} else {
			err = a.hs.Serve(a.ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.WithError(err).Error("admin API stopped")
		}
	}()
	return nil
}

// prepare loads admin.tls again on every reload when the API serves
// HTTPS (renewed files keep their names); a pair that does not load
// refuses the reload and the one in use stays.
func (a *adminAPI) prepare(next *config.Config, _ keySet) (func() error, error) {
	if a.pair.Load() == nil {
		return nil, nil
	}
	p, err := tlsfront.LoadPair(next.Admin.TLS.CertFile, next.Admin.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("admin.tls.cert_file: %w; the certificate in use stays", err)
	}
	return func() error { a.pair.Store(p); return nil }, nil
}

// tlsDetail names the certificate the admin API serves, for the reload's
// audit line; empty for plain HTTP.
func (a *adminAPI) tlsDetail() string {
	p := a.pair.Load()
	if p == nil {
		return ""
	}
	return "admin API certificate " + certSummary(p.Leaf())
}

func (a *adminAPI) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := a.hs.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// A client that opened a connection and never sent a request on
		// it (Go's HTTP client keeps spares under concurrency) is not a
		// failed stop: every answered request is done; close the rest.
		err = a.hs.Close()
	}
	select {
	case <-a.done:
	default:
		_ = a.ln.Close() // never served
	}
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	return nil
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
