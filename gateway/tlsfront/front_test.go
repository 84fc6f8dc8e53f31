package tlsfront

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// A client's bytes reach the gateway's end of the socket pair and the
// gateway's bytes come back, over TLS 1.3 with ALPN http/1.1; the gateway
// is told the client's real address.
func TestRoundTrip(t *testing.T) {
	c := newCert(t, t.TempDir(), "a", 1, time.Now().Add(time.Hour))
	g := newFakeGateway()
	f, addr := start(t, g.options(c))

	cl := dial(t, addr, clientConfig(c))
	st := cl.ConnectionState()
	if st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != "http/1.1" {
		t.Fatalf("version %#x, ALPN %q", st.Version, st.NegotiatedProtocol)
	}
	// Larger than every buffer, so both directions loop.
	msg := make([]byte, 300<<10)
	_, _ = rand.Read(msg)
	go func() { _, _ = cl.Write(msg) }()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(cl, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echoed bytes differ")
	}
	g.mu.Lock()
	adopted := g.adopted
	g.mu.Unlock()
	want := netip.MustParseAddrPort(cl.LocalAddr().String())
	if len(adopted) != 1 || adopted[0] != want {
		t.Fatalf("Adopt saw peers %v, want [%v]", adopted, want)
	}
	if s := f.Stats(); s.Adopted != 1 || s.Bridged != 1 || s.Refused != 0 {
		t.Fatalf("stats %+v", s)
	}
	// The client's close_notify half-closes towards the gateway; the echo
	// closes its end at EOF, and the bridge ends.
	if err := cl.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the gateway closed, the client read %v, want io.EOF (close_notify)", err)
	}
	checkFor(t, 10*time.Second, bridged(f, 0))
}

// Half-close: after the client's close_notify the gateway still gets to
// send (a WebSocket close frame, say) before it closes its end.
func TestHalfCloseLetsTheGatewayFinish(t *testing.T) {
	c := newCert(t, t.TempDir(), "a", 1, time.Now().Add(time.Hour))
	g := newFakeGateway()
	g.onAdopt = func(f *os.File) {
		go func() {
			defer f.Close()
			b, _ := io.ReadAll(f) // until the client's EOF
			_, _ = f.Write(append([]byte("got "), b...))
		}()
	}
	f, addr := start(t, g.options(c))
	cl := dial(t, addr, clientConfig(c))
	if _, err := cl.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := cl.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(cl)
	if err != nil || string(got) != "got hello" {
		t.Fatalf("read %q, %v; want \"got hello\" then EOF", got, err)
	}
	checkFor(t, 10*time.Second, bridged(f, 0))
}

