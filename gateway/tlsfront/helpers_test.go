package tlsfront

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testCert is a self-signed certificate for 127.0.0.1 and localhost.
type testCert struct {
	certFile, keyFile string
	leaf              *x509.Certificate
	key               *ecdsa.PrivateKey
}

// newCert writes a self-signed P-256 certificate with the given serial
// and expiry, and its key (0600), into dir under name.
func newCert(t testing.TB, dir, name string, serial int64, notAfter time.Time) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return writeCert(t, dir, name, serial, notAfter, key)
}

func writeCert(t testing.TB, dir, name string, serial int64, notAfter time.Time, key *ecdsa.PrivateKey) testCert {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "portcullis test"},
		NotBefore:    notAfter.Add(-48 * time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true,
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := testCert{certFile: filepath.Join(dir, name+".crt"), keyFile: filepath.Join(dir, name+".key"), leaf: leaf, key: key}
	if err := os.WriteFile(c.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// refusal is one call of Options.Refused.
type refusal struct {
	peer netip.AddrPort
	err  error
}

// fakeGateway stands in for the gateway: Admit answers admit, Adopt
// records the peer and hands the fd to onAdopt (an echo by default),
// Refused records.
type fakeGateway struct {
	mu      sync.Mutex
	admit   bool
	admits  int
	adopted []netip.AddrPort
	refused chan refusal
	onAdopt func(f *os.File)
}

func newFakeGateway() *fakeGateway {
	return &fakeGateway{admit: true, refused: make(chan refusal, 16), onAdopt: echo}
}

// echo serves a socket pair end as a gateway would at its simplest:
// everything read is written back; at EOF it closes.
func echo(f *os.File) {
	go func() {
		defer f.Close()
		_, _ = io.Copy(f, f)
	}()
}

func (g *fakeGateway) options(c testCert) Options {
	return Options{
		CertFile: c.certFile,
		KeyFile:  c.keyFile,
		Admit: func(netip.AddrPort) (bool, bool) {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.admits++
			return g.admit, true
		},
		Adopt: func(fd int, peer netip.AddrPort, counted bool) error {
			if !counted {
				panic("Adopt lost Admit's counted")
			}
			g.mu.Lock()
			g.adopted = append(g.adopted, peer)
			on := g.onAdopt
			g.mu.Unlock()
			on(os.NewFile(uintptr(fd), "gateway end"))
			return nil
		},
		Refused: func(peer netip.AddrPort, counted bool, err error) {
			if !counted {
				panic("Refused lost Admit's counted")
			}
			g.refused <- refusal{peer, err}
		},
	}
}

// nextRefusal waits for the next Refused call.
func (g *fakeGateway) nextRefusal(t *testing.T) refusal {
	t.Helper()
	select {
	case r := <-g.refused:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Refused was not called")
		return refusal{}
	}
}

// start serves a Front with o on a loopback port and returns it with its
// address; it is closed when the test ends.
func start(t testing.TB, o Options) (*Front, string) {
	t.Helper()
	f, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- f.Serve(ln) }()
	t.Cleanup(func() {
		f.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f, ln.Addr().String()
}

// clientConfig trusts c only.
func clientConfig(c testCert) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(c.leaf)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}}
}

func dial(t testing.TB, addr string, cfg *tls.Config) *tls.Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// checkFor polls cond until it returns nil or timeout passes.
func checkFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func bridged(f *Front, want int) func() error {
	return func() error {
		if n := f.Stats().Bridged; n != want {
			return fmt.Errorf("%d connections bridged, want %d", n, want)
		}
		return nil
	}
}

// isReset reports whether err is what a client sees of a connection the
// server reset or closed without a TLS answer.
func isReset(err error) bool {
	var ne *net.OpError
	return errors.Is(err, io.EOF) || errors.As(err, &ne)
}
