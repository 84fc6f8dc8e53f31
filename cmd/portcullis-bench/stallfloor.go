package main

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// The stall floor: the same close-and-reconnect episode against a server
// that does only the socket work the episode requires — accept, read
// the upgrade request, write the 101 and a welcome in one write, read the
// subscribe and write its answer, answer each ping, close on end of
// stream — and nothing else: no token, no topic, no timer, no audit line,
// no limiter, no stats. Its bystander round trips are what the machine
// (the kernel's loopback work, the load generator's processes on the same
// cores, the scheduler) imposes on any server; a server's own share is
// what it adds to them. Like the gateway it runs one event loop per CPU it
// may use, each a locked OS thread with an epoll of its own (edge
// triggered), sleeping in epoll_wait and making every other socket call
// raw, and it serves the other connections first: a connection that hung
// up is closed after the turn's other events, at most floorClosesPerTurn a
// turn (a mass close otherwise makes one turn of thousands of closes, each
// sending its FIN through the loopback inside the close call). Its loops
// time their turns as the gateway's do (from epoll_wait's return to the
// end of the turn's closes, turns that did work only, the same buckets),
// so the stall bench shows how long a turn takes on this machine when it
// does next to nothing.

// floorLoopEvents is how many events one epoll_wait of a floor loop returns
// at most (the gateway's MaxEvents).
const floorLoopEvents = 256

// floorClosesPerTurn is how many hung-up connections a floor loop closes
// at the end of a turn at most.
const floorClosesPerTurn = 64

// floorMaxRequest bounds an upgrade request: a client that sends more
// without the blank line that ends it is closed.
const floorMaxRequest = 8 << 10

// websocketGUID is RFC 6455's key suffix.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

var (
	floorWelcome    = serverText(`{"type":"welcome"}`)
	floorSubscribed = serverText(`{"type":"subscribed","id":1}`)
	floorClose      = serverFrameBytes(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
)

func serverText(s string) []byte { return serverFrameBytes(ws.OpText, []byte(s)) }

// serverFrameBytes is an unmasked final frame of at most 125 bytes.
func serverFrameBytes(op ws.OpCode, payload []byte) []byte {
	return append([]byte{0x80 | byte(op), byte(len(payload))}, payload...)
}

// floorTurnBounds are the upper bounds of the floor loops' turn buckets,
// those of the gateway's loop_turns (TestFloorTurnBoundsAreTheGateways);
// a last bucket takes the longer turns.
var floorTurnBounds = [...]time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
}

// floorTurns counts one floor loop's turns by duration: n[i] those of at
// most floorTurnBounds[i] and over the bound before, the last the longer
// ones. Written by the loop, read by the floor-server's command reader.
type floorTurns struct {
	n   [len(floorTurnBounds) + 1]atomic.Uint64
	max atomic.Int64 // nanoseconds
}

func (h *floorTurns) observe(d time.Duration) {
	i := 0
	for i < len(floorTurnBounds) && d > floorTurnBounds[i] {
		i++
	}
	h.n[i].Add(1)
	if int64(d) > h.max.Load() {
		h.max.Store(int64(d))
	}
}

// floorConn is what a floor loop knows of one connection.
type floorConn struct {
	in   []byte // bytes read that are not yet a whole request or frame
	open bool   // the upgrade is done
}

// floorLoop is one event loop of the floor server.
type floorLoop struct {
	epfd, lfd, stopfd int
	conns             []*floorConn // by descriptor
	hungUp            []int        // descriptors to close at the ends of turns
	out               []byte
	turns             floorTurns
}

// floorServer is the floor server's loops, in this process.
type floorServer struct {
	port   int
	stopfd int // an eventfd: readable ends every loop
	loops  []*floorLoop
	wg     sync.WaitGroup
}

