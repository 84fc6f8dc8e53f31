package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/portcullis-gw/portcullis/gateway/reactor"
)

// The write floor: the least CPU any server can spend to deliver one small
// message to one loopback subscriber — one write(2) of a ready WebSocket
// frame, no protocol, no bookkeeping — measured in the same run as a
// fan-out so that the two are comparable (the gateway's own
// BenchmarkWriteFloor measures the same thing from `go test`). The bench
// process accepts the subscribers' connections itself, opened and read by
// drain worker processes as the fan-out's subscribers are, and writes the
// frame to every socket once a round, at the fan-out's rate, from one
// locked OS thread whose CPU time (getrusage RUSAGE_THREAD) is the
// measurement, with the raw write(2) the gateway's loops use (rawWrite:
// no runtime bookkeeping around the call). On loopback the kernel runs the receiver's TCP input path
// inside the sender's write and charges it to the sender, as it does for
// the gateway.
//
// The io_uring floor is the same delivery with the sends batched as the
// gateway's loops batch them where the kernel offers io_uring: 256 sends
// (reactor.RingEntries) per io_uring_enter, measured on the same thread a
// quarter of a period after each write(2) round, over the same sockets. A
// gateway sending through io_uring can go below the write floor; the
// io_uring floor is what it cannot go below.

// floorFrame is a text frame carrying a typical publication, as the
// fan-out's subscribers receive it.
var floorFrame = func() []byte {
	payload := []byte(`{"type":"message","topic":"fan","data":{"seq":12345,"t":1764500000000000}}`)
	return append([]byte{0x81, byte(len(payload))}, payload...)
}()

// writeFloor is one measurement of the floor, and of the io_uring floor.
type writeFloor struct {
	cpu, kernel float64 // µs per write
	writes      int
	short       int // writes that were short or failed: the readers fell behind

	ringCPU, ringKernel float64 // µs per send; 0 when ringErr is set
	ringErr             error   // why there is no io_uring floor (a kernel without io_uring)
}

// floorRounds is how many rounds the floor is measured over for a fan-out
// of count publications at rate: all of them, up to 30 s of rounds (and at
// least 20). Over the 4 s it used to take, the floor moved ±11 % from run
// to run (7.1–9.0 µs over six runs) while the fan-out it is compared with,
// measured over 30 s, moved ±3 %.
func floorRounds(rate float64, count int) int {
	return max(1, min(count, max(20, int(30*rate))))
}

// measureWriteFloor measures the floor over n subscriber sockets, rounds
// rounds at rate rounds per second, on a machine left to it.
func measureWriteFloor(n int, rate float64, rounds int) (writeFloor, error) {
	rig, err := openFloor(n)
	if err != nil {
		return writeFloor{}, err
	}
	defer rig.close()
	f, err := rig.run(rate, rounds, time.Now())
	fmt.Fprintln(os.Stderr)
	return f, err
}

// floorRig is the floor's subscribers: n connections the bench accepted,
// opened and read by drain worker processes.
type floorRig struct {
	ln      net.Listener
	readers []*workerProc
	conns   []net.Conn
	fds     []int
}

// openFloor connects n drain readers to a listener of the bench's own and
// keeps the accepted sockets, with the gateway's socket options.
func openFloor(n int) (*floorRig, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("write floor: %w", err)
	}
	rig := &floorRig{ln: ln, fds: make([]int, 0, n)}
	if err := rig.open(n); err != nil {
		rig.close()
		return nil, err
	}
	return rig, nil
}

