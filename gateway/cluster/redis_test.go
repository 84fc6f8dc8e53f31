package cluster

import (
	"testing"

	"github.com/portcullis-gw/portcullis/policy/redistest"
)

// redisServer is a redis-server of a test (policy/redistest): its own port
// and directory, nothing saved.
type redisServer struct {
	t *testing.T
	s *redistest.Server
}

// Addr is host:port of the server.
func (r *redisServer) Addr() string { return r.s.Addr }

// startRedis starts a redis-server on a free loopback port; the test is
// skipped with an install hint when there is none and CI is unset.
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	return &redisServer{t: t, s: redistest.Start(t)}
}

// Start starts the server again on its port, empty, after Stop.
func (r *redisServer) Start() { r.s.Restart(r.t) }

// Stop kills the server and waits for it.
func (r *redisServer) Stop() { r.s.Stop() }
