package gateway

import (
	"testing"

	"golang.org/x/sys/unix"
)

// A publication to every subscriber of a loop reuses the backlogs the
// previous one gave back, more of them than any fixed cap would keep, and
// spares no publication took go back to the heap after two trim periods.
func TestFanOutReusesBacklogs(t *testing.T) {
	s, _ := startOneLoopServer(t)
	const n = 3000 // over the 1,024 spares a fixed cap used to keep
	var conns []*conn
	var peers []int
	t.Cleanup(func() {
		for _, fd := range peers {
			_ = unix.Close(fd)
		}
		for _, c := range conns {
			_ = unix.Close(int(c.fd))
		}
	})
	for range n {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatalf("socketpair: %v", err)
		}
		conns = append(conns, &conn{fd: int32(fds[0]), state: stateOpen})
		peers = append(peers, fds[1])
	}
	frame := []byte{0x81, 2, 'h', 'i'}
	buf := make([]byte, 64)
	publish := func(ls *loopState) {
		for _, c := range conns {
			if !c.enqueue(ls, frame, true) {
				t.Fatal("enqueue refused a frame")
			}
		}
		ls.flush()
		for i, fd := range peers {
			if m, err := unix.Read(fd, buf); err != nil || m != len(frame) {
				t.Fatalf("peer %d read %d bytes, %v", i, m, err)
			}
		}
	}
	onLoop(t, s, func(ls *loopState) {
		ls.nconns += n // these connections are the loop's, for its spares' bound
		defer func() { ls.nconns -= n }()
		publish(ls)
		spares := len(ls.backlogs)
		if spares < n {
			t.Fatalf("%d spare backlogs after a publication to %d connections", spares, n)
		}
		for _, c := range conns {
			c.push(ls, frame)
		}
		if got := len(ls.backlogs); got != spares-n {
			t.Fatalf("%d connections took %d spares", n, spares-got)
		}
		for _, c := range conns {
			c.dropBacklog(ls)
		}

		now := ls.loop.Now.UnixNano() + int64(spareTrimPeriod)
		publish(ls)
		ls.trimSpares(now) // spares taken in the period are kept
		if got := len(ls.backlogs); got < n {
			t.Fatalf("trim after a publication kept %d spares, want %d", got, n)
		}
		ls.trimSpares(now + int64(spareTrimPeriod)) // none taken since
		if got := len(ls.backlogs); got != 0 {
			t.Fatalf("%d spares kept after a period without publications", got)
		}
	})
}
