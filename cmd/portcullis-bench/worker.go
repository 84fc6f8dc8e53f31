package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// job is what the parent sends a worker on stdin.
type job struct {
	Mode      string   `json:"mode"`  // hold | setup | flood | bystand | drain
	Proto     string   `json:"proto"` // portcullis | centrifugo | wamp1 | wamp2
	URL       string   `json:"url"`
	Src       string   `json:"src"` // source address prefix, e.g. "127.11.0."
	Topic     string   `json:"topic"`
	Tokens    []string `json:"tokens"`
	FirstUser int      `json:"first_user"`
	// Users, when set, are the user numbers of the tokens, one each
	// (subscribers spread over several nodes); else FirstUser+i.
	Users    []int     `json:"users,omitempty"`
	Parallel int       `json:"parallel"`
	Flood    *floodJob `json:"flood,omitempty"`
	// CAFile is the certificate a wss:// URL's server is trusted by.
	CAFile string `json:"ca_file,omitempty"`
	// Conns is how many plain TCP connections a drain worker opens to
	// URL (host:port).
	Conns int `json:"conns,omitempty"`
}

// user returns the user number of the i-th token.
func (j *job) user(i int) int {
	if j.Users != nil {
		return j.Users[i]
	}
	return j.FirstUser + i
}

// report is what a worker prints on stdout.
type report struct {
	Ready     int          `json:"ready,omitempty"`
	Failed    int          `json:"failed,omitempty"`
	FirstErr  string       `json:"first_err,omitempty"`
	Delivered int64        `json:"delivered,omitempty"`
	Latencies []float64    `json:"latencies_us,omitempty"`
	Setups    int          `json:"setups,omitempty"`
	ElapsedMS int64        `json:"elapsed_ms,omitempty"`
	Flood     *floodCounts `json:"flood,omitempty"`
	RTT       *rttReport   `json:"rtt,omitempty"` // bystanders' round trips
}

// latencySamples is how many latencies a worker keeps per phase: a uniform
// sample of all of them once there are more.
const latencySamples = 1 << 16

// reservoir keeps a uniform random sample of at most cap(xs) values out of
// every value added (Vitter's algorithm R), so a long phase's percentiles
// are not those of its first messages only.
type reservoir struct {
	xs   []float64
	seen int64
	rng  uint64
}

func newReservoir(n int, seed int64) *reservoir {
	return &reservoir{xs: make([]float64, 0, n), rng: uint64(seed) | 1}
}

func (r *reservoir) add(x float64) {
	r.seen++
	if len(r.xs) < cap(r.xs) {
		r.xs = append(r.xs, x)
		return
	}
	// xorshift64: cheap, and plenty for picking sample slots.
	r.rng ^= r.rng << 13
	r.rng ^= r.rng >> 7
	r.rng ^= r.rng << 17
	if i := r.rng % uint64(r.seen); i < uint64(len(r.xs)) {
		r.xs[i] = x
	}
}

func (r *reservoir) reset() { r.xs, r.seen = r.xs[:0], 0 }

func dial(j *job, i int) (net.Conn, error) {
	src := net.ParseIP(j.Src + strconv.Itoa(1+i%200))
	var protos []string
	switch j.Proto {
	case "centrifugo":
	case "wamp1":
		protos = []string{"wamp"}
	case "wamp2":
		protos = []string{"wamp.2.json"}
	default:
		protos = []string{"portcullis.v1"}
	}
	var tc *tls.Config
	if j.CAFile != "" {
		var err error
		if tc, err = clientTLS(j.CAFile); err != nil {
			return nil, err
		}
	}
	d := ws.Dialer{
		Protocols: protos,
		Timeout:   20 * time.Second,
		TLSConfig: tc,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 20 * time.Second}
			return nd.DialContext(ctx, network, addr)
		},
	}
	c, br, _, err := d.Dial(context.Background(), j.URL)
	if err != nil {
		return nil, err
	}
	if br != nil {
		// Frames that arrived with the handshake response (the welcome)
		// are in br: read them before the socket.
		buffered := make([]byte, br.Buffered())
		_, _ = io.ReadFull(br, buffered)
		ws.PutReader(br)
		return &prefixedConn{Conn: c, pre: bytes.NewReader(buffered)}, nil
	}
	return c, nil
}