// startFloorServer listens on 127.0.0.1:port (0: any free port) with one
// SO_REUSEPORT listener per loop and starts n loops.
func startFloorServer(port, n int) (*floorServer, error) {
	stopfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("floor server: eventfd: %w", err)
	}
	s := &floorServer{port: port, stopfd: stopfd}
	for range n {
		l, err := s.newLoop()
		if err != nil {
			s.closeAll()
			return nil, err
		}
		s.loops = append(s.loops, l)
	}
	for _, l := range s.loops {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			runtime.LockOSThread()
			l.run()
		}()
	}
	return s, nil
}

// newLoop opens a loop's listener (binding s.port, which the first loop
// picks when it is 0) and epoll.
func (s *floorServer) newLoop() (*floorLoop, error) {
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("floor server: socket: %w", err)
	}
	l := &floorLoop{lfd: lfd, epfd: -1, stopfd: s.stopfd}
	if err := unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		l.close()
		return nil, fmt.Errorf("floor server: SO_REUSEADDR: %w", err)
	}
	if err := unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		l.close()
		return nil, fmt.Errorf("floor server: SO_REUSEPORT: %w", err)
	}
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Port: s.port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		l.close()
		return nil, fmt.Errorf("floor server: bind 127.0.0.1:%d: %w", s.port, err)
	}
	if err := unix.Listen(lfd, 4096); err != nil {
		l.close()
		return nil, fmt.Errorf("floor server: listen: %w", err)
	}
	if s.port == 0 {
		sa, err := unix.Getsockname(lfd)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("floor server: getsockname: %w", err)
		}
		s.port = sa.(*unix.SockaddrInet4).Port
	}
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		l.close()
		return nil, fmt.Errorf("floor server: epoll: %w", err)
	}
	for _, fd := range []int{lfd, s.stopfd} {
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			l.close()
			return nil, fmt.Errorf("floor server: epoll_ctl: %w", err)
		}
	}
	return l, nil
}

// stop ends every loop, waits for them and closes every descriptor.
func (s *floorServer) stop() {
	one := [8]byte{1}
	_, _ = unix.Write(s.stopfd, one[:])
	s.wg.Wait()
	s.closeAll()
}

func (s *floorServer) closeAll() {
	for _, l := range s.loops {
		l.close()
	}
	s.loops = nil
	unix.Close(s.stopfd)
}

// close closes the loop's listener, epoll and connections.
func (l *floorLoop) close() {
	for fd, c := range l.conns {
		if c != nil {
			rawClose(fd)
		}
	}
	for _, fd := range l.hungUp {
		rawClose(fd)
	}
	l.conns, l.hungUp = nil, nil
	unix.Close(l.lfd)
	if l.epfd >= 0 {
		unix.Close(l.epfd)
	}
}

// run serves until the stop eventfd is readable.
func (l *floorLoop) run() {
	events := make([]unix.EpollEvent, floorLoopEvents)
	buf := make([]byte, 64<<10)
	for {
		timeout := -1
		if len(l.hungUp) > 0 {
			timeout = 0
		}
		n, err := unix.EpollWait(l.epfd, events, timeout)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			fmt.Fprintf(os.Stderr, "floor server: epoll_wait: %v\n", err)
			return
		}
		start := time.Now()
		for _, ev := range events[:n] {
			switch fd := int(ev.Fd); fd {
			case l.stopfd:
				return
			case l.lfd:
				l.accept()
			default:
				l.readable(fd, buf)
			}
		}
		k := min(len(l.hungUp), floorClosesPerTurn)
		for _, fd := range l.hungUp[:k] {
			rawClose(fd)
		}
		l.hungUp = append(l.hungUp[:0], l.hungUp[k:]...)
		if n > 0 || k > 0 {
			l.turns.observe(time.Since(start))
		}
	}
}

// loopTurns is every loop's turns so far in the form of the gateway's
// /v1/stats "loop_turns" (cumulative buckets, the longest turn).
func (s *floorServer) loopTurns() loopTurns {
	var counts [len(floorTurnBounds) + 1]uint64
	var longest int64
	for _, l := range s.loops {
		for i := range counts {
			counts[i] += l.turns.n[i].Load()
		}
		longest = max(longest, l.turns.max.Load())
	}
	lt := loopTurns{Max: time.Duration(longest).String()}
	var cum uint64
	for i, c := range counts {
		cum += c
		le := "+Inf"
		if i < len(floorTurnBounds) {
			le = floorTurnBounds[i].String()
		}
		lt.Buckets = append(lt.Buckets, turnBucket{Le: le, Count: cum})
	}
	lt.Count = cum
	return lt
}

