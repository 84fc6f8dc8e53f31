package config

import (
	"crypto/tls"
	"os"
	"time"
)

// TLSVersions are the values tls.min_version accepts.
var TLSVersions = []string{"1.2", "1.3"}

// validateTLS checks the public listener's certificate: both files or
// neither, a key file only its owner can read, a pair that loads and whose
// leaf has not expired, and a known minimum version. gateway/tlsfront makes
// the same checks when it loads (and reloads) the pair.
func (d *decoder) validateTLS() {
	c := d.c
	t := c.TLS
	known := false
	for _, v := range TLSVersions {
		known = known || t.MinVersion == v
	}
	if !known {
		d.bad("tls.min_version", "%q must be \"1.2\" or \"1.3\"", t.MinVersion)
	}
	switch {
	case t.CertFile == "" && t.KeyFile == "":
		return // TLS off
	case t.CertFile == "":
		d.bad("tls.key_file", "is set without tls.cert_file: set both, or neither for a plain listener")
		return
	case t.KeyFile == "":
		d.bad("tls.cert_file", "is set without tls.key_file: set both, or neither for a plain listener")
		return
	}
	if c.ProxyProtocol {
		d.bad("proxy_protocol", "cannot be combined with tls.cert_file (at %s): a PROXY header ahead of the TLS handshake is not supported; terminate TLS at the proxy, or turn proxy_protocol off", d.at("tls.cert_file"))
	}
	st, err := os.Stat(t.KeyFile)
	if err != nil {
		d.bad("tls.key_file", "%v", err)
		return
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		d.bad("tls.key_file", "%s is readable by group or others (mode %04o): chmod 600 %s", t.KeyFile, perm, t.KeyFile)
	}
	pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		d.bad("tls.cert_file", "%s and tls.key_file %s do not load as a certificate and its key: %v", t.CertFile, t.KeyFile, err)
		return
	}
	if leaf := pair.Leaf; leaf != nil && time.Now().After(leaf.NotAfter) {
		d.bad("tls.cert_file", "%s expired at %s", t.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
}
