package config

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"
)

// resolveTimeout bounds the lookup of a host name in admin.listen.
const resolveTimeout = 3 * time.Second

// listener is where a listen key binds: every address (both families, as
// an empty host or "::" binds), every IPv4 address ("0.0.0.0"), or the
// addresses of an IP literal or a resolved name.
type listener struct {
	all, all4 bool
	addrs     []netip.Addr
	port      uint16
}

// loopback reports whether only this host can reach the listener.
func (l listener) loopback() bool {
	if l.all || l.all4 || len(l.addrs) == 0 {
		return false
	}
	for _, a := range l.addrs {
		if !a.IsLoopback() {
			return false
		}
	}
	return true
}

// overlaps reports whether l and o bind a common address (the port aside).
func (l listener) overlaps(o listener) bool {
	if l.all || o.all {
		return true
	}
	has4 := func(x listener) bool {
		for _, a := range x.addrs {
			if a.Is4() {
				return true
			}
		}
		return x.all4
	}
	if (l.all4 && has4(o)) || (o.all4 && has4(l)) {
		return true
	}
	for _, a := range l.addrs {
		for _, b := range o.addrs {
			if a == b {
				return true
			}
		}
	}
	return false
}

// validateListeners checks listen and admin.listen: host:port syntax, a
// port from 1 to 65535, a host the listener can bind, that the two do not
// share an address and port, and that the admin API is on loopback unless
// admin.tls is set.
func (d *decoder) validateListeners() {
	c := d.c
	pub, pubOK := d.listenAddr("listen", c.Listen, false)
	adm, admOK := d.listenAddr("admin.listen", c.Admin.Listen, true)
	if pubOK && admOK && pub.port != 0 && pub.port == adm.port && pub.overlaps(adm) {
		// Named at the key the file set, the other one's place in brackets.
		key, v, other, ov := "admin.listen", c.Admin.Listen, "listen", c.Listen
		if _, set := d.pos[key]; !set {
			key, v, other, ov = other, ov, key, v
		}
		d.bad(key, "%q and %s %q (at %s) bind the same port %d on a common address: give the admin API a port of its own",
			v, other, ov, d.at(other), adm.port)
	}
	tlsSet := d.validateAdminTLS()
	if admOK && !adm.loopback() && !tlsSet {
		d.bad("admin.listen", "%q is reachable from other hosts, and admin.tls is not set: the admin key and every admin request "+
			"would cross the network in clear; listen on 127.0.0.1 or ::1 (reach it with ssh -L), or set admin.tls", c.Admin.Listen)
	}
}

// listenAddr parses one listen key. The public listener binds an IP
// literal, localhost or every address (empty host); the admin listener
// also takes a host name, which must resolve.
func (d *decoder) listenAddr(key, s string, names bool) (listener, bool) {
	var l listener
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		d.bad(key, "%q must be host:port, e.g. \":8080\", \"127.0.0.1:8081\" or \"[::1]:8081\" (empty host: every address)", s)
		return l, false
	}
	p, err := strconv.ParseUint(port, 10, 64)
	switch {
	case err != nil:
		d.bad(key, "%q: port %q must be a number from 1 to 65535", s, port)
		return l, false
	case p > 65535:
		d.bad(key, "%q: port %d is above 65535", s, p)
		return l, false
	}
	l.port = uint16(p)
	switch host {
	case "", "::":
		l.all = true
	case "0.0.0.0":
		l.all4 = true
	case "localhost":
		// The gateway binds 127.0.0.1 for it; the admin API whatever the
		// name resolves to, which is loopback on every sane host.
		l.addrs = []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()}
	default:
		if a, err := netip.ParseAddr(host); err == nil {
			l.addrs = []netip.Addr{a.Unmap()}
			break
		}
		if !names {
			d.bad(key, "%q: host %q must be an IP address, localhost, or empty for every address", s, host)
			return l, false
		}
		ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		cancel()
		if err != nil || len(addrs) == 0 {
			d.bad(key, "%q: host %q does not resolve (%v): use an IP address", s, host, err)
			return l, false
		}
		for _, a := range addrs {
			l.addrs = append(l.addrs, a.Unmap())
		}
	}
	if l.port == 0 && !l.loopback() {
		d.bad(key, "%q: port 0 binds a random free port nobody could find: name the port (port 0 is accepted on loopback only, for tests)", s)
		return l, false
	}
	return l, true
}

// validateAdminTLS checks admin.tls and reports whether it is set. Both
// files must exist, the key must be readable by its owner only, and the
// two must load as a certificate and its private key.
func (d *decoder) validateAdminTLS() bool {
	t := d.c.Admin.TLS
	if t.CertFile == "" && t.KeyFile == "" {
		return false
	}
	if t.CertFile == "" || t.KeyFile == "" {
		d.bad("admin.tls", "needs both cert_file and key_file")
		return true
	}
	ok := true
	if _, err := os.Stat(t.CertFile); err != nil {
		d.bad("admin.tls.cert_file", "%v", err)
		ok = false
	}
	if st, err := os.Stat(t.KeyFile); err != nil {
		d.bad("admin.tls.key_file", "%v", err)
		ok = false
	} else if st.Mode().Perm()&0o077 != 0 {
		d.bad("admin.tls.key_file", "%s is readable by group or others (mode %04o): chmod 600 %s", t.KeyFile, st.Mode().Perm(), t.KeyFile)
		ok = false
	}
	if ok {
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			d.bad("admin.tls", "cert_file %s and key_file %s do not load as a certificate and its key: %v", t.CertFile, t.KeyFile, err)
		}
	}
	return true
}
