package reactor

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// floorReaderEnv makes the test binary a reader process for
// BenchmarkWriteFloor: "ADDR,N" dials N connections to ADDR and reads them
// until they close.
const floorReaderEnv = "PORTCULLIS_FLOOR_READER"

// TestFloorReader is the reader side of BenchmarkWriteFloor; it only runs in
// the child process that benchmark starts.
func TestFloorReader(t *testing.T) {
	spec := os.Getenv(floorReaderEnv)
	if spec == "" {
		t.Skip("reader process of BenchmarkWriteFloor")
	}
	addr, ns, _ := strings.Cut(spec, ",")
	n, err := strconv.Atoi(ns)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, _ = io.Copy(io.Discard, c)
			done <- struct{}{}
		}()
	}
	for i := 0; i < n; i++ {
		<-done
	}
}

// BenchmarkWriteFloor measures the least CPU any server can spend to deliver
// one small message to one loopback TCP subscriber: a single write(2) of a
// ready-made WebSocket frame, no protocol, no bookkeeping. The subscribers
// are read by a separate process, as in `portcullis-bench fanout`, and each
// round writes once to every socket then pauses 200 ms (5 messages/s).
//
// On loopback the kernel runs the receiver's TCP input path inside the
// sender's write and charges it to the sender, so this floor bounds what
// the fan-out bar can ask of any implementation:
//
//	go test -run='^$' -bench=WriteFloor -benchtime 20x ./gateway/reactor/
func BenchmarkWriteFloor(b *testing.B) { benchFloor(b, false) }

// BenchmarkWriteRing is BenchmarkWriteFloor with the writes batched
// through a Ring, RingEntries per io_uring_enter: the io_uring floor.
// Both report the whole machine's busy time per delivery too (/proc/stat,
// the reader included), which shows that the batch saves CPU rather than
// moving it elsewhere:
//
//	go test -run='^$' -bench='WriteFloor|WriteRing' -benchtime 30x ./gateway/reactor/
func BenchmarkWriteRing(b *testing.B) { benchFloor(b, true) }

func benchFloor(b *testing.B, ring bool) {
	const subscribers = 5000
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	reader := exec.Command(exe, "-test.run=^TestFloorReader$")
	reader.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d", floorReaderEnv, ln.Addr(), subscribers))
	reader.Stderr = os.Stderr
	if err := reader.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = reader.Wait() }()

	conns := make([]*net.TCPConn, 0, subscribers)
	fds := make([]int, 0, subscribers)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for len(conns) < subscribers {
		c, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		tc := c.(*net.TCPConn)
		_ = tc.SetNoDelay(true) // the gateway's socket options
		raw, err := tc.SyscallConn()
		if err != nil {
			b.Fatal(err)
		}
		_ = raw.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 64<<10)
			fds = append(fds, int(fd))
		})
		conns = append(conns, tc)
	}
	// A text frame carrying a typical publication.
	payload := []byte(`{"type":"message","topic":"fan","data":{"seq":12345,"t":1764500000000000}}`)
	frame := append([]byte{0x81, byte(len(payload))}, payload...)
	time.Sleep(500 * time.Millisecond) // let the reader settle into its wait

	var r0, r1 unix.Rusage
	short := 0
	b.ResetTimer()
	_ = unix.Getrusage(unix.RUSAGE_SELF, &r0)
	m0 := machineBusy()
	var r *Ring
	if ring {
		if r, err = NewRing(); err != nil {
			b.Fatal(err)
		}
		defer r.Close()
	}
	bufs := [][]byte{frame}
	check := func(c Completion) {
		if c.N != len(frame) || c.Err != nil {
			short++
		}
	}
	for i := 0; i < b.N; i++ {
		for _, fd := range fds {
			if r != nil {
				if r.Queued() == RingEntries {
					if err := r.Submit(check); err != nil {
						b.Fatal(err)
					}
				}
				_ = r.Queue(fd, bufs, uint64(fd))
				continue
			}
			if n, err := Write(fd, frame); n != len(frame) || err != nil {
				short++
			}
		}
		if r != nil {
			if err := r.Submit(check); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = unix.Getrusage(unix.RUSAGE_SELF, &r1)
	m1 := machineBusy()
	b.StopTimer()
	b.ReportMetric((m1-m0)/float64(b.N*len(fds)), "µs-machine/delivery")
	writes := float64(b.N * len(fds))
	user := float64(tvMicros(r1.Utime) - tvMicros(r0.Utime))
	sys := float64(tvMicros(r1.Stime) - tvMicros(r0.Stime))
	b.ReportMetric((user+sys)/writes, "µs-cpu/delivery")
	b.ReportMetric(sys/writes, "µs-kernel/delivery")
	b.ReportMetric(float64(short), "short-writes")
	if short > 0 {
		b.Errorf("%d writes were short or failed: the reader fell behind", short)
	}
}

func tvMicros(tv unix.Timeval) int64 { return tv.Sec*1_000_000 + tv.Usec }

// machineBusy is the CPU time every CPU of the machine spent busy (all
// but idle and iowait) since boot, in µs, from /proc/stat's jiffies at
// 100 Hz.
func machineBusy() float64 {
	b, _ := os.ReadFile("/proc/stat")
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	t := 0.0
	for i, x := range f[1:] {
		if i == 3 || i == 4 {
			continue
		}
		v, _ := strconv.ParseFloat(x, 64)
		t += v
	}
	return t * 10000 // jiffies (100 Hz) to µs
}