// prefixedConn reads bytes already buffered before the socket.
type prefixedConn struct {
	net.Conn
	pre *bytes.Reader
}

func (p *prefixedConn) Read(b []byte) (int, error) {
	if p.pre.Len() > 0 {
		return p.pre.Read(b)
	}
	return p.Conn.Read(b)
}

// rest returns the buffered bytes not read yet.
func (p *prefixedConn) rest() []byte {
	b := make([]byte, p.pre.Len())
	_, _ = p.pre.Read(b)
	return b
}

// subscribe authenticates and subscribes one connection: for Portcullis,
// welcome then subscribe with the token; for Centrifugo, connect with the
// JWT then subscribe.
func subscribe(c net.Conn, j *job, i int) error {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	if j.Proto == "centrifugo" {
		if err := wsutil.WriteClientText(c, []byte(fmt.Sprintf(`{"id":1,"connect":{"token":%q}}`, j.Tokens[i]))); err != nil {
			return err
		}
		if err := expectReply(c, `"id":1`, `"connect"`); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		if err := wsutil.WriteClientText(c, []byte(fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, j.Topic))); err != nil {
			return err
		}
		if err := expectReply(c, `"id":2`, `"subscribe"`); err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		return nil
	}
	switch j.Proto {
	case "wamp1":
		return subscribeWAMP1(c, j, i)
	case "wamp2":
		return subscribeWAMP2(c, j, i)
	}
	if _, err := wsutil.ReadServerText(c); err != nil {
		return fmt.Errorf("welcome: %w", err)
	}
	msg := fmt.Sprintf(`{"op":"subscribe","id":1,"topic":%q,"userId":"u%d","token":%q}`, j.Topic, j.user(i), j.Tokens[i])
	if err := wsutil.WriteClientText(c, []byte(msg)); err != nil {
		return err
	}
	b, err := wsutil.ReadServerText(c)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), `"subscribed"`) {
		return fmt.Errorf("subscribe refused: %s", b)
	}
	return nil
}

// expectReply reads frames until one holds every marker; an error reply
// fails.
func expectReply(c net.Conn, markers ...string) error {
	for {
		b, err := wsutil.ReadServerText(c)
		if err != nil {
			return err
		}
		s := string(b)
		if strings.Contains(s, `"error"`) {
			return fmt.Errorf("refused: %s", s)
		}
		ok := true
		for _, m := range markers {
			ok = ok && strings.Contains(s, m)
		}
		if ok {
			return nil
		}
	}
}

