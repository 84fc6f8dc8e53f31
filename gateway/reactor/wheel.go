package reactor

import "time"

// tick is the wheel's resolution.
const tick = 125 * time.Millisecond

// slots is the number of ticks in one turn of the wheel (32 s); timers
// further out stay in their slot across turns.
const slots = 256

type timerRef struct {
	fd  int32
	gen uint32
	at  int64 // unix nanoseconds
}

// wheel is a hashed timing wheel: timers are 16-byte values in per-slot
// slices, so idle connections cost no goroutine and no runtime timer.
// Loop goroutine only.
type wheel struct {
	slot [slots][]timerRef
	cur  int64 // tick number processed last
	n    int
	due  []timerRef // scratch, reused across ticks
}

func (w *wheel) init(now time.Time) { w.cur = now.UnixNano() / int64(tick) }

func (w *wheel) add(r timerRef) {
	t := r.at / int64(tick)
	if t <= w.cur {
		t = w.cur + 1
	}
	i := t % slots
	w.slot[i] = append(w.slot[i], r)
	w.n++
}

// timeout returns the epoll_wait timeout in milliseconds: until the next
// tick when timers are pending, else forever (-1).
func (w *wheel) timeout(now time.Time) int {
	if w.n == 0 {
		return -1
	}
	next := (w.cur + 1) * int64(tick)
	ms := (next - now.UnixNano() + int64(time.Millisecond) - 1) / int64(time.Millisecond)
	if ms < 0 {
		return 0
	}
	return int(ms)
}

// advance fires every timer due by now.
func (w *wheel) advance(now time.Time, fire func(timerRef)) {
	target := now.UnixNano() / int64(tick)
	if w.n == 0 {
		w.cur = target
		return
	}
	// Never walk more than one turn: a long stall fires everything due once.
	if target-w.cur > slots {
		w.cur = target - slots
	}
	nowNs := now.UnixNano()
	for w.cur < target {
		w.cur++
		i := w.cur % slots
		s := w.slot[i]
		keep := s[:0]
		due := w.due[:0]
		for _, r := range s {
			if r.at <= nowNs || r.at/int64(tick) <= w.cur {
				due = append(due, r)
			} else {
				keep = append(keep, r)
			}
		}
		for j := len(keep); j < len(s); j++ {
			s[j] = timerRef{}
		}
		if len(keep) == 0 && cap(keep) > 64 {
			keep = nil // give back the memory of a burst
		}
		w.slot[i] = keep
		w.n -= len(due)
		for _, r := range due {
			fire(r)
		}
		w.due = due[:0]
	}
}