// accept takes every pending connection.
func (l *floorLoop) accept() {
	for {
		fd, err := rawAccept(l.lfd)
		if err != nil {
			return // EAGAIN, or a connection that went before it was taken
		}
		if fd >= len(l.conns) {
			l.conns = append(l.conns, make([]*floorConn, fd+1-len(l.conns)+len(l.conns)/2)...)
		}
		if rawEpollAdd(l.epfd, fd, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLET) != nil {
			rawClose(fd)
			continue
		}
		l.conns[fd] = &floorConn{}
	}
}

// readable reads what fd has and answers it; end of stream or an error
// queues it for closing.
func (l *floorLoop) readable(fd int, buf []byte) {
	c := l.conns[fd]
	if c == nil {
		return // already queued for closing
	}
	for {
		n, err := rawRead(fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil || n == 0 {
			l.drop(fd)
			return
		}
		c.in = append(c.in, buf[:n]...)
		if n < len(buf) {
			break
		}
	}
	l.out = l.out[:0]
	if !c.open {
		end := bytes.Index(c.in, []byte("\r\n\r\n"))
		if end < 0 {
			if len(c.in) > floorMaxRequest {
				l.drop(fd)
			}
			return
		}
		key := headerValue(c.in[:end], "sec-websocket-key")
		if key == nil {
			l.drop(fd)
			return
		}
		sum := sha1.Sum(append(append([]byte(nil), key...), websocketGUID...))
		l.out = append(l.out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
		l.out = base64.StdEncoding.AppendEncode(l.out, sum[:])
		if p := headerValue(c.in[:end], "sec-websocket-protocol"); p != nil && bytes.Contains(p, []byte("portcullis.v1")) {
			l.out = append(l.out, "\r\nSec-WebSocket-Protocol: portcullis.v1"...)
		}
		l.out = append(l.out, "\r\n\r\n"...)
		l.out = append(l.out, floorWelcome...)
		c.open = true
		c.in = c.in[end+4:]
	}
	closing := false
	for !closing {
		op, payload, size, ok := serverFrame(c.in)
		if !ok {
			break
		}
		switch op {
		case ws.OpText:
			l.out = append(l.out, floorSubscribed...)
		case ws.OpPing:
			l.out = append(l.out, 0x80|byte(ws.OpPong), byte(len(payload)))
			l.out = append(l.out, payload...)
		case ws.OpClose:
			l.out = append(l.out, floorClose...)
			closing = true
		}
		c.in = c.in[size:]
	}
	if len(c.in) == 0 {
		c.in = nil
	}
	if len(l.out) > 0 {
		if n, err := rawWrite(fd, l.out); err != nil || n != len(l.out) {
			closing = true // the floor's answers are small: a short write is a dead client
		}
	}
	if closing {
		l.drop(fd)
	}
}

// drop queues fd for closing (which takes it out of the epoll).
func (l *floorLoop) drop(fd int) {
	l.conns[fd] = nil
	l.hungUp = append(l.hungUp, fd)
}

// headerValue is the value of the request header name (lower case), or
// nil.
func headerValue(req []byte, name string) []byte {
	for line := range bytes.SplitSeq(req, []byte("\r\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && string(bytes.ToLower(bytes.TrimSpace(k))) == name {
			return bytes.TrimSpace(v)
		}
	}
	return nil
}

func rawRead(fd int, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawAccept(lfd int) (int, error) {
	fd, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(lfd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

func rawClose(fd int) {
	_, _, _ = syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)
}

func rawEpollAdd(epfd, fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	_, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(epfd), unix.EPOLL_CTL_ADD, uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// runFloorServer is the floor-server child: it serves 127.0.0.1:port with
// a loop per usable CPU, says "ready" on out and serves until SIGINT or
// SIGTERM, then closes everything. Each "turns" line on in is answered on
// out with one JSON line: the loops' turns so far (loopTurns).
func runFloorServer(port int, in io.Reader, out io.Writer) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	s, err := startFloorServer(port, runtime.GOMAXPROCS(0))
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(out, "ready"); err != nil {
		s.stop()
		return err
	}
	go func() {
		sc := bufio.NewScanner(in)
		enc := json.NewEncoder(out)
		for sc.Scan() {
			if sc.Text() == "turns" {
				_ = enc.Encode(s.loopTurns())
			} else {
				fmt.Fprintf(os.Stderr, "floor server: unknown command %q\n", sc.Text())
			}
		}
	}()
	<-sig
	s.stop()
	return nil
}

// floorTarget is the floor server as a bench target: a child process of
// this executable (under --server-cpus like the other servers).
type floorTarget struct {
	cmd  *exec.Cmd
	port int
	in   io.WriteCloser // commands to the floor server
	out  *bufio.Reader  // its answers, read from pipe
	pipe io.ReadCloser
}

func startFloor() (*floorTarget, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := serverCommand(exe, "floor-server", "--port", strconv.Itoa(port))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start floor server: %w", err)
	}
	t := &floorTarget{cmd: cmd, port: port, in: in, out: bufio.NewReader(out), pipe: out}
	ready := make(chan string, 1)
	go func() {
		line, _ := t.out.ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		if line != "ready\n" {
			t.stop()
			return nil, fmt.Errorf("floor server did not start (said %q)", line)
		}
	case <-time.After(10 * time.Second):
		t.stop()
		return nil, errors.New("floor server did not start within 10 s")
	}
	return t, nil
}

func (f *floorTarget) name() string       { return "floor" }
func (f *floorTarget) pid() int           { return f.cmd.Process.Pid }
func (f *floorTarget) protocol() string   { return "portcullis" }
func (f *floorTarget) stats() serverStats { return serverStats{} }
func (f *floorTarget) url() string        { return "ws://127.0.0.1:" + strconv.Itoa(f.port) + "/ws" }

// mint returns placeholder tokens: the floor server checks none.
func (f *floorTarget) mint(n int, topic string) ([]string, error) {
	toks := make([]string, n)
	var b [8]byte
	for i := range toks {
		binary.BigEndian.PutUint64(b[:], uint64(i))
		toks[i] = base64.RawURLEncoding.EncodeToString(b[:])
	}
	return toks, nil
}

func (f *floorTarget) publish(topic string, data json.RawMessage) error {
	return errors.New("the floor server does not publish")
}

func (f *floorTarget) stop() {
	interrupt(f.cmd, 10*time.Second)
	f.in.Close()
}

// turnStats asks the floor server for its loops' turns: stats with only
// LoopTurns set, as the stall bench reads the gateway's.
func (f *floorTarget) turnStats() (serverStats, error) {
	if _, err := io.WriteString(f.in, "turns\n"); err != nil {
		return serverStats{}, fmt.Errorf("floor server turns: %w", err)
	}
	if err := setReadDeadline(f.pipe, time.Now().Add(childAnswerTimeout)); err != nil {
		return serverStats{}, err
	}
	line, err := f.out.ReadBytes('\n')
	_ = setReadDeadline(f.pipe, time.Time{})
	if err != nil {
		return serverStats{}, fmt.Errorf("floor server turns: no answer: %w", err)
	}
	var lt loopTurns
	if err := json.Unmarshal(line, &lt); err != nil {
		return serverStats{}, fmt.Errorf("floor server turns %q: %w", line, err)
	}
	return serverStats{LoopTurns: &lt}, nil
}

// clients is the descriptors the floor server holds open, as for
// Centrifugo: the stall bench compares it with an earlier count.
func (f *floorTarget) clients() (int64, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", f.pid()))
	if err != nil {
		return 0, fmt.Errorf("floor server descriptors: %w", err)
	}
	return int64(len(fds)), nil
}
