package reactor

import (
	"testing"
	"time"
)

// spin keeps the goroutine busy for d of wall time.
func spin(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}

// Tasks that take longer together than TurnBudget are spread over several
// turns (epoll_wait is called between them, so the loop's fds are served
// meanwhile), and they run in the order they were posted, tasks posted
// during the burst after it.
func TestTasksSpreadOverTurns(t *testing.T) {
	l, err := New(0, nopHandler{})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = l.Run() }()
	defer l.Stop()

	const n = 100
	each := TurnBudget / 20 // the burst takes 5 budgets at least
	var order []int
	waits := make([]uint64, 0, n+1)
	done := make(chan struct{})
	post := func(i int) {
		if !l.Post(func() {
			order = append(order, i)
			waits = append(waits, l.Sys.EpollWait)
			spin(each)
			if i == n {
				close(done)
			}
		}) {
			t.Error("Post refused")
		}
	}
	// Queued from the loop goroutine, so that all are queued before the
	// loop takes them.
	start := make(chan struct{})
	l.Post(func() {
		for i := range n {
			post(i)
		}
		close(start)
	})
	<-start
	post(n) // posted after the burst was queued: runs last
	<-done
	for i, v := range order {
		if v != i {
			t.Fatalf("task %d ran at position %d: %v", v, i, order)
		}
	}
	if turns := waits[len(waits)-1] - waits[0]; turns < 3 {
		t.Errorf("%d tasks of %v each ran in %d turns, want them spread over at least 3", n, each, turns+1)
	}
}

// endHandler is a TurnEnder that has work for `left` more turns, and
// records the turns it was called in.
type endHandler struct {
	nopHandler
	l     *Loop
	left  int
	calls []uint64 // l.Sys.EpollWait at each call
	first chan struct{}
}

func (h *endHandler) EndTurn(time.Time) bool {
	h.calls = append(h.calls, h.l.Sys.EpollWait)
	if h.left == 0 {
		return false
	}
	h.left--
	if h.left == 0 {
		close(h.first)
	}
	return true
}

// EndTurn runs once per turn, after all the tasks of the turn; work it
// reports left makes the loop come back for it turn after turn without
// waiting for an event.
func TestEndTurnOncePerTurn(t *testing.T) {
	h := &endHandler{left: 3, first: make(chan struct{})}
	l, err := New(0, h)
	if err != nil {
		t.Fatal(err)
	}
	h.l = l
	ran := 0
	l.Post(func() {
		for range 5 {
			l.Post(func() { ran++ })
		}
	})
	go func() { _ = l.Run() }()
	defer l.Stop()
	<-h.first
	var calls []uint64
	var tasks int
	done := make(chan struct{})
	l.Post(func() { calls, tasks = append(calls, h.calls...), ran; close(done) })
	<-done
	if tasks != 5 {
		t.Fatalf("%d of 5 tasks ran", tasks)
	}
	// One call for the turn of the 6 tasks, one per turn of work left.
	if len(calls) < 4 {
		t.Fatalf("EndTurn called %d times, want 4", len(calls))
	}
	for i := 1; i < 4; i++ {
		if calls[i] != calls[i-1]+1 {
			t.Fatalf("EndTurn in turns %v: want consecutive turns", calls)
		}
	}
	if ts := l.Turns(); ts.Count() < 4 || ts.Quantile(1) == 0 {
		t.Errorf("turns %+v", ts)
	}
}

// A Post to a loop that is awake (running a task) does not write the
// eventfd: the loop finds the task before it sleeps again.
func TestPostToAwakeLoopDoesNotWake(t *testing.T) {
	l, err := New(0, nopHandler{})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = l.Run() }()
	defer l.Stop()
	done := make(chan struct{})
	var wakes0, wakes1 uint64
	l.Post(func() {
		wakes0 = l.wakes.Load()
		for range 10 {
			l.Post(func() {})
		}
		wakes1 = l.wakes.Load()
		l.Post(func() { close(done) })
	})
	<-done
	if wakes1 != wakes0 {
		t.Errorf("%d eventfd writes for 10 posts to an awake loop, want 0", wakes1-wakes0)
	}
}

// backlogSeer records, for each turn that handled events, how many it
// handled and what Backlogged said at the end of the turn.
type backlogSeer struct {
	events int
	turns  [][2]int // events handled, backlogged (1) or not (0)
	loop   *Loop
}

func (b *backlogSeer) OnEvent(fd int, _ Events) {
	var buf [8]byte
	_, _ = Read(fd, buf[:]) // one byte each: drained, so reported once
	b.events++
}

func (b *backlogSeer) OnTimer(int, int64) {}

func (b *backlogSeer) EndTurn(time.Time) bool {
	if b.events > 0 {
		bl := 0
		if b.loop.Backlogged() {
			bl = 1
		}
		b.turns = append(b.turns, [2]int{b.events, bl})
		b.events = 0
	}
	return false
}

// Backlogged is true in a turn whose epoll_wait filled its MaxEvents (more
// are ready behind them) and false in the turn that took the rest.
func TestBacklogged(t *testing.T) {
	seer := &backlogSeer{}
	l, err := New(0, seer)
	if err != nil {
		t.Fatal(err)
	}
	seer.loop = l
	const n = MaxEvents + 10
	var writers []int
	for range n {
		a, b := socketPair(t)
		if _, err := l.Add(a, Readable); err != nil {
			t.Fatal(err)
		}
		writers = append(writers, b)
	}
	for _, b := range writers {
		if _, err := Write(b, []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	go func() { _ = l.Run() }()
	done := make(chan [][2]int)
	for {
		l.Post(func() {
			total := 0
			for _, tr := range seer.turns {
				total += tr[0]
			}
			if total >= n {
				done <- seer.turns
			} else {
				done <- nil
			}
		})
		if turns := <-done; turns != nil {
			l.Stop()
			<-l.Done()
			// [[256 1] [10 0]] unless a turn ran out of budget (then it is
			// backlogged too, with fewer events).
			last := turns[len(turns)-1]
			if len(turns) < 2 || turns[0][1] != 1 || turns[0][0] > MaxEvents || last[1] != 0 {
				t.Fatalf("turns (events, backlogged) %v, want the first backlogged and the last not", turns)
			}
			return
		}
		time.Sleep(time.Millisecond)
	}
}
