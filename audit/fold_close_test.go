package audit

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// closeEv is a conn_close of reason r and code at t0+d from 198.51.100.<i%200>
// (counted under its /24 for i < 150, else under 203.0.113.0/24).
func closeEv(t0 time.Time, d time.Duration, i int, r reason.Reason, code int) *Event {
	ip := netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 200)})
	pfx := netip.MustParsePrefix("198.51.100.0/24")
	if i%200 >= 150 {
		pfx = netip.MustParsePrefix("203.0.113.0/24")
	}
	return &Event{Time: t0.Add(d), Event: KindConnClose, Severity: Info, Stage: StageClose, Reason: r, Code: code,
		IP: ip, PeerIP: ip, CountedPrefix: pfx, Proto: "portcullis.v1", UserID: fmt.Sprint("u", i), Conn: uint64(i + 1),
		DurationMS: int64(1000 + i)}
}

// The first closeAfter closes of a cause per window are kept verbatim; the
// rest of the window is one summary with the exact count, the first and
// last time, the longest lifetime, the fields they share, and the distinct
// addresses and top prefixes in detail. Another cause folds apart.
func TestCloseFold(t *testing.T) {
	f := newFolder(5)
	if f.closeAfter != DefaultCloseFoldAfter {
		t.Fatalf("closeAfter %d, want %d", f.closeAfter, DefaultCloseFoldAfter)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 1000
	var kept []int
	for i := 0; i < n; i++ {
		e := closeEv(t0, time.Duration(i)*500*time.Microsecond, i, reason.ClientClosed, 1006)
		if !foldable(e) {
			t.Fatal("conn_close not foldable")
		}
		if !f.add(e) {
			kept = append(kept, i)
		}
	}
	if len(kept) != DefaultCloseFoldAfter || kept[0] != 0 || kept[len(kept)-1] != DefaultCloseFoldAfter-1 {
		t.Fatalf("kept verbatim %v, want the first %d", kept, DefaultCloseFoldAfter)
	}
	// Another cause (same reason, another code) has its own first 20.
	for i := 0; i < 30; i++ {
		if f.add(closeEv(t0, 0, i, reason.ClientClosed, 1001)) != (i >= DefaultCloseFoldAfter) {
			t.Fatalf("close %d of a second cause: wrong fold", i)
		}
	}
	if s := f.take(t0.Add(900*time.Millisecond), false); len(s) != 0 {
		t.Fatalf("summary before the window ended: %+v", s)
	}
	s := f.take(t0.Add(time.Second), false)
	if len(s) != 2 {
		t.Fatalf("%d summaries, want 2: %+v", len(s), s)
	}
	var sum Event
	for _, e := range s {
		if e.Code == 1006 {
			sum = e
		} else if e.Count != 10 {
			t.Fatalf("second cause's summary counts %d, want 10", e.Count)
		}
	}
	first, last := t0.Add(20*500*time.Microsecond), t0.Add((n-1)*500*time.Microsecond)
	if sum.Event != KindConnClose || sum.Count != n-DefaultCloseFoldAfter || sum.Reason != reason.ClientClosed ||
		!sum.First.Equal(first) || !sum.Last.Equal(last) || !sum.Time.Equal(last) || sum.Stage != StageClose ||
		sum.Severity != Info || sum.DurationMS != 1000+n-1 || sum.Proto != "portcullis.v1" {
		t.Fatalf("summary %+v", sum)
	}
	if sum.IP.IsValid() || sum.PeerIP.IsValid() || sum.CountedPrefix.IsValid() || sum.UserID != "" || sum.Conn != 0 {
		t.Fatalf("summary keeps fields its closes do not share: %+v", sum)
	}
	// 980 closes from 200 addresses: 150 of them (730 closes) under
	// 198.51.100.0/24, 50 (250) under 203.0.113.0/24.
	want := "mass close: 980 closes of this reason and code beyond the first 20 within 1s, from 200 distinct addresses;" +
		" top counted prefixes 198.51.100.0/24 ×730, 203.0.113.0/24 ×250"
	if sum.Detail != want {
		t.Fatalf("detail\n%q, want\n%q", sum.Detail, want)
	}
	if len(f.closes) != 0 || f.addrs != 0 {
		t.Fatalf("windows left after take: %d, %d addresses", len(f.closes), f.addrs)
	}
}

// A close at or after the window's start + foldWindow starts a new window:
// the previous summary is ready at once, and the new window keeps its
// first closes verbatim again. Closes that share an address keep it.
func TestCloseFoldWindows(t *testing.T) {
	f := newFolder(1)
	f.closeAfter = 2
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	one := func(d time.Duration) *Event { return closeEv(t0, d, 7, reason.PingTimeout, 1008) }
	got := ""
	for _, d := range []time.Duration{0, 1, 2, 3, 999, 1000, 1001, 1002, 2500} {
		if f.add(one(d * time.Millisecond)) {
			got += "f"
		} else {
			got += "v"
		}
	}
	// Windows: [0, 1s): v v f f f; [1s, 2s): v v f; [2.5s, …): v.
	if got != "vvfffvvfv" {
		t.Fatalf("folds %s, want vvfffvvfv", got)
	}
	s := f.take(t0.Add(2600*time.Millisecond), false)
	if len(s) != 2 || s[0].Count != 3 || s[1].Count != 1 {
		t.Fatalf("summaries %+v", s)
	}
	if !s[0].First.Equal(t0.Add(2*time.Millisecond)) || !s[0].Last.Equal(t0.Add(999*time.Millisecond)) ||
		!s[1].First.Equal(t0.Add(1002*time.Millisecond)) {
		t.Fatalf("windows %v–%v, %v", s[0].First, s[0].Last, s[1].First)
	}
	for _, e := range s {
		if e.IP != netip.MustParseAddr("198.51.100.7") || e.UserID != "u7" ||
			e.CountedPrefix != netip.MustParsePrefix("198.51.100.0/24") || !strings.Contains(e.Detail, " 1 distinct addresses") {
			t.Fatalf("summary of one address's closes %+v", e)
		}
	}
	// The last window (one verbatim close, nothing folded) writes nothing.
	if s := f.take(t0.Add(time.Hour), true); len(s) != 0 {
		t.Fatalf("summary of a window without folds: %+v", s)
	}
	// Summaries and other kinds are never folded as closes.
	if foldable(&Event{Event: KindConnClose, Count: 3}) || foldable(&Event{Event: KindConnOpen}) {
		t.Fatal("folded what must not be")
	}
}

// The distinct addresses remembered are bounded: beyond maxCloseAddrs the
// summary says "at least", and its count stays exact.
func TestCloseFoldAddressBound(t *testing.T) {
	f := newFolder(1)
	f.closeAfter = 0
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n := maxCloseAddrs + 100
	for i := 0; i < n; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !f.add(&Event{Time: t0, Event: KindConnClose, Severity: Info, Reason: reason.ClientClosed, Code: 1006, IP: a,
			CountedPrefix: netip.PrefixFrom(a, 32)}) {
			t.Fatalf("close %d not folded", i)
		}
	}
	s := f.take(t0, true)
	if len(s) != 1 || s[0].Count != int64(n) {
		t.Fatalf("summaries %+v", s)
	}
	if !strings.Contains(s[0].Detail, fmt.Sprintf("from at least %d distinct addresses", maxCloseAddrs)) ||
		!strings.Contains(s[0].Detail, fmt.Sprintf("; %d under further prefixes not counted apart", n-maxClosePrefixes)) {
		t.Fatalf("detail %q", s[0].Detail)
	}
	if f.addrs != 0 {
		t.Fatalf("%d addresses still held", f.addrs)
	}
}

