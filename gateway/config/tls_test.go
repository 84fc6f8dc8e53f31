package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeExpiringPair writes a self-signed certificate valid until notAfter and its
// key (0600) into dir and returns their paths.
func writeExpiringPair(t *testing.T, dir, name string, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"},
		NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestTLSKeys(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeExpiringPair(t, dir, "a", time.Now().Add(time.Hour))
	otherCert, _ := writeExpiringPair(t, dir, "b", time.Now().Add(time.Hour))
	oldCert, oldKey := writeExpiringPair(t, dir, "old", time.Now().Add(-time.Hour))
	openCert, openKey := writeExpiringPair(t, dir, "open", time.Now().Add(time.Hour))
	if err := os.Chmod(openKey, 0o640); err != nil {
		t.Fatal(err)
	}
	tlsYAML := func(cert, key, extra string) string {
		return fmt.Sprintf("tls:\n  cert_file: %q\n  key_file: %q\n%s", cert, key, extra)
	}

	c, err := Load(write(t, tlsYAML(cert, key, "  min_version: \"1.3\"\n")))
	if err != nil {
		t.Fatalf("a good pair: %v", err)
	}
	if c.TLS.CertFile != cert || c.TLS.MinVersion != "1.3" {
		t.Fatalf("%+v", c.TLS)
	}
	if d := Default(); d.TLS.CertFile != "" || d.TLS.MinVersion != "1.2" {
		t.Fatalf("defaults: %+v", d.TLS)
	}

	cases := []struct {
		name, yaml string
		want       string
	}{
		{"cert without key", "tls:\n  cert_file: " + cert + "\n", ":2:3: tls.cert_file: is set without tls.key_file"},
		{"key without cert", "tls:\n  key_file: " + key + "\n", ":2:3: tls.key_file: is set without tls.cert_file"},
		{"unknown version", "tls:\n  min_version: 1.1\n", `:2:3: tls.min_version: "1.1" must be "1.2" or "1.3"`},
		{"key of another certificate", tlsYAML(otherCert, key, ""), ":2:3: tls.cert_file: " + otherCert + " and tls.key_file " + key + " do not load"},
		{"expired", tlsYAML(oldCert, oldKey, ""), ":2:3: tls.cert_file: " + oldCert + " expired at"},
		{"key readable by group", tlsYAML(openCert, openKey, ""), ":3:3: tls.key_file: " + openKey + " is readable by group or others (mode 0640)"},
		{"missing key file", tlsYAML(cert, key+".nope", ""), ":3:3: tls.key_file: stat " + key + ".nope: no such file"},
		{"with proxy protocol", tlsYAML(cert, key, "trusted_proxies: [10.0.0.0/8]\nproxy_protocol: true\n"), ":5:1: proxy_protocol: cannot be combined with tls.cert_file"},
		{"unknown key", "tls:\n  cert: x\n", ":2:3: tls.cert: unknown key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(write(t, tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
