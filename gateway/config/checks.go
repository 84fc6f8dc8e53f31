package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"
)

// validateTokens checks the token source and, for jwt, where its keys live.
func (d *decoder) validateTokens() {
	t := d.c.Tokens
	switch t.Source {
	case "store":
	case "jwt":
		algs := t.JWT.Algorithms
		if len(algs) == 0 {
			d.bad("tokens.jwt.algorithms", "must name HS256, EdDSA or both")
		}
		for i, a := range algs {
			switch a {
			case "HS256":
				if (t.JWT.SecretEnv == "") == (t.JWT.SecretFile == "") {
					d.bad("tokens.jwt", "HS256 needs exactly one of secret_env or secret_file (secrets never live in the YAML)")
				}
			case "EdDSA":
				if t.JWT.PublicKeyFile == "" {
					d.bad("tokens.jwt.public_key_file", "EdDSA needs a PEM Ed25519 public key file")
				}
			default:
				d.bad(fmt.Sprintf("tokens.jwt.algorithms[%d]", i), "%q: supported are HS256 and EdDSA (never none)", a)
			}
		}
		// Compared byte for byte with the token's aud and iss: stray
		// spaces would refuse every token.
		for _, kv := range [...]struct{ key, v string }{{"tokens.jwt.audience", t.JWT.Audience}, {"tokens.jwt.issuer", t.JWT.Issuer}} {
			if len(kv.v) > 256 || strings.TrimSpace(kv.v) != kv.v || strings.ContainsFunc(kv.v, unicode.IsControl) {
				d.bad(kv.key, "%q must be at most 256 bytes, without control characters or surrounding spaces", kv.v)
			}
		}
	case "sql":
		d.validateTokensSQL()
	default:
		d.bad("tokens.source", "%q must be store, jwt or sql", t.Source)
	}
}

// validateLimits checks the address-keyed limits and the client IP keys.
func (d *decoder) validateLimits() {
	c := d.c
	l := c.Limits
	if l.PerIPConnections <= 0 {
		d.bad("limits.per_ip_connections", "must be positive (zero is not \"unlimited\")")
	} else if l.PerIPConnections > l.MaxConnections {
		d.bad("limits.per_ip_connections", "%d is above limits.max_connections %d", l.PerIPConnections, l.MaxConnections)
	}
	for _, r := range []struct {
		key string
		r   Rate
	}{{"limits.conn_rate", l.ConnRate}, {"limits.handshake_fail_rate", l.HandshakeFailRate}, {"limits.msg_rate", l.MsgRate}} {
		if r.r.Rate <= 0 {
			d.bad(r.key+".rate", "must be a positive number of events per second")
		}
		if r.r.Burst < 0 {
			d.bad(r.key+".burst", "must not be negative")
		}
	}
	d.validateInbound()
	if l.IPv6Prefix < 32 || l.IPv6Prefix > 128 {
		d.bad("limits.ipv6_prefix", "%d must be between 32 and 128 (64 counts one subscriber line)", l.IPv6Prefix)
	}
	d.cidrs("trusted_proxies", c.TrustedProxies)
	switch strings.ToLower(c.ClientIPHeader) {
	case "x-forwarded-for", "x-real-ip", "cf-connecting-ip":
	default:
		d.bad("client_ip_header", "%q must be X-Forwarded-For, X-Real-IP or CF-Connecting-IP", c.ClientIPHeader)
	}
	if c.ProxyProtocol && len(c.TrustedProxies) == 0 {
		d.bad("proxy_protocol", "needs trusted_proxies: a PROXY header is accepted only from a trusted proxy")
	}
}

