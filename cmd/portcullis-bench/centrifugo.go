package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// centrifugoVersion is the peer the benchmarks compare against.
const centrifugoVersion = "v6.9.1"

// centrifugo is a Centrifugo v6 server started for a comparison run, with
// HMAC connection JWTs, an HTTP API key, and channels open to any
// authenticated client: the closest match to one token-checked subscribe.
type centrifugo struct {
	cmd    *exec.Cmd
	dir    string
	port   int
	secret string
	apiKey string
	client *http.Client
}

// centrifugoBinary returns bin, or installs the pinned version with
// `go install` into the user cache (never into the repository).
func centrifugoBinary(bin string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "portcullis-bench", "centrifugo-"+centrifugoVersion)
	path := filepath.Join(dir, "centrifugo")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	fmt.Fprintf(os.Stderr, "installing centrifugo %s into %s (once)…\n", centrifugoVersion, dir)
	cmd := exec.Command("go", "install", "github.com/centrifugal/centrifugo/v6@"+centrifugoVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go install centrifugo: %w", err)
	}
	return path, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// centrifugoOptions are what the nodes of a clustered run share: the
// token secret, the API key and the redis-server of the Redis engine. The
// zero value is a single node with the memory engine and secrets of its own.
type centrifugoOptions struct {
	secret, apiKey string
	redisAddr      string // host:port; "" is the memory engine
}

func startCentrifugo(bin string) (*centrifugo, error) {
	return startCentrifugoWith(bin, centrifugoOptions{})
}

// startCentrifugoWith starts a Centrifugo node with o.
func startCentrifugoWith(bin string, o centrifugoOptions) (*centrifugo, error) {
	if o.secret == "" {
		o.secret, o.apiKey = randomHex(32), randomHex(16)
	}
	bin, err := centrifugoBinary(bin)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "portcullis-bench-centrifugo")
	if err != nil {
		return nil, err
	}
	c := &centrifugo{dir: dir, port: port, secret: o.secret, apiKey: o.apiKey,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	cfg := map[string]any{
		"http_server": map[string]any{"address": "127.0.0.1", "port": port},
		"log":         map[string]any{"level": "error"},
		"client": map[string]any{
			"token":           map[string]any{"hmac_secret_key": c.secret},
			"allowed_origins": []string{"*"},
		},
		"http_api": map[string]any{"key": c.apiKey},
		"channel":  map[string]any{"without_namespace": map[string]any{"allow_subscribe_for_client": true}},
	}
	if o.redisAddr != "" {
		// Centrifugo v6: engine.type redis, engine.redis.{address, db,
		// prefix}; publications go through Redis PUBLISH, each node
		// subscribing to a channel while it has subscribers of it.
		cfg["engine"] = map[string]any{"type": "redis", "redis": map[string]any{
			"address": []string{o.redisAddr}, "db": centrifugoRedisDB, "prefix": "centrifugo-bench"}}
	}
	if benchTLS != nil {
		tc, err := clientTLS(benchTLS.certFile)
		if err != nil {
			return nil, err
		}
		cfg["http_server"].(map[string]any)["tls"] = map[string]any{
			"enabled": true, "cert_pem": benchTLS.certFile, "key_pem": benchTLS.keyFile}
		c.client.Transport.(*http.Transport).TLSClientConfig = tc
	}
	b, _ := json.Marshal(cfg)
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, err
	}
	c.cmd = serverCommand(bin, "--config", path)
	c.cmd.Stderr = os.Stderr
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start centrifugo: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			conn.Close()
			return c, nil
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, errors.New("centrifugo did not start listening")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *centrifugo) name() string       { return "centrifugo" }
func (c *centrifugo) pid() int           { return c.cmd.Process.Pid }
func (c *centrifugo) protocol() string   { return "centrifugo" }
func (c *centrifugo) stats() serverStats { return serverStats{} }
func (c *centrifugo) url() string {
	if benchTLS != nil {
		return "wss://127.0.0.1:" + strconv.Itoa(c.port) + "/connection/websocket"
	}
	return "ws://127.0.0.1:" + strconv.Itoa(c.port) + "/connection/websocket"
}

// base is the URL of Centrifugo's HTTP endpoints.
func (c *centrifugo) base() string {
	if benchTLS != nil {
		return "https://127.0.0.1:" + strconv.Itoa(c.port)
	}
	return "http://127.0.0.1:" + strconv.Itoa(c.port)
}

// mint signs connection JWTs locally, as a site's backend would.
func (c *centrifugo) mint(n int, topic string) ([]string, error) {
	toks := make([]string, n)
	exp := time.Now().Add(time.Hour).Unix()
	for i := range toks {
		t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u" + strconv.Itoa(i), "exp": exp})
		s, err := t.SignedString([]byte(c.secret))
		if err != nil {
			return nil, err
		}
		toks[i] = s
	}
	return toks, nil
}

func (c *centrifugo) publish(topic string, data json.RawMessage) error {
	b, _ := json.Marshal(map[string]any{"channel": topic, "data": data})
	req, _ := http.NewRequest("POST", c.base()+"/api/publish", bytes.NewReader(b))
	req.Header.Set("X-API-Key", c.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || bytes.Contains(raw, []byte(`"error"`)) {
		return fmt.Errorf("centrifugo publish: %d %s", resp.StatusCode, raw)
	}
	return nil
}

func (c *centrifugo) stop() {
	interrupt(c.cmd, 15*time.Second)
	os.RemoveAll(c.dir)
}
