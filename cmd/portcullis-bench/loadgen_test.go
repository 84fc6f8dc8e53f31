package main

import "testing"

func TestParseStatTicks(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "4242 (port cullis (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 731 269 0 0 20 0 9 0 100 0 0"
	got, err := parseStatTicks(line)
	if err != nil || got.user != 731 || got.sys != 269 || got.total() != 1000 {
		t.Fatalf("ticks %d err %v, want 731+269", got, err)
	}
	if _, err := parseStatTicks("garbage"); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestParseRSS(t *testing.T) {
	if got := parseRSS("Name:\tx\nVmRSS:\t   31720 kB\nThreads: 9\n"); got != 31720 {
		t.Fatalf("rss %d", got)
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if percentile(xs, 50) != 5 || percentile(xs, 100) != 10 || percentile(xs, 0) != 1 || percentile(nil, 50) != 0 {
		t.Fatal("percentiles")
	}
}

func TestHasPing(t *testing.T) {
	if !hasPing([]byte("{}")) || !hasPing([]byte(`{"push":{}}`+"\n{}")) || hasPing([]byte(`{"push":{"pub":{}}}`)) {
		t.Fatal("ping detection")
	}
}
