package alerting

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testSMTP is a minimal scripted SMTP server on 127.0.0.1.
type testSMTP struct {
	t  *testing.T
	ln net.Listener

	noGreet   bool        // accept, never greet
	stallMail bool        // never answer MAIL FROM
	auth      bool        // advertise AUTH PLAIN LOGIN
	tlsConf   *tls.Config // advertise and serve STARTTLS
	down      atomic.Bool // close every connection at once

	mu         sync.Mutex
	msgs       []string // DATA of each accepted mail
	transcript strings.Builder
	conns      int
	authed     []string // AUTH lines, with whether TLS was on
	wg         sync.WaitGroup
}

func newTestSMTP(t *testing.T, setup func(*testSMTP)) *testSMTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testSMTP{t: t, ln: ln}
	if setup != nil {
		setup(s)
	}
	go s.serve()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *testSMTP) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *testSMTP) messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

func (s *testSMTP) wire() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.transcript.String()
}

func (s *testSMTP) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

func (s *testSMTP) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			if s.down.Load() {
				return
			}
			s.session(c)
		}()
	}
}

// hold reads until the client gives up.
func hold(c net.Conn) {
	buf := make([]byte, 512)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

func (s *testSMTP) session(c net.Conn) {
	if s.noGreet {
		hold(c)
		return
	}
	r := bufio.NewReader(c)
	w := func(l string) { _, _ = c.Write([]byte(l + "\r\n")) }
	w("220 test ESMTP")
	isTLS := false
	for {
		line, err := r.ReadString('\n')
		s.mu.Lock()
		s.transcript.WriteString(line)
		s.mu.Unlock()
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			w("250-test")
			if s.tlsConf != nil && !isTLS {
				w("250-STARTTLS")
			}
			if s.auth {
				w("250-AUTH PLAIN LOGIN")
			}
			w("250 8BITMIME")
		case cmd == "STARTTLS" && s.tlsConf != nil:
			w("220 go ahead")
			tc := tls.Server(c, s.tlsConf)
			if err := tc.Handshake(); err != nil {
				return
			}
			c, r, isTLS = tc, bufio.NewReader(tc), true
		case strings.HasPrefix(cmd, "AUTH"):
			s.mu.Lock()
			s.authed = append(s.authed, "tls="+strconv.FormatBool(isTLS)+" "+strings.TrimSpace(line))
			s.mu.Unlock()
			w("235 ok")
		case strings.HasPrefix(cmd, "MAIL FROM"):
			if s.stallMail {
				hold(c)
				return
			}
			w("250 ok")
		case strings.HasPrefix(cmd, "RCPT TO"):
			w("250 ok")
		case cmd == "DATA":
			w("354 go")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				b.WriteString(strings.TrimPrefix(l, "."))
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, b.String())
			s.mu.Unlock()
			w("250 queued")
		case cmd == "QUIT":
			w("221 bye")
			return
		case cmd == "RSET", cmd == "NOOP":
			w("250 ok")
		default:
			w("502 unknown")
		}
	}
}

// testTLS returns a server config and a client config trusting it (the
// httptest certificate: 127.0.0.1 and example.com).
func testTLS(t *testing.T) (server, client *tls.Config) {
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	server = &tls.Config{Certificates: srv.TLS.Certificates, MinVersion: tls.VersionTLS12}
	client = srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	return server, client
}