// validateInbound checks the limits on inbound bytes: the message
// timeout, the budgets of bytes held and the per-address byte rate.
func (d *decoder) validateInbound() {
	l := d.c.Limits
	if l.MessageTimeout <= 0 {
		d.bad("limits.message_timeout", "must be a positive duration")
	}
	switch {
	case l.InboundBufferPerIP <= 0:
		d.bad("limits.inbound_buffer_per_ip", "must be a positive number of bytes (zero is not \"unlimited\")")
	case l.InboundBufferPerIP < l.MaxMessageBytes:
		d.bad("limits.inbound_buffer_per_ip", "%d is below limits.max_message_bytes %d (at %s): one unfinished message of that size must fit",
			l.InboundBufferPerIP, l.MaxMessageBytes, d.at("limits.max_message_bytes"))
	}
	switch {
	case l.InboundBufferTotal <= 0:
		d.bad("limits.inbound_buffer_total", "must be a positive number of bytes (zero is not \"unlimited\")")
	case l.InboundBufferTotal < l.InboundBufferPerIP:
		d.bad("limits.inbound_buffer_total", "%d is below limits.inbound_buffer_per_ip %d (at %s)",
			l.InboundBufferTotal, l.InboundBufferPerIP, d.at("limits.inbound_buffer_per_ip"))
	}
	if l.BytesRate.Rate <= 0 {
		d.bad("limits.bytes_rate.rate", "must be a positive number of bytes per second")
	}
	if l.BytesRate.Burst < l.MaxMessageBytes {
		d.bad("limits.bytes_rate.burst", "%d is below limits.max_message_bytes %d (at %s): one message of that size must fit in the burst",
			l.BytesRate.Burst, l.MaxMessageBytes, d.at("limits.max_message_bytes"))
	}
}

// validateBans checks the ban ladder and the static lists.
func (d *decoder) validateBans() {
	b := d.c.Bans
	posd := func(key string, v interface{ Seconds() float64 }) {
		if v.Seconds() <= 0 {
			d.bad(key, "must be a positive duration")
		}
	}
	posd("bans.findtime", b.FindTime)
	posd("bans.bantime", b.BanTime)
	posd("bans.maxtime", b.MaxTime)
	if b.MaxRetry <= 0 {
		d.bad("bans.maxretry", "must be positive")
	}
	if b.Factor < 1 {
		d.bad("bans.factor", "%g must be at least 1 (repeat bans never get shorter)", b.Factor)
	}
	if b.MaxTime < b.BanTime {
		d.bad("bans.maxtime", "%s is below bans.bantime %s (at %s)", b.MaxTime, b.BanTime, d.at("bans.bantime"))
	}
	if b.KernelDropRate < 0 {
		d.bad("bans.kernel_drop_rate", "must not be negative (0: never)")
	}
	d.cidrs("bans.allow", b.Allow)
	d.cidrs("bans.block", b.Block)
	for i, f := range b.BlockFiles {
		if f == "" {
			d.bad(fmt.Sprintf("bans.block_files[%d]", i), "must be a file path")
		}
	}
}

// cidrs checks a list of CIDRs or bare addresses.
func (d *decoder) cidrs(key string, list []string) {
	for i, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			if p != p.Masked() {
				d.bad(fmt.Sprintf("%s[%d]", key, i), "%q has host bits set; did you mean %s?", s, p.Masked())
			}
			continue
		}
		if _, err := netip.ParseAddr(s); err == nil {
			continue
		}
		d.bad(fmt.Sprintf("%s[%d]", key, i), "%q is not a CIDR (10.0.0.0/8, 2001:db8::/32) or an address", s)
	}
}

// validateAudit checks the audit trail keys.
func (d *decoder) validateAudit() {
	a := d.c.Audit
	if a.Fsync != "always" {
		if v, err := time.ParseDuration(a.Fsync); err != nil || v <= 0 {
			d.bad("audit.fsync", "%q must be a positive duration such as 1s, or always", a.Fsync)
		}
	}
	if a.RotateBytes < 1<<20 {
		d.bad("audit.rotate_bytes", "%d is below 1 MiB", a.RotateBytes)
	}
	if a.Retain <= 0 {
		d.bad("audit.retain", "must be a positive duration")
	}
	if a.RetainBytes < a.RotateBytes {
		d.bad("audit.retain_bytes", "%d is below audit.rotate_bytes %d", a.RetainBytes, a.RotateBytes)
	}
	switch a.OnFailure {
	case "fail_open", "fail_closed":
	default:
		d.bad("audit.on_failure", "%q must be fail_open or fail_closed", a.OnFailure)
	}
}
