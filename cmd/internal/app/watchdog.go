//go:build linux

package app

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
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
	srv    *gateway.Server
	sink   audit.Sink
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (w *watchdog) name() string { return "watchdog" }

func (w *watchdog) start() error {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.run(ctx)
	}()
	return nil
}

func (w *watchdog) prepare(*config.Config, keySet) (func() error, error) { return nil, nil }

func (w *watchdog) close() error {
	if w.cancel != nil {
		w.cancel()
		w.wg.Wait()
	}
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

// fdUsage counts open descriptors against the soft limit.
func fdUsage() (used, limit uint64, ok bool) {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil || rl.Cur == 0 {
		return 0, 0, false
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, 0, false
	}
	return uint64(len(ents)), rl.Cur, true
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