// Through the writer: 5,000 closes at once cost a few lines, every close
// is counted exactly once, and the trail verifies.
func TestMassCloseTrail(t *testing.T) {
	tt := newTrail(t)
	w, err := Open(tt.opts())
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now()
	const n = 5000
	for i := 0; i < n; i++ {
		w.Emit(*closeEv(base, time.Duration(i)*100*time.Microsecond, i, reason.ClientClosed, 1006))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	closes := events(tt.lines(t), "conn_close")
	var total int64
	summaries := 0
	for _, l := range closes {
		c, ok := l["count"].(float64)
		if !ok {
			total++
			continue
		}
		total += int64(c)
		summaries++
		if l["first"] == nil || l["last"] == nil || l["reason"] != "client_closed" || l["code"] != float64(1006) ||
			!strings.HasPrefix(l["detail"].(string), "mass close: ") {
			t.Fatalf("summary %v", l)
		}
	}
	if total != n || summaries == 0 || len(closes) > DefaultCloseFoldAfter+2 {
		t.Fatalf("%d conn_close lines (%d summaries) count %d, want %d", len(closes), summaries, total, n)
	}
	if st := w.Stats(); st.Summarized != uint64(n-(len(closes)-summaries)) || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
	mustIntact(t, tt.verify(t))
}
