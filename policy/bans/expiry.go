package bans

import "net/netip"

// deadline is when something keyed by p ends (Unix nanoseconds). For bans,
// b is the ban it was pushed for: a deadline whose ban has since been
// replaced or removed is stale and skipped. For history, at is compared
// with the current forget time instead.
type deadline struct {
	at int64
	p  netip.Prefix
	b  *Ban
}

// deadlines is a binary min-heap on at, so that Sweep's work is
// proportional to what ends rather than to what is held. Stale entries are
// dropped lazily when they reach the top. Not safe for concurrent use: the
// Manager holds mu.
type deadlines []deadline

func (h *deadlines) push(d deadline) {
	*h = append(*h, d)
	s := *h
	for i := len(s) - 1; i > 0; {
		parent := (i - 1) / 2
		if s[parent].at <= s[i].at {
			break
		}
		s[parent], s[i] = s[i], s[parent]
		i = parent
	}
}

// popDue removes and returns the earliest deadline if it is at or before
// now, else ok is false.
func (h *deadlines) popDue(now int64) (d deadline, ok bool) {
	s := *h
	if len(s) == 0 || s[0].at > now {
		return deadline{}, false
	}
	d = s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = deadline{}
	s = s[:last]
	for i := 0; ; {
		l, small := 2*i+1, i
		if l < len(s) && s[l].at < s[small].at {
			small = l
		}
		if r := l + 1; r < len(s) && s[r].at < s[small].at {
			small = r
		}
		if small == i {
			break
		}
		s[i], s[small] = s[small], s[i]
		i = small
	}
	*h = s
	return d, true
}
