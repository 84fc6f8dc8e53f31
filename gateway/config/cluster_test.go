package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestClusterAbsentByDefault: without a cluster block nothing is enabled,
// and the embedded defaults have none.
func TestClusterAbsentByDefault(t *testing.T) {
	if Default().Cluster.Enabled() {
		t.Fatal("the embedded defaults enable the cluster")
	}
	c, err := Load(write(t, "listen: 127.0.0.1:0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.Enabled() || c.Cluster.OnRedisDown != "" {
		t.Fatalf("cluster without a block: %+v", c.Cluster)
	}
}

// TestClusterDefaultsFilled: an empty block gets every default.
func TestClusterDefaultsFilled(t *testing.T) {
	c, err := Load(write(t, "cluster: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Cluster
	if !cl.Enabled() || !slices.Equal(cl.Redis.Addrs, []string{DefaultRedisAddr}) ||
		cl.Redis.KeyPrefix != DefaultKeyPrefix || cl.OnRedisDown != OnRedisDownDegrade || cl.RedisCluster() {
		t.Fatalf("defaults not filled: %+v", cl)
	}
	c, err = Load(write(t, "cluster:\n  node: a-1\n  redis:\n    addrs: [\"10.0.0.1:7000\", \"10.0.0.2:7000\"]\n    key_prefix: \"pc:\"\n  on_redis_down: refuse\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.Node != "a-1" || !c.Cluster.RedisCluster() || c.Cluster.Redis.KeyPrefix != "pc:" || c.Cluster.OnRedisDown != OnRedisDownRefuse {
		t.Fatalf("keys not read: %+v", c.Cluster)
	}
}

// TestClusterErrors: every bad key is named with its position.
func TestClusterErrors(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.pw")
	if err := os.WriteFile(open, []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.pw")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ yaml, want string }{
		{"cluster:\n  node: \"a b\"\n", ":2:3: cluster.node: \"a b\" must be 1 to 64"},
		{"cluster:\n  redis:\n    addrs: []\n", ":3:5: cluster.redis.addrs: must name at least one host:port"},
		{"cluster:\n  redis:\n    addrs:\n      - \"127.0.0.1:6379\"\n      - \"nohost\"\n", ":5:9: cluster.redis.addrs[1]: \"nohost\" must be host:port"},
		{"cluster:\n  redis:\n    addrs: [\"h:0\"]\n", "cluster.redis.addrs[0]: \"h:0\": port must be 1 to 65535"},
		{"cluster:\n  redis:\n    addrs: [\"a:1\", \"b:1\"]\n    db: 2\n", ":4:5: cluster.redis.db: 2: a Redis Cluster (several addrs, no master_name) has only db 0"},
		{"cluster:\n  redis:\n    db: -1\n", ":3:5: cluster.redis.db: -1 must be 0 or more"},
		{"cluster:\n  redis:\n    key_prefix: \"a b\"\n", ":3:5: cluster.redis.key_prefix: \"a b\" must be 1 to 64"},
		{"cluster:\n  redis:\n    key_prefix: \"\"\n", "cluster.redis.key_prefix: \"\" must be"},
		{"cluster:\n  on_redis_down: panic\n", ":2:3: cluster.on_redis_down: \"panic\" must be degrade or refuse"},
		{"cluster:\n  redis:\n    password_file: " + open + "\n", ":3:5: cluster.redis.password_file: " + open + " is readable by group or others (mode 0644): chmod 600"},
		{"cluster:\n  redis:\n    password_file: " + empty + "\n", "cluster.redis.password_file: " + empty + " is empty"},
		{"cluster:\n  redis:\n    password_file: " + filepath.Join(dir, "none") + "\n", "cluster.redis.password_file: stat "},
		{"cluster:\n  redis:\n    adrs: []\n", ":3:5: cluster.redis.adrs: unknown key"},
		{"cluster:\n", ":1:9: cluster: want a mapping"},
	}
	for _, tc := range cases {
		p := write(t, tc.yaml)
		_, err := Load(p)
		if err == nil {
			t.Errorf("%q: loaded", tc.yaml)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%q:\n got %v\nwant %s (in %s)", tc.yaml, err, tc.want, p)
		}
	}
}

// TestReadSecretFile: the first line, trimmed.
func TestReadSecretFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(p, []byte("  s3cret \nignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := ReadSecretFile(p)
	if err != nil || s != "s3cret" {
		t.Fatalf("ReadSecretFile = %q, %v", s, err)
	}
}
