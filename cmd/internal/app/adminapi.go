//go:build linux

package app

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis-gw/portcullis/gateway/admin"
	"github.com/portcullis-gw/portcullis/gateway/config"
)

// adminAPI is the admin HTTP listener as a component. Its socket is bound
// with the public ones, before the trail is written to; it serves from
// start, and on a stop it keeps serving through the drain (publications
// still reach the clients not yet closed) and closes after the gateway.
type adminAPI struct {
	ln      net.Listener
	hs      *http.Server
	url     string
	dataDir string
	log     *logrus.Logger
	done    chan struct{}
}

// bindAdmin binds admin.listen.
func bindAdmin(cfg *config.Config) (net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin.listen %s: %w", cfg.Admin.Listen, err)
	}
	return ln, nil
}

func newAdminAPI(cfg *config.Config, ln net.Listener, api *admin.API, log *logrus.Logger) *adminAPI {
	return &adminAPI{ln: ln, url: "http://" + ln.Addr().String(), dataDir: cfg.DataDir, log: log, done: make(chan struct{}),
		hs: &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 16 << 10}}
}

func (a *adminAPI) name() string { return "admin API" }

func (a *adminAPI) start() error {
	if err := os.WriteFile(filepath.Join(a.dataDir, "admin.url"), []byte(a.url+"\n"), 0o600); err != nil {
		a.log.WithError(err).Warn("cannot record the admin URL in the data dir")
	}
	go func() {
		defer close(a.done)
		if err := a.hs.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.WithError(err).Error("admin API stopped")
		}
	}()
	return nil
}

func (a *adminAPI) prepare(*config.Config, keySet) (func() error, error) { return nil, nil }

func (a *adminAPI) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := a.hs.Shutdown(ctx)
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