// The gateway closing its end (a refusal, a ban, a drain) ends the
// client's connection with close_notify, and the bridge's goroutines end
// although the client sends nothing.
func TestGatewayCloseEndsTheConnection(t *testing.T) {
	c := newCert(t, t.TempDir(), "a", 1, time.Now().Add(time.Hour))
	g := newFakeGateway()
	ends := make(chan *os.File, 1)
	g.onAdopt = func(f *os.File) { ends <- f }
	f, addr := start(t, g.options(c))
	cl := dial(t, addr, clientConfig(c))
	end := <-ends
	if _, err := end.Write([]byte("HTTP/1.1 403 Forbidden\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	end.Close()
	got, err := io.ReadAll(cl)
	if err != nil || string(got) != "HTTP/1.1 403 Forbidden\r\n\r\n" {
		t.Fatalf("read %q, %v", got, err)
	}
	checkFor(t, 10*time.Second, bridged(f, 0))
}

// A client that reads nothing while the gateway sends: the front stops
// reading the socket pair (so the gateway sees its own slow consumer),
// and after WriteStallTimeout without progress resets the client and
// closes the pair; nothing is left behind.
func TestStalledClientIsReset(t *testing.T) {
	c := newCert(t, t.TempDir(), "a", 1, time.Now().Add(time.Hour))
	g := newFakeGateway()
	ends := make(chan *os.File, 1)
	g.onAdopt = func(f *os.File) { ends <- f }
	o := g.options(c)
	o.WriteStallTimeout = 300 * time.Millisecond
	o.SendBufferBytes = 4 << 10
	f, addr := start(t, o)
	cl := dial(t, addr, clientConfig(c))
	_ = cl // never read
	end := <-ends
	defer end.Close()
	var err error
	chunk := make([]byte, 64<<10)
	for i := 0; i < 1024 && err == nil; i++ { // at most 64 MiB
		_, err = end.Write(chunk)
	}
	if err == nil {
		t.Fatal("the gateway wrote 64 MiB to a client that reads nothing")
	}
	checkFor(t, 10*time.Second, bridged(f, 0))
}

// A refused address costs no handshake: it is reset at accept, before a
// byte is read, and neither Adopt nor Refused is called.
func TestRefusedAdmissionCostsNoHandshake(t *testing.T) {
	c := newCert(t, t.TempDir(), "a", 1, time.Now().Add(time.Hour))
	g := newFakeGateway()
	g.admit = false
	f, addr := start(t, g.options(c))
	_, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, clientConfig(c))
	if err == nil || !isReset(err) {
		t.Fatalf("dial: %v, want a reset", err)
	}
	s := f.Stats()
	if s.Accepted != 1 || s.Handshakes != 0 || s.Adopted != 0 || s.Refused != 0 {
		t.Fatalf("stats %+v: want one accept and nothing else", s)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.admits != 1 || len(g.adopted) != 0 || len(g.refused) != 0 {
		t.Fatalf("admits %d, adopted %v, refused %d", g.admits, g.adopted, len(g.refused))
	}
}

// Every way a handshake fails: what the client sees, the error Refused
// gets, and the refusal (reason, detail, audited) the gateway records.
func TestHandshakeFailures(t *testing.T) {
	c := newCert(t, t.TempDir(), "a", 1, time.Now().Add(time.Hour))
	cases := []struct {
		name   string
		opts   func(*Options)
		client func(t *testing.T, addr string) // asserts what the client sees
		is     error                           // nil: a TLS error
		want   Refusal
		detail string
	}{
		{
			name: "timeout",
			opts: func(o *Options) { o.HandshakeTimeout = 200 * time.Millisecond },
			client: func(t *testing.T, addr string) {
				raw := rawDial(t, addr)
				if _, err := raw.Read(make([]byte, 1)); !isReset(err) {
					t.Errorf("silent client read %v, want a reset", err)
				}
			},
			is:   ErrHandshakeTimeout,
			want: Refusal{Reason: reason.HandshakeTimeout, Audit: true}, detail: "TLS handshake not complete in time",
		},
		{
			name: "too large",
			opts: func(o *Options) { o.HandshakeMaxBytes = 1024 },
			client: func(t *testing.T, addr string) {
				raw := rawDial(t, addr)
				// A handshake record announcing 16000 bytes, then 4000 of them.
				hdr := []byte{22, 3, 1, 16000 >> 8, 16000 & 0xff}
				_, _ = raw.Write(append(hdr, make([]byte, 4000)...))
				if _, err := raw.Read(make([]byte, 1)); !isReset(err) {
					t.Errorf("client read %v, want a reset", err)
				}
			},
			is:   ErrHandshakeTooLarge,
			want: Refusal{Reason: reason.HandshakeTooLarge, Audit: true}, detail: "TLS handshake too large",
		},
		{
			name: "min version 1.3 refuses a 1.2 client",
			opts: func(o *Options) { o.MinVersion = tls.VersionTLS13 },
			client: func(t *testing.T, addr string) {
				cfg := clientConfig(c)
				cfg.MaxVersion = tls.VersionTLS12
				_, err := tls.Dial("tcp", addr, cfg)
				if err == nil || !strings.Contains(err.Error(), "protocol version") {
					t.Errorf("a TLS 1.2 client got %v, want a protocol_version alert", err)
				}
			},
			want: Refusal{Reason: reason.TLSHandshake, Audit: true}, detail: "unsupported versions",
		},
		{
			name: "plain HTTP",
			client: func(t *testing.T, addr string) {
				raw := rawDial(t, addr)
				if _, err := raw.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(bufio.NewReader(raw), nil)
				if err != nil {
					t.Fatalf("no HTTP answer: %v", err)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 400 || !strings.Contains(string(body), `"error":"tls_handshake"`) {
					t.Errorf("answer %d %s", resp.StatusCode, body)
				}
			},
			is:   ErrPlainHTTP,
			want: Refusal{Reason: reason.TLSHandshake, Audit: true}, detail: "plain HTTP request on the TLS port",
		},
		{
			name: "client refuses our certificate",
			client: func(t *testing.T, addr string) {
				cfg := clientConfig(c)
				cfg.RootCAs = nil // trusts the system roots, not ours
				if _, err := tls.Dial("tcp", addr, cfg); err == nil {
					t.Error("a client that does not trust the certificate connected")
				}
			},
			is:   ErrClientAlert,
			want: Refusal{Reason: reason.TLSClientAlert, Audit: true}, detail: "remote error: tls: bad certificate",
		},
		{
			name: "client hangs up",
			client: func(t *testing.T, addr string) {
				rawDial(t, addr).Close()
			},
			is:   ErrClientGone,
			want: Refusal{Reason: reason.ClientClosed, Audit: false}, detail: "hung up",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGateway()
			o := g.options(c)
			if tc.opts != nil {
				tc.opts(&o)
			}
			f, addr := start(t, o)
			tc.client(t, addr)
			r := g.nextRefusal(t)
			if tc.is != nil && !errors.Is(r.err, tc.is) {
				t.Errorf("Refused got %v, want %v", r.err, tc.is)
			}
			if !r.peer.Addr().IsLoopback() {
				t.Errorf("Refused peer %v", r.peer)
			}
			got := Classify(r.err)
			if got.Reason != tc.want.Reason || got.Audit != tc.want.Audit || !strings.Contains(got.Detail, tc.detail) {
				t.Errorf("Classify(%v) = %+v (reason %s), want reason %s, audit %v, detail with %q",
					r.err, got, got.Reason, tc.want.Reason, tc.want.Audit, tc.detail)
			}
			if s := f.Stats(); s.Adopted != 0 || s.Refused != 1 || s.Handshaking != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func rawDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	return raw
}

// Beyond MaxHandshakes in progress a connection is reset and refused
// (global_connections: not the client's fault, no strike).
func TestTooManyHandshakes(t *testing.T) {
	c := newCert(t, t.TempDir(), "a", 1, time.Now().Add(time.Hour))
	g := newFakeGateway()
	o := g.options(c)
	o.MaxHandshakes = 1
	f, addr := start(t, o)
	rawDial(t, addr) // silent: its handshake stays in progress
	checkFor(t, 10*time.Second, func() error {
		if n := f.Stats().Handshaking; n != 1 {
			return fmt.Errorf("%d handshakes in progress", n)
		}
		return nil
	})
	// The reset may come before the dial has returned.
	if second, err := net.DialTimeout("tcp", addr, 10*time.Second); err == nil {
		defer second.Close()
		if _, err := second.Read(make([]byte, 1)); !isReset(err) {
			t.Fatalf("read %v, want a reset", err)
		}
	} else if !isReset(err) {
		t.Fatal(err)
	}
	r := g.nextRefusal(t)
	if !errors.Is(r.err, ErrTooManyHandshakes) || Classify(r.err).Reason != reason.GlobalConnections {
		t.Fatalf("refused with %v", r.err)
	}
}

// Reload swaps the certificate for new handshakes; a pair that does not
// load is refused and the one in use stays.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	a := newCert(t, dir, "live", 1, time.Now().Add(time.Hour))
	g := newFakeGateway()
	f, addr := start(t, g.options(a))
	serial := func(trust testCert) int64 {
		t.Helper()
		cl := dial(t, addr, clientConfig(trust))
		defer cl.Close()
		return cl.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serial(a); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	old := dial(t, addr, clientConfig(a)) // a connection that lives across the reload

	b := newCert(t, dir, "live", 2, time.Now().Add(time.Hour)) // renewed in place
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if s := serial(b); s != 2 || f.Leaf().SerialNumber.Int64() != 2 {
		t.Fatalf("after reload: serial %d, want 2", s)
	}
	if _, err := old.Write([]byte("x")); err != nil {
		t.Fatalf("a connection from before the reload: %v", err)
	}
	if _, err := io.ReadFull(old, make([]byte, 1)); err != nil {
		t.Fatalf("a connection from before the reload: %v", err)
	}

	bad := []struct {
		name  string
		write func()
		want  string
	}{
		{"key of another certificate", func() {
			other := newCert(t, t.TempDir(), "other", 3, time.Now().Add(time.Hour))
			copyFile(t, other.certFile, b.certFile)
		}, "private key does not match public key"},
		{"expired", func() { writeCert(t, dir, "live", 4, time.Now().Add(-time.Minute), b.key) }, "expired at"},
		{"key readable by others", func() {
			writeCert(t, dir, "live", 5, time.Now().Add(time.Hour), b.key)
			if err := os.Chmod(b.keyFile, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "readable by group or others"},
		{"not PEM", func() {
			if err := os.Chmod(b.keyFile, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(b.certFile, []byte("garbage"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "failed to find any PEM data"},
	}
	for _, tc := range bad {
		tc.write()
		err := f.Reload()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Reload() = %v, want an error with %q", tc.name, err, tc.want)
		}
		if s := serial(b); s != 2 {
			t.Errorf("%s: after a refused reload the serial is %d, want 2", tc.name, s)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// New refuses what Reload refuses, and missing callbacks.
func TestNewRefuses(t *testing.T) {
	dir := t.TempDir()
	expired := newCert(t, dir, "old", 1, time.Now().Add(-time.Hour))
	good := newCert(t, dir, "good", 2, time.Now().Add(time.Hour))
	g := newFakeGateway()
	if _, err := New(g.options(expired)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired: %v", err)
	}
	o := g.options(good)
	o.Admit = nil
	if _, err := New(o); err == nil {
		t.Error("New without Admit succeeded")
	}
	o = g.options(good)
	o.MinVersion = tls.VersionTLS11
	if _, err := New(o); err == nil {
		t.Error("New with TLS 1.1 succeeded")
	}
	if v, err := ParseVersion("1.3"); err != nil || v != tls.VersionTLS13 {
		t.Errorf("ParseVersion(1.3) = %#x, %v", v, err)
	}
	if _, err := ParseVersion("1.1"); err == nil || !strings.Contains(err.Error(), `"1.1"`) {
		t.Errorf("ParseVersion(1.1): %v", err)
	}
}

// Shutdown aborts handshakes in progress (Refused with ErrClosed, not
// audited) and waits for bridged connections until the gateway closes
// its ends; Serve then returns nil.
func TestShutdown(t *testing.T) {
	c := newCert(t, t.TempDir(), "a", 1, time.Now().Add(time.Hour))
	g := newFakeGateway()
	ends := make(chan *os.File, 1)
	g.onAdopt = func(f *os.File) { ends <- f }
	f, addr := start(t, g.options(c))
	cl := dial(t, addr, clientConfig(c))
	end := <-ends
	rawDial(t, addr) // a handshake in progress
	checkFor(t, 10*time.Second, func() error {
		if n := f.Stats().Handshaking; n != 1 {
			return fmt.Errorf("%d handshakes in progress", n)
		}
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- f.Shutdown(context.Background()) }()
	r := g.nextRefusal(t)
	if !errors.Is(r.err, ErrClosed) || Classify(r.err).Audit {
		t.Fatalf("handshake in progress refused with %v", r.err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("the listener still accepts after Shutdown")
	}
	// The gateway drains: it says goodbye and closes its end.
	_, _ = end.Write([]byte("bye"))
	end.Close()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got, err := io.ReadAll(cl); string(got) != "bye" || err != nil {
		t.Fatalf("client read %q, %v", got, err)
	}

	// A Shutdown whose context ends closes what is left.
	f2, addr2 := start(t, g.options(c))
	cl2 := dial(t, addr2, clientConfig(c))
	end2 := <-ends
	defer end2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := f2.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want the context's error", err)
	}
	if _, err := cl2.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection survived a forced shutdown")
	}
}

// Classify's table: every sentinel to its reason.
func TestClassify(t *testing.T) {
	cases := []struct {
		err   error
		want  reason.Reason
		audit bool
	}{
		{ErrHandshakeTimeout, reason.HandshakeTimeout, true},
		{fmt.Errorf("%w (5)", ErrHandshakeTooLarge), reason.HandshakeTooLarge, true},
		{ErrPlainHTTP, reason.TLSHandshake, true},
		{errors.New("tls: client offered only unsupported versions: [302]"), reason.TLSHandshake, true},
		{&wrapped{kind: ErrClientAlert, err: errors.New("remote error: tls: bad certificate")}, reason.TLSClientAlert, true},
		{ErrTooManyHandshakes, reason.GlobalConnections, true},
		{fmt.Errorf("%w: socketpair: too many open files", ErrNoDescriptors), reason.FDExhausted, true},
		{ErrClosed, reason.ShuttingDown, false},
		{ErrClientGone, reason.ClientClosed, false},
	}
	for _, c := range cases {
		got := Classify(c.err)
		if got.Reason != c.want || got.Audit != c.audit || got.Detail != c.err.Error() {
			t.Errorf("Classify(%v) = %+v, want %s audit %v", c.err, got, c.want, c.audit)
		}
	}
	long := errors.New(strings.Repeat("x", 1000))
	if d := Classify(long).Detail; len(d) != maxDetail {
		t.Errorf("detail of %d bytes", len(d))
	}
}

// The gateway writes more than the client's socket takes, then closes
// its end while the client is not reading: everything it wrote still
// reaches the client, then close_notify, once the client reads; the
// bridge does not spin on the hang-up meanwhile.
func TestGatewayCloseWhileClientSlow(t *testing.T) {
	c := newCert(t, t.TempDir(), "a", 1, time.Now().Add(time.Hour))
	g := newFakeGateway()
	ends := make(chan *os.File, 1)
	g.onAdopt = func(f *os.File) { ends <- f }
	o := g.options(c)
	o.SendBufferBytes = 4 << 10
	f, addr := start(t, o)
	cl := dial(t, addr, clientConfig(c))
	end := <-ends
	msg := make([]byte, 100<<10) // fits in the pair: the gateway's close comes while the client is stalled
	_, _ = rand.Read(msg)
	wrote := make(chan error, 1)
	go func() {
		_, err := end.Write(msg)
		end.Close()
		wrote <- err
	}()
	time.Sleep(200 * time.Millisecond) // the client's socket and the pair fill up
	got, err := io.ReadAll(cl)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("client read %d bytes (%v), want the %d written", len(got), err, len(msg))
	}
	if err := <-wrote; err != nil {
		t.Fatalf("gateway write: %v", err)
	}
	checkFor(t, 10*time.Second, bridged(f, 0))
}
