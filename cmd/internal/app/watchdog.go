//go:build linux

package app

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway"
	"github.com/portcullis-gw/portcullis/gateway/config"
)

// watchdog watches the gateway itself once a second and reports trouble
// as critical system events (alerting's gateway_trouble rule): an event
// loop stalled for over a second, file descriptors or memory near their
// limits. Each condition is reported when it starts, not every second.
type watchdog struct {
	srv  *gateway.Server
	sink audit.Sink
	bg   background
}

func (w *watchdog) name() string { return "watchdog" }

func (w *watchdog) start() error {
	w.bg.spawn(w.run)
	return nil
}

func (w *watchdog) prepare(*config.Config, keySet) (func() error, error) { return nil, nil }

func (w *watchdog) close() error {
	w.bg.stop()
	return nil
}

func (w *watchdog) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var reportedStall time.Duration
	fdHigh, memHigh := false, false
	memLimit := cgroupMemoryLimit()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if d := time.Duration(w.srv.Stats().MaxLoopStall); d > time.Second && d > reportedStall {
				reportedStall = d
				w.sink.Emit(audit.Event{Time: now, Event: audit.KindLoopStalled, Severity: audit.Critical, Stage: audit.StageSystem,
					Detail: "an event loop was busy for " + d.Round(time.Millisecond).String() + " without returning to epoll"})
			}
			if used, limit, ok := fdUsage(); ok {
				switch {
				case !fdHigh && used*10 >= limit*9:
					fdHigh = true
					w.sink.Emit(audit.Event{Time: now, Event: audit.KindFDPressure, Severity: audit.Critical, Stage: audit.StageSystem,
						Count: int64(used), Detail: fmt.Sprintf("%d of %d file descriptors in use", used, limit)})
				case fdHigh && used*10 < limit*8:
					fdHigh = false
				}
			}
			if memLimit > 0 {
				if rss := rssBytes(); rss > 0 {
					switch {
					case !memHigh && rss*10 >= memLimit*9:
						memHigh = true
						w.sink.Emit(audit.Event{Time: now, Event: audit.KindMemoryPressure, Severity: audit.Critical, Stage: audit.StageSystem,
							Detail: fmt.Sprintf("RSS %d MiB of a %d MiB limit", rss>>20, memLimit>>20)})
					case memHigh && rss*10 < memLimit*8:
						memHigh = false
					}
				}
			}
		}
	}
}

// fdUsage returns the open descriptors against the soft limit. Since
// Linux 6.2 the kernel says how many are open in the size of
// /proc/self/fd (openFDsByStat: one stat, whatever the count). Before,
// counting them lists /proc/self/fd, a few milliseconds of one thread's
// CPU per 15,000 open, every second; so there, while the descriptor table
// itself is under 80 % of the limit (FDSize in /proc/self/status: no open
// descriptor's number reaches it) its size stands in for the count, an
// upper bound below both of the watchdog's marks.
func fdUsage() (used, limit uint64, ok bool) {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil || rl.Cur == 0 {
		return 0, 0, false
	}
	if n, ok := openFDsByStat(); ok {
		return n, rl.Cur, true
	}
	if size, ok := fdTableSize(); ok && size*10 < rl.Cur*8 {
		return size, rl.Cur, true
	}
	n, err := countFDs()
	if err != nil {
		return 0, 0, false
	}
	return n, rl.Cur, true
}

// openFDsByStat is the number of open descriptors as Linux 6.2 and later
// report it: the size of /proc/self/fd, counted from the descriptor
// table's bitmap without listing anything. ok is false where the size is
// 0 (older kernels).
func openFDsByStat() (uint64, bool) {
	var st unix.Stat_t
	if unix.Stat("/proc/self/fd", &st) != nil || st.Size <= 0 {
		return 0, false
	}
	return uint64(st.Size), true
}

// fdTableSize is the size of this process's descriptor table (FDSize).
func fdTableSize() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	return statusField(b, "FDSize:")
}

// statusField parses the number after key in a /proc status file.
func statusField(status []byte, key string) (uint64, bool) {
	for _, line := range strings.Split(string(status), "\n") {
		if v, found := strings.CutPrefix(line, key); found {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// countFDs counts the entries of /proc/self/fd with getdents(2), without
// a string or an allocation per descriptor.
func countFDs() (uint64, error) {
	fd, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("count descriptors: %w", err)
	}
	defer unix.Close(fd)
	var buf [16 << 10]byte
	var n uint64
	for {
		k, err := unix.Getdents(fd, buf[:])
		if err != nil {
			return 0, fmt.Errorf("count descriptors: %w", err)
		}
		if k <= 0 {
			break
		}
		// linux_dirent64: inode (8 bytes), offset (8), record length
		// (2), type (1), name. Every name but . and .. is a number.
		for b := buf[:k]; len(b) >= 20; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 20 || reclen > len(b) {
				return 0, fmt.Errorf("count descriptors: bad directory record of %d bytes", reclen)
			}
			if b[19] != '.' {
				n++
			}
			b = b[reclen:]
		}
	}
	// The count includes the descriptor reading the directory.
	return n - 1, nil
}

// cgroupMemoryLimit is the cgroup v2 memory limit, 0 when there is none.
func cgroupMemoryLimit() uint64 {
	b, err := os.ReadFile("/sys/fs/cgroup/memory.max")
	if err != nil {
		return 0
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0 // "max"
	}
	return v
}

// rssBytes is this process's resident set size.
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}