func runWorker(in io.Reader, out io.Writer) error {
	rd := bufio.NewReader(in)
	line, err := rd.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read job: %w", err)
	}
	var j job
	if err := json.Unmarshal(line, &j); err != nil {
		return fmt.Errorf("decode job: %w", err)
	}
	enc := json.NewEncoder(out)
	if j.Parallel <= 0 {
		j.Parallel = 64
	}
	switch j.Mode {
	case "setup":
		return runSetups(&j, enc)
	case "flood":
		return runFlood(&j, rd, enc)
	case "bystand":
		return runBystanders(&j, rd, enc)
	case "drain":
		return runDrain(&j, rd, enc)
	}
	conns := make([]net.Conn, len(j.Tokens))
	var failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, j.Parallel)
	var wg sync.WaitGroup
	for i := range j.Tokens {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			c, err := dial(&j, i)
			if err == nil {
				err = subscribe(c, &j, i)
			}
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				if c != nil {
					c.Close()
				}
				return
			}
			conns[i] = c
		}(i)
	}
	wg.Wait()
	r := report{Ready: len(j.Tokens) - int(failed.Load()), Failed: int(failed.Load())}
	if e, ok := firstErr.Load().(string); ok {
		r.FirstErr = e
	}
	_ = enc.Encode(r)

	// Count deliveries until the parent asks for the report.
	var delivered atomic.Int64
	var mu sync.Mutex
	lat := newReservoir(latencySamples, time.Now().UnixNano())
	for _, c := range conns {
		if c == nil {
			continue
		}
		go func(c net.Conn) {
			for {
				b, err := wsutil.ReadServerText(c)
				if err != nil {
					return
				}
				now := time.Now().UnixNano()
				if j.Proto == "centrifugo" && hasPing(b) {
					_ = wsutil.WriteClientText(c, []byte("{}")) // answer Centrifugo's ping
				}
				// A frame may carry several messages (Centrifugo batches
				// them, one JSON per line): count every timestamp.
				rest := string(b)
				for {
					i := strings.Index(rest, `"t":`)
					if i < 0 {
						break
					}
					rest = rest[i+4:]
					k := strings.IndexAny(rest, ",}")
					if k <= 0 {
						break
					}
					if t, err := strconv.ParseInt(rest[:k], 10, 64); err == nil {
						mu.Lock()
						delivered.Add(1)
						lat.add(float64(now-t) / 1000)
						mu.Unlock()
					}
				}
			}
		}(c)
	}
	for {
		cmd, err := rd.ReadString('\n')
		if err != nil {
			break
		}
		switch strings.TrimSpace(cmd) {
		case "report":
			mu.Lock()
			_ = enc.Encode(report{Delivered: delivered.Load(), Latencies: lat.xs})
			mu.Unlock()
		case "reset":
			// Start a new phase: deliveries and latencies so far are
			// forgotten. Answered with an empty report so the parent
			// knows the reset happened before it publishes again.
			mu.Lock()
			delivered.Store(0)
			lat.reset()
			mu.Unlock()
			_ = enc.Encode(report{})
		}
	}
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	return nil
}

// runSetups does connect + welcome + subscribe + close for every token.
func runSetups(j *job, enc *json.Encoder) error {
	start := time.Now()
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, j.Parallel)
	var wg sync.WaitGroup
	for i := range j.Tokens {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			c, err := dial(j, i)
			if err == nil {
				err = subscribe(c, j, i)
				c.Close()
			}
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			ok.Add(1)
		}(i)
	}
	wg.Wait()
	r := report{Setups: int(ok.Load()), Failed: int(failed.Load()), ElapsedMS: time.Since(start).Milliseconds()}
	if e, ok := firstErr.Load().(string); ok {
		r.FirstErr = e
	}
	return enc.Encode(r)
}

// hasPing reports whether a Centrifugo frame carries a ping: an empty JSON
// object on a line of its own.
func hasPing(b []byte) bool {
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(l) == "{}" {
			return true
		}
	}
	return false
}

// subscribeWAMP1 waits for WELCOME and subscribes with a seed JSON topic.
// WAMP v1 acknowledges nothing: a refusal shows as the connection closing.
func subscribeWAMP1(c net.Conn, j *job, i int) error {
	b, err := wsutil.ReadServerText(c)
	if err != nil || !strings.HasPrefix(string(b), "[0,") {
		return fmt.Errorf("WELCOME: %q %v", b, err)
	}
	seed, _ := json.Marshal(map[string]string{"topic": j.Topic, "userId": fmt.Sprintf("u%d", j.user(i)), "token": j.Tokens[i]})
	msg, _ := json.Marshal([]any{5, string(seed)})
	return wsutil.WriteClientText(c, msg)
}

// subscribeWAMP2 authenticates with ticket (authid = userId, ticket =
// token) and subscribes.
func subscribeWAMP2(c net.Conn, j *job, i int) error {
	hello := fmt.Sprintf(`[1,"realm1",{"roles":{"subscriber":{}},"authmethods":["ticket"],"authid":"u%d"}]`, j.user(i))
	steps := []struct{ send, want string }{
		{hello, "[4,"},
		{fmt.Sprintf(`[5,%q,{}]`, j.Tokens[i]), "[2,"},
		{fmt.Sprintf(`[32,1,{},%q]`, j.Topic), "[33,"},
	}
	for _, st := range steps {
		if err := wsutil.WriteClientText(c, []byte(st.send)); err != nil {
			return err
		}
		b, err := wsutil.ReadServerText(c)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(string(b), st.want) {
			return fmt.Errorf("WAMP v2: got %s, want %s…", b, st.want)
		}
	}
	return nil
}
