package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// How long a server's threads waited for a core. The kernel keeps, for
// every thread, the time it has run and the time it has spent runnable on
// a run queue, waiting for a core (/proc/PID/task/TID/schedstat, in ns).
// On a machine whose cores the load generator shares with the server, a
// loop turn or a round trip that takes long may be the server working or
// the server waiting for a core; the second is what this counts. It is
// read per thread, so that a thread that starts between two readings
// counts all of its wait and one that ends counts nothing, instead of
// throwing the sums off.

// threadWaits is the wait for a core (ns) of every thread of some
// processes, by process and thread id.
type threadWaits map[[2]int]int64

// waitsOf reads the waits of every thread of t's processes.
func waitsOf(t target) (threadWaits, error) {
	w := threadWaits{}
	for _, m := range members(t) {
		if err := addWaits(w, m.pid()); err != nil {
			return nil, fmt.Errorf("%s: %w", m.name(), err)
		}
	}
	return w, nil
}

// addWaits adds pid's threads to w.
func addWaits(w threadWaits, pid int) error {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("threads: %w", err)
	}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(dir + "/" + task.Name() + "/schedstat")
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue // the thread ended after the listing (or is ending)
		}
		if err != nil {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
		wait, err := parseSchedstat(string(b))
		if err != nil {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
		w[[2]int{pid, tid}] = wait
	}
	return nil
}

// parseSchedstat returns the run-queue wait (ns) of a schedstat line:
// "time on a core, time waiting on a run queue, time slices".
func parseSchedstat(s string) (int64, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return 0, fmt.Errorf("schedstat %q: want 3 fields", s)
	}
	wait, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || wait < 0 {
		return 0, fmt.Errorf("schedstat %q: bad wait", s)
	}
	return wait, nil
}

// since returns how long the threads of w waited after earlier, a reading
// of the same processes: a thread in both counts its difference, a thread
// that started in between all of its wait, a thread that ended in between
// nothing.
func (w threadWaits) since(earlier threadWaits) time.Duration {
	var d int64
	for id, v := range w {
		d += v - earlier[id]
	}
	return time.Duration(d)
}
