//go:build linux

package app

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// countFDs agrees with a listing of /proc/self/fd, and follows
// descriptors opened and closed.
func TestCountFDs(t *testing.T) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n0, err := countFDs()
	if err != nil {
		t.Fatal(err)
	}
	// ReadDir's own descriptor was open while it listed.
	if want := uint64(len(ents) - 1); n0 != want {
		t.Fatalf("countFDs %d, ReadDir %d entries (one its own)", n0, len(ents))
	}
	fds := openSockets(t, 3000) // more than one getdents buffer of names
	n1, err := countFDs()
	closeAll(fds)
	if err != nil || n1 != n0+3000 {
		t.Fatalf("with 3000 more open: %d (%v), want %d", n1, err, n0+3000)
	}
}

// On Linux 6.2 and later the size of /proc/self/fd is the count of open
// descriptors, and fdUsage reads it instead of listing them.
func TestOpenFDsByStat(t *testing.T) {
	n, ok := openFDsByStat()
	if !kernelAtLeast(t, 6, 2) {
		if ok {
			t.Fatalf("a kernel before 6.2 reported %d descriptors in the size of /proc/self/fd", n)
		}
		t.Skip("the size of /proc/self/fd counts descriptors from Linux 6.2 on")
	}
	if !ok {
		t.Fatal("no count in the size of /proc/self/fd")
	}
	listed, err := countFDs()
	if err != nil {
		t.Fatal(err)
	}
	if n != listed {
		t.Fatalf("stat %d, listing %d", n, listed)
	}
	fds := openSockets(t, 3000)
	more, _ := openFDsByStat()
	used, _, _ := fdUsage()
	closeAll(fds)
	if more != n+3000 || used != more {
		t.Fatalf("with 3000 more open: stat %d, fdUsage %d, want %d", more, used, n+3000)
	}
}

// kernelAtLeast reports whether the running kernel is major.minor or later.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", u.Release[:], err)
	}
	return ma > major || ma == major && mi >= minor
}

func openSockets(t testing.TB, n int) []int {
	t.Helper()
	var fds []int
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			closeAll(fds)
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// What the watchdog's count costs once a second with 15,000 connections
// open: listing /proc/self/fd, or one stat of it (Linux 6.2 and later).
//
//	go test -run=^$ -bench=FDCount ./cmd/internal/app/
func BenchmarkFDCount(b *testing.B) {
	fds := openSockets(b, 15000)
	defer closeAll(fds)
	b.Run("list", func(b *testing.B) {
		for b.Loop() {
			if _, err := countFDs(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("stat", func(b *testing.B) {
		if _, ok := openFDsByStat(); !ok {
			b.Skip("the size of /proc/self/fd counts descriptors from Linux 6.2 on")
		}
		for b.Loop() {
			openFDsByStat()
		}
	})
}

// fdUsage never reports less than is open: the table size it may stand
// in with is at least the count.
func TestFDUsageBound(t *testing.T) {
	used, limit, ok := fdUsage()
	n, err := countFDs()
	if !ok || err != nil {
		t.Fatalf("fdUsage ok %v, countFDs %v", ok, err)
	}
	if used < n || limit == 0 {
		t.Fatalf("fdUsage %d of %d, %d open", used, limit, n)
	}
	size, ok := fdTableSize()
	if !ok || size < n {
		t.Fatalf("FDSize %d (%v) under the %d open", size, ok, n)
	}
}

func TestStatusField(t *testing.T) {
	status := []byte("Name:\tportcullis\nFDSize:\t8192\nVmRSS:\t  1234 kB\n")
	if v, ok := statusField(status, "FDSize:"); !ok || v != 8192 {
		t.Fatalf("FDSize %d %v", v, ok)
	}
	if _, ok := statusField(status, "Threads:"); ok {
		t.Fatal("a missing field found")
	}
}
