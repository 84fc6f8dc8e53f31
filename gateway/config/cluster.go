package config

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// Cluster joins this gateway to others through Redis (docs/CLUSTER.md). The
// embedded defaults have no `cluster:` block: a file without one leaves
// Cluster zero and the gateway alone. A file with one (`cluster: {}` is
// enough) gets the defaults below for every key it leaves out.
type Cluster struct {
	// Node is this node's name, in audit lines and alerts; empty: the
	// host name. Two running nodes never share a name.
	Node  string       `yaml:"node"`
	Redis ClusterRedis `yaml:"redis"`
	// OnRedisDown is what a node does while Redis cannot be reached:
	// degrade (serve local subscribers, refuse token redemptions) or
	// refuse (also refuse new connections with 503).
	OnRedisDown string `yaml:"on_redis_down"`
}

// ClusterRedis is the Redis (or Valkey) the nodes share.
type ClusterRedis struct {
	// Addrs is one address for a standalone server; several: Sentinels
	// (with MasterName) or the seeds of a Redis Cluster.
	Addrs        []string `yaml:"addrs"`
	MasterName   string   `yaml:"master_name"`   // the Sentinel master; empty: no Sentinel
	Username     string   `yaml:"username"`      // ACL user; empty: the default user
	PasswordFile string   `yaml:"password_file"` // file holding the password (0600); empty: none
	DB           int      `yaml:"db"`            // database number (standalone and Sentinel)
	TLS          bool     `yaml:"tls"`           // TLS to Redis, verified against the system roots
	KeyPrefix    string   `yaml:"key_prefix"`    // prefix of every key and channel
}

// The cluster defaults, filled in for the keys a `cluster:` block leaves
// out.
const (
	DefaultRedisAddr    = "127.0.0.1:6379"
	DefaultKeyPrefix    = "portcullis:"
	DefaultOnRedisDown  = OnRedisDownDegrade
	OnRedisDownDegrade  = "degrade"
	OnRedisDownRefuse   = "refuse"
	maxNodeNameLen      = 64
	maxKeyPrefixLen     = 64
	clusterModeMinAddrs = 2
)

// Enabled reports whether the file has a `cluster:` block.
func (c Cluster) Enabled() bool { return len(c.Redis.Addrs) > 0 }

// RedisCluster reports whether Addrs are the seeds of a Redis Cluster:
// several addresses and no Sentinel master.
func (c Cluster) RedisCluster() bool {
	return len(c.Redis.Addrs) >= clusterModeMinAddrs && c.Redis.MasterName == ""
}

// ValidNodeName reports whether name may name a node: 1 to 64 of
// [A-Za-z0-9._-] (it is part of a Redis key and of audit lines).
func ValidNodeName(name string) bool {
	if name == "" || len(name) > maxNodeNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '_' || b == '-') {
			return false
		}
	}
	return true
}

// validateCluster fills the defaults of a `cluster:` block the file has
// and checks its keys.
func (d *decoder) validateCluster() {
	if _, ok := d.pos["cluster"]; !ok {
		return // no block: this node alone
	}
	c := &d.c.Cluster
	r := &c.Redis
	if _, set := d.pos["cluster.redis.addrs"]; !set {
		r.Addrs = []string{DefaultRedisAddr}
	}
	if _, set := d.pos["cluster.redis.key_prefix"]; !set {
		r.KeyPrefix = DefaultKeyPrefix
	}
	if _, set := d.pos["cluster.on_redis_down"]; !set {
		c.OnRedisDown = DefaultOnRedisDown
	}

	if c.Node != "" && !ValidNodeName(c.Node) {
		d.bad("cluster.node", "%q must be 1 to %d of A-Z a-z 0-9 . _ - (it is part of a Redis key)", c.Node, maxNodeNameLen)
	}
	if len(r.Addrs) == 0 {
		d.bad("cluster.redis.addrs", "must name at least one host:port (remove the key for %s)", DefaultRedisAddr)
	}
	for i, a := range r.Addrs {
		k := fmt.Sprintf("cluster.redis.addrs[%d]", i)
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			d.badAt(k, "cluster.redis.addrs", "%q must be host:port", a)
			continue
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			d.badAt(k, "cluster.redis.addrs", "%q: port must be 1 to 65535", a)
		}
	}
	if r.MasterName != "" && strings.TrimSpace(r.MasterName) != r.MasterName {
		d.bad("cluster.redis.master_name", "%q has leading or trailing spaces", r.MasterName)
	}
	if r.DB < 0 {
		d.bad("cluster.redis.db", "%d must be 0 or more", r.DB)
	} else if r.DB != 0 && c.RedisCluster() {
		d.bad("cluster.redis.db", "%d: a Redis Cluster (several addrs, no master_name) has only db 0", r.DB)
	}
	if r.KeyPrefix == "" || len(r.KeyPrefix) > maxKeyPrefixLen || strings.ContainsAny(r.KeyPrefix, " \t\r\n{}*?[]") {
		d.bad("cluster.redis.key_prefix", "%q must be 1 to %d characters without spaces, braces or glob characters", r.KeyPrefix, maxKeyPrefixLen)
	}
	switch c.OnRedisDown {
	case OnRedisDownDegrade, OnRedisDownRefuse:
	default:
		d.bad("cluster.on_redis_down", "%q must be degrade or refuse", c.OnRedisDown)
	}
	if r.PasswordFile != "" {
		if _, err := ReadSecretFile(r.PasswordFile); err != nil {
			d.bad("cluster.redis.password_file", "%v", err)
		}
	}
}

// badAt reports a problem with element key of the list listKey, at the
// element's line when known.
func (d *decoder) badAt(key, listKey, format string, a ...any) {
	where := d.at(listKey)
	if p, ok := d.pos[key]; ok {
		where = p.String()
	}
	d.errs = append(d.errs, fmt.Sprintf("%s: %s: %s", where, key, fmt.Sprintf(format, a...)))
}

// ReadSecretFile reads a secret from path: a file only its owner can read
// or write (0600 or stricter), holding the secret on its first line
// (surrounding white space trimmed), not empty.
func ReadSecretFile(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s is readable by group or others (mode %04o): chmod 600 %s", path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s, _, _ := strings.Cut(string(b), "\n")
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}
