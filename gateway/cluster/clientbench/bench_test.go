package clientbench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

const (
	channel = "bench:topic:t"
	batch   = 64 // publications per pipeline, as the broker sends under load
)

var payload = []byte(strings.Repeat("x", 100))

// startRedis starts redis-server on a free loopback port for the benchmark.
func startRedis(b *testing.B) string {
	b.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") != "" {
			b.Fatal("redis-server not found: apt-get install redis-server")
		}
		b.Skip("redis-server not found: apt-get install redis-server")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := b.TempDir()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			fmt.Fprint(c, "PING\r\n")
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "+PONG") {
				return addr
			}
		}
		if i > 500 {
			b.Fatal("redis-server did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFor waits until got reaches n.
func waitFor(b *testing.B, got *atomic.Int64, n int64) {
	for got.Load() < n {
		time.Sleep(50 * time.Microsecond)
	}
}

// BenchmarkGoRedis: one op is one publication sent (pipelined) and
// received by the subscriber.
func BenchmarkGoRedis(b *testing.B) {
	addr := startRedis(b)
	ctx := context.Background()
	sub := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	pub := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	defer sub.Close()
	defer pub.Close()
	ps := sub.Subscribe(ctx, channel)
	if _, err := ps.Receive(ctx); err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	go func() {
		for range ps.Channel(redis.WithChannelSize(4096)) {
			got.Add(1)
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		n := min(batch, b.N-sent)
		p := pub.Pipeline()
		for range n {
			p.Publish(ctx, channel, payload)
		}
		if _, err := p.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	waitFor(b, &got, int64(b.N))
	b.StopTimer()
	_ = ps.Close()
}

// BenchmarkRueidis is BenchmarkGoRedis with rueidis (DoMulti batches, a
// dedicated subscription connection through Receive).
func BenchmarkRueidis(b *testing.B) {
	addr := startRedis(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var got atomic.Int64
	ready := make(chan struct{})
	go func() {
		_ = c.Receive(ctx, c.B().Subscribe().Channel(channel).Build(), func(rueidis.PubSubMessage) { got.Add(1) })
	}()
	// Wait for the subscription to be in place.
	go func() {
		for {
			n, _ := c.Do(ctx, c.B().PubsubNumsub().Channel(channel).Build()).AsIntMap()
			if n[channel] == 1 {
				close(ready)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	<-ready
	data := rueidis.BinaryString(payload)
	b.ReportAllocs()
	b.ResetTimer()
	cmds := make(rueidis.Commands, 0, batch)
	for sent := 0; sent < b.N; {
		n := min(batch, b.N-sent)
		cmds = cmds[:0]
		for range n {
			cmds = append(cmds, c.B().Publish().Channel(channel).Message(data).Build())
		}
		for _, r := range c.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				b.Fatal(err)
			}
		}
		sent += n
	}
	waitFor(b, &got, int64(b.N))
	b.StopTimer()
}