func (rig *floorRig) open(n int) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	for first, w := 0, 0; first < n; first, w = first+perWorker, w+1 {
		cmd := workerCommand(exe, clientNice)
		cmd.Stderr = os.Stderr
		in, _ := cmd.StdinPipe()
		outp, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("write floor: start reader: %w", err)
		}
		sc := bufio.NewScanner(outp)
		rig.readers = append(rig.readers, &workerProc{cmd: cmd, in: in, out: sc})
		j := job{Mode: "drain", URL: rig.ln.Addr().String(), Src: "127." + strconv.Itoa(100+w) + ".0.", Conns: min(perWorker, n-first), Parallel: 64}
		b, _ := json.Marshal(j)
		if _, err := in.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("write floor: send job: %w", err)
		}
	}
	progress("write floor: accepting %d connections…", n)
	_ = rig.ln.(*net.TCPListener).SetDeadline(time.Now().Add(time.Minute))
	for len(rig.conns) < n {
		c, err := rig.ln.Accept()
		if err != nil {
			return fmt.Errorf("write floor: accept: %w", err)
		}
		rig.conns = append(rig.conns, c)
		tc := c.(*net.TCPConn)
		_ = tc.SetNoDelay(true) // the gateway's socket options
		raw, err := tc.SyscallConn()
		if err != nil {
			return fmt.Errorf("write floor: %w", err)
		}
		_ = raw.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 64<<10)
			rig.fds = append(rig.fds, int(fd))
		})
	}
	for _, w := range rig.readers {
		r, err := w.read()
		if err != nil {
			return fmt.Errorf("write floor: reader: %w", err)
		}
		if r.Failed > 0 {
			return fmt.Errorf("write floor: %d reader connections failed (first: %s)", r.Failed, r.FirstErr)
		}
	}
	time.Sleep(500 * time.Millisecond) // let the readers settle into their wait
	return nil
}

// close stops the readers and closes the sockets.
func (rig *floorRig) close() {
	stopWorkers(rig.readers)
	for _, c := range rig.conns {
		c.Close()
	}
	rig.ln.Close()
}

// run writes the frame to every socket once a round, rounds rounds at rate
// rounds per second, the first at first, and measures the writing thread's
// CPU time; where the kernel offers io_uring, each round is followed a
// quarter of a period later by the io_uring floor's (ringRound), measured
// apart.
func (rig *floorRig) run(rate float64, rounds int, first time.Time) (writeFloor, error) {
	var f writeFloor
	progress("write floor: %d rounds to %d sockets…", rounds, len(rig.fds))
	done := make(chan error, 1)
	go func() {
		// The thread that writes is this goroutine's alone, so its CPU
		// time is the writes' and nothing else's; it ends with the
		// goroutine (never unlocked), so its affinity goes with it. With
		// --server-cpus it writes from the servers' CPUs, as they do.
		runtime.LockOSThread()
		if serverCPUs != "" {
			set, err := parseCPUList(serverCPUs)
			if err == nil {
				err = unix.SchedSetaffinity(0, &set)
			}
			if err != nil {
				done <- fmt.Errorf("write floor: --server-cpus %s: %w", serverCPUs, err)
				return
			}
		}
		ring, err := reactor.NewRing()
		if err != nil {
			f.ringErr = err
		} else {
			defer ring.Close()
		}
		time.Sleep(time.Until(first))
		every := time.Duration(float64(time.Second) / rate)
		var wcpu, wsys, rcpu, rsys int64 // µs
		next := first
		for i := 0; i < rounds; i++ {
			u, s, err := threadCPU()
			if err != nil {
				done <- err
				return
			}
			for _, fd := range rig.fds {
				if k, err := rawWrite(fd, floorFrame); k != len(floorFrame) || err != nil {
					f.short++
				}
			}
			if ring != nil {
				u2, s2, err := threadCPU()
				if err != nil {
					done <- err
					return
				}
				wcpu, wsys = wcpu+u2-u+s2-s, wsys+s2-s
				time.Sleep(time.Until(next.Add(every / 4)))
				if u, s, err = threadCPU(); err != nil {
					done <- err
					return
				}
				if err := rig.ringRound(ring, &f); err != nil {
					done <- err
					return
				}
				u3, s3, err := threadCPU()
				if err != nil {
					done <- err
					return
				}
				rcpu, rsys = rcpu+u3-u+s3-s, rsys+s3-s
			} else {
				u2, s2, err := threadCPU()
				if err != nil {
					done <- err
					return
				}
				wcpu, wsys = wcpu+u2-u+s2-s, wsys+s2-s
			}
			next = next.Add(every)
			time.Sleep(time.Until(next))
		}
		f.writes = rounds * len(rig.fds)
		f.cpu = float64(wcpu) / float64(max(f.writes, 1))
		f.kernel = float64(wsys) / float64(max(f.writes, 1))
		if ring != nil {
			f.ringCPU = float64(rcpu) / float64(max(f.writes, 1))
			f.ringKernel = float64(rsys) / float64(max(f.writes, 1))
		}
		done <- nil
	}()
	err := <-done
	return f, err
}

