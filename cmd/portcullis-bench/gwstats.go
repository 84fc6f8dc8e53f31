package main

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// The parts of GET /v1/stats that describe the event loops' turns and the
// syscalls they make. Both are newer than the bench: against a gateway
// that does not report them they are nil, and the benches print n/a.

// loopTurns is /v1/stats "loop_turns": how long the event loops' turns
// that did work took, over all loops since the gateway started.
type loopTurns struct {
	Count   uint64       `json:"count"`
	Max     string       `json:"max"` // time.Duration String form
	P50     string       `json:"p50"`
	P99     string       `json:"p99"`
	Buckets []turnBucket `json:"buckets"`
}

// turnBucket is one cumulative bucket of loopTurns: turns that took at
// most Le ("+Inf" for the last).
type turnBucket struct {
	Le    string `json:"le"`
	Count uint64 `json:"count"`
}

// turnHistogram is loopTurns with its bounds parsed: cumulative counts by
// ascending upper bound, the last bound +Inf.
type turnHistogram struct {
	bounds []time.Duration // math.MaxInt64 stands for +Inf
	counts []uint64
	max    time.Duration // the longest turn since start; 0 when not reported
}

// infBound stands for the "+Inf" bucket bound.
const infBound = time.Duration(math.MaxInt64)

// parseLoopTurns parses lt. A nil lt (a gateway without the field) is
// not an error: ok is false.
func parseLoopTurns(lt *loopTurns) (h turnHistogram, ok bool, err error) {
	if lt == nil {
		return h, false, nil
	}
	if lt.Max != "" {
		if h.max, err = time.ParseDuration(lt.Max); err != nil {
			return h, false, fmt.Errorf("loop_turns.max %q: %w", lt.Max, err)
		}
	}
	for i, b := range lt.Buckets {
		bound := infBound
		if b.Le != "+Inf" {
			if bound, err = time.ParseDuration(b.Le); err != nil {
				return h, false, fmt.Errorf("loop_turns.buckets[%d].le %q: %w", i, b.Le, err)
			}
		}
		if i > 0 && (bound <= h.bounds[i-1] || b.Count < h.counts[i-1]) {
			return h, false, fmt.Errorf("loop_turns.buckets[%d] (le %s, count %d): bounds must ascend and counts be cumulative", i, b.Le, b.Count)
		}
		h.bounds = append(h.bounds, bound)
		h.counts = append(h.counts, b.Count)
	}
	if len(h.bounds) == 0 || h.bounds[len(h.bounds)-1] != infBound {
		return h, false, fmt.Errorf("loop_turns.buckets: %d buckets, the last must be +Inf", len(h.bounds))
	}
	return h, true, nil
}

// total is the number of turns counted: the +Inf bucket's count (the
// gateway reads "count" and the buckets at slightly different moments
// while its loops run, so the two may differ by a few turns).
func (h turnHistogram) total() uint64 {
	if len(h.counts) == 0 {
		return 0
	}
	return h.counts[len(h.counts)-1]
}

// since returns the turns counted after earlier, a snapshot of the same
// gateway's histogram (same bounds); max stays the later one's.
func (h turnHistogram) since(earlier turnHistogram) (turnHistogram, error) {
	if len(earlier.bounds) != len(h.bounds) {
		return turnHistogram{}, fmt.Errorf("loop_turns: %d buckets, earlier %d", len(h.bounds), len(earlier.bounds))
	}
	d := turnHistogram{bounds: h.bounds, counts: make([]uint64, len(h.counts)), max: h.max}
	for i := range h.counts {
		if h.bounds[i] != earlier.bounds[i] || h.counts[i] < earlier.counts[i] {
			return turnHistogram{}, fmt.Errorf("loop_turns: bucket %d is not the earlier one's, or went back", i)
		}
		d.counts[i] = h.counts[i] - earlier.counts[i]
	}
	return d, nil
}

// quantile returns the upper bound of the first bucket holding quantile q
// (0 < q ≤ 1) of the turns, infBound when only the +Inf bucket does, and
// 0 when no turn was counted.
func (h turnHistogram) quantile(q float64) time.Duration {
	n := h.total()
	if n == 0 {
		return 0
	}
	for i, c := range h.counts {
		if float64(c) >= q*float64(n) {
			return h.bounds[i]
		}
	}
	return infBound
}

