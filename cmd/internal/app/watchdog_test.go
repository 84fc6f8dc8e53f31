//go:build linux

package app

import (
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
	var fds []int
	for range 3000 { // more than one getdents buffer of names
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	n1, err := countFDs()
	for _, fd := range fds {
		unix.Close(fd)
	}
	if err != nil || n1 != n0+3000 {
		t.Fatalf("with 3000 more open: %d (%v), want %d", n1, err, n0+3000)
	}
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