// ringRound sends the frame to every socket through ring, RingEntries
// sends per io_uring_enter; a send short or failed counts in f.short.
func (rig *floorRig) ringRound(ring *reactor.Ring, f *writeFloor) error {
	bufs := [][]byte{floorFrame}
	check := func(c reactor.Completion) {
		if c.N != len(floorFrame) || c.Err != nil {
			f.short++
		}
	}
	for _, fd := range rig.fds {
		if ring.Queued() == reactor.RingEntries {
			if err := ring.Submit(check); err != nil {
				return fmt.Errorf("io_uring floor: %w", err)
			}
		}
		if err := ring.Queue(fd, bufs, 0); err != nil {
			return fmt.Errorf("io_uring floor: %w", err)
		}
	}
	if err := ring.Submit(check); err != nil {
		return fmt.Errorf("io_uring floor: %w", err)
	}
	return nil
}

// threadCPU is the calling thread's user and system CPU time, in µs.
func threadCPU() (user, sys int64, err error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0, 0, fmt.Errorf("write floor: getrusage: %w", err)
	}
	return tvMicros(ru.Utime), tvMicros(ru.Stime), nil
}

func tvMicros(tv unix.Timeval) int64 { return tv.Sec*1_000_000 + tv.Usec }

// runDrain opens j.Conns TCP connections to j.URL (host:port), reports how
// many, and reads and discards everything they receive until stdin closes.
func runDrain(j *job, rd *bufio.Reader, enc *json.Encoder) error {
	conns := make([]net.Conn, j.Conns)
	var mu sync.Mutex
	var failed int
	var firstErr string
	sem := make(chan struct{}, j.Parallel)
	var wg sync.WaitGroup
	for i := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(j.Src + strconv.Itoa(1+i%200))}, Timeout: 20 * time.Second}
			c, err := d.Dial("tcp", j.URL)
			if err != nil {
				mu.Lock()
				failed++
				if firstErr == "" {
					firstErr = err.Error()
				}
				mu.Unlock()
				return
			}
			conns[i] = c
		}(i)
	}
	wg.Wait()
	if err := enc.Encode(report{Ready: j.Conns - failed, Failed: failed, FirstErr: firstErr}); err != nil {
		return err
	}
	for _, c := range conns {
		if c != nil {
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}
	_, _ = io.Copy(io.Discard, rd) // until the parent closes stdin
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	return nil
}

// parseCPUList parses a CPU list as taskset -c takes it: numbers and
// ranges separated by commas ("1", "0-3", "1,3-5").
func parseCPUList(list string) (unix.CPUSet, error) {
	var set unix.CPUSet
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= 1024 {
			return set, fmt.Errorf("CPU list %q: bad element %q", list, part)
		}
		for cpu := a; cpu <= b; cpu++ {
			set.Set(cpu)
		}
	}
	return set, nil
}

// rawWrite is write(2) without the runtime's system-call bookkeeping, as
// the gateway's event loops write to their non-blocking sockets (the
// bench imports nothing of the gateway: it measures the binary).
func rawWrite(fd int, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