// over returns how many turns took longer than bound, which must be one of
// the buckets' bounds (ok false otherwise).
func (h turnHistogram) over(bound time.Duration) (n uint64, ok bool) {
	for i, b := range h.bounds {
		if b == bound {
			return h.total() - h.counts[i], true
		}
	}
	return 0, false
}

// syscallCounts is /v1/stats "syscalls": the syscalls the event loops
// (and the wake-ups of their task queues) made since start, by call name
// (epoll_wait, epoll_ctl, read, write, writev, eventfd_write,
// eventfd_read, close, accept, io_uring_enter), and the sends the
// io_uring_enter calls carried (ring_send, ring_sendmsg: no system calls
// of their own).
type syscallCounts map[string]uint64

// since returns the calls made after earlier.
func (s syscallCounts) since(earlier syscallCounts) syscallCounts {
	d := syscallCounts{}
	for k, v := range s {
		if e := earlier[k]; v >= e {
			d[k] = v - e
		}
	}
	return d
}

// writes is the system calls that send: write, writev and io_uring_enter.
func (s syscallCounts) writes() uint64 { return s["write"] + s["writev"] + s["io_uring_enter"] }

// sends is the sends made, one per connection written to: a write, a
// writev, or a send or sendmsg carried by an io_uring_enter.
func (s syscallCounts) sends() uint64 {
	return s["write"] + s["writev"] + s["ring_send"] + s["ring_sendmsg"]
}

// carried are the counts that are sends inside io_uring_enter, not system
// calls.
var carried = map[string]bool{"ring_send": true, "ring_sendmsg": true}

// total is every system call counted.
func (s syscallCounts) total() uint64 {
	var n uint64
	for k, v := range s {
		if !carried[k] {
			n += v
		}
	}
	return n
}

// names returns the call names, sorted.
func (s syscallCounts) names() []string {
	ns := make([]string, 0, len(s))
	for k := range s {
		ns = append(ns, k)
	}
	sort.Strings(ns)
	return ns
}

// setSyscallRows sets the per-delivery syscall rows of a fan-out window in
// r: d is the window's syscalls, delivered the deliveries it made.
func setSyscallRows(r *result, d syscallCounts, delivered int64) {
	setPerUnitSyscallRows(r, d, delivered, "delivery")
	if w := d.writes(); w > 0 {
		r.set("deliveries per write syscall", "n", float64(delivered)/float64(w))
	} else {
		r.na("deliveries per write syscall", "n")
	}
	if w := d.sends(); w > 0 {
		r.set("deliveries per send", "n", float64(delivered)/float64(w))
	} else {
		r.na("deliveries per send", "n")
	}
}

// setPerUnitSyscallRows sets in r the syscalls of d per unit of work (a
// delivery, a set-up), of which n were done: all, the writes, epoll_ctl,
// then every other call made.
func setPerUnitSyscallRows(r *result, d syscallCounts, n int64, unit string) {
	per := func(c uint64) float64 { return float64(c) / float64(max(n, 1)) }
	r.set("syscalls per "+unit+" (event loops)", "n", per(d.total()))
	r.set("  write syscalls per "+unit+" (write, writev, io_uring_enter)", "n", per(d.writes()))
	r.set("  sends per "+unit+" (write, writev, or one in an io_uring_enter)", "n", per(d.sends()))
	r.set("  epoll_ctl per "+unit, "n", per(d["epoll_ctl"]))
	for _, k := range d.names() {
		if k != "write" && k != "writev" && k != "io_uring_enter" && !carried[k] && k != "epoll_ctl" && d[k] > 0 {
			r.set("  "+k+" per "+unit, "n", per(d[k]))
		}
	}
}

// naSyscallRows declares the syscall rows for a server that does not
// count its syscalls, so they print n/a.
func naSyscallRows(r *result) {
	naPerUnitSyscallRows(r, "delivery")
	r.na("deliveries per write syscall", "n")
	r.na("deliveries per send", "n")
}

// naPerUnitSyscallRows declares setPerUnitSyscallRows' fixed rows as n/a.
func naPerUnitSyscallRows(r *result, unit string) {
	r.na("syscalls per "+unit+" (event loops)", "n")
	r.na("  write syscalls per "+unit+" (write, writev, io_uring_enter)", "n")
	r.na("  sends per "+unit+" (write, writev, or one in an io_uring_enter)", "n")
	r.na("  epoll_ctl per "+unit, "n")
}
