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
