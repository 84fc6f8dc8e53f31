package tlsfront

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"
)

// ParseVersion parses the config spelling of a minimum TLS version:
// "1.2" or "1.3".
func ParseVersion(s string) (uint16, error) {
	switch s {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("tls.min_version %q: must be \"1.2\" or \"1.3\"", s)
}

// Pair is a loaded certificate and the files it came from. A Pair is
// never changed once loaded: a reload loads a new one.
type Pair struct {
	cert              *tls.Certificate
	certFile, keyFile string
}

// LoadPair reads and checks a certificate pair as New and Reload do,
// without serving it: a reload loads the new pair first and puts it in
// use (Front.Use) only once every other part of the reload has been
// prepared.
func LoadPair(certFile, keyFile string) (*Pair, error) {
	return loadPair(certFile, keyFile, time.Now())
}

// Leaf is the pair's certificate (serial, expiry), not to be modified.
func (p *Pair) Leaf() *x509.Certificate { return p.cert.Leaf }

// Certificate is the pair as crypto/tls serves it, for another server's
// tls.Config.GetCertificate (the admin API's); not to be modified.
func (p *Pair) Certificate() *tls.Certificate { return p.cert }

// Use serves p to new handshakes; handshakes already done keep theirs.
// Safe for concurrent use.
func (f *Front) Use(p *Pair) { f.pair.Store(p) }

// loadPair reads a PEM certificate chain and its private key and checks
// them as of now: the key file readable by its owner only, the key
// matching the leaf, the leaf not expired.
func loadPair(certFile, keyFile string, now time.Time) (*Pair, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("tls: cert_file and key_file are both required")
	}
	st, err := os.Stat(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: key file: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("tls: key file %s is readable by group or others (mode %04o): chmod 600 %s", keyFile, perm, keyFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load %s and %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls: parse %s: %w", certFile, err)
		}
	}
	if now.After(cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("tls: certificate %s expired at %s", certFile, cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &Pair{cert: &cert, certFile: certFile, keyFile: keyFile}, nil
}

// Reload re-reads the certificate and key files the Front serves. A pair
// that does not load (unreadable, mismatched, expired, a key readable by
// others) is refused with an error and the pair in use stays; handshakes
// already done are not affected. Safe for concurrent use.
func (f *Front) Reload() error {
	p := f.pair.Load()
	return f.ReloadFiles(p.certFile, p.keyFile)
}

// ReloadFiles loads the pair from the given files, which may differ from
// the ones in use (a reload that changed tls.cert_file or tls.key_file),
// and serves it to new handshakes. On error nothing changes.
func (f *Front) ReloadFiles(certFile, keyFile string) error {
	p, err := loadPair(certFile, keyFile, time.Now())
	if err != nil {
		return err
	}
	f.pair.Store(p)
	return nil
}

// Leaf returns the certificate new handshakes are served, for the reload
// audit line (serial, expiry). The caller must not modify it.
func (f *Front) Leaf() *x509.Certificate { return f.pair.Load().cert.Leaf }

// getCertificate is tls.Config.GetCertificate: the current pair, whatever
// the server name asked for.
func (f *Front) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f.pair.Load().cert, nil
}
