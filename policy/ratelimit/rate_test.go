package ratelimit

import (
	"strings"
	"testing"
	"time"
	"unsafe"
)

func TestRateValidate(t *testing.T) {
	tests := []struct {
		name string
		r    Rate
		want string // "" for valid
	}{
		{"default", DefaultConnRate, ""},
		{"disabled", Rate{}, ""},
		{"negative disables", Rate{PerSecond: -1}, ""},
		{"NaN", Rate{PerSecond: nanf()}, "finite"},
		{"Inf", Rate{PerSecond: 1 / zero()}, "finite"},
		{"negative burst", Rate{PerSecond: 1, Burst: -1}, "burst -1"},
		{"huge burst", Rate{PerSecond: 1, Burst: MaxBurst + 1}, "between 0 and"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want error containing %q", err, tc.want)
			}
		})
	}
	if s := DefaultConnRate.String(); s != "10/s burst 20" {
		t.Errorf("String = %q", s)
	}
	if s := (Rate{}).String(); s != "off" {
		t.Errorf("String = %q", s)
	}
}

func zero() float64 { return 0 }

func TestRefill(t *testing.T) {
	if d := (Rate{PerSecond: 10, Burst: 20}).refill(); d != 2100*time.Millisecond {
		t.Errorf("refill = %v, want 2.1s", d)
	}
	if d := (Rate{}).refill(); d != 0 {
		t.Errorf("disabled refill = %v", d)
	}
	if d := (Rate{PerSecond: 1e-300, Burst: 1}).refill(); d <= 0 {
		t.Errorf("tiny rate refill = %v, want huge", d)
	}
}

func TestNewLimiterAndIdle(t *testing.T) {
	l := Rate{PerSecond: 2, Burst: 1}.NewLimiter()
	if !Idle(l, t0) {
		t.Fatal("new limiter not idle")
	}
	if first, second, third := l.AllowN(t0, 1), l.AllowN(t0, 1), l.AllowN(t0, 1); !first || !second || third {
		t.Fatal("burst 1 must allow exactly 2 at once")
	}
	if Idle(l, t0.Add(999*time.Millisecond)) {
		t.Fatal("idle before refilled")
	}
	if !Idle(l, t0.Add(time.Second)) {
		t.Fatal("not idle once refilled")
	}
	if !Idle(nil, t0) {
		t.Fatal("nil is a full bucket")
	}
	off := Rate{}.NewLimiter()
	for range 100 {
		if !off.AllowN(t0, 1) {
			t.Fatal("disabled limiter refused")
		}
	}
	if !Idle(off, t0) {
		t.Fatal("disabled limiter not idle")
	}
}

func TestConnLimiter(t *testing.T) {
	if n := unsafe.Sizeof(ConnLimiter{}); n != unsafe.Sizeof(uintptr(0)) {
		t.Fatalf("ConnLimiter is %d bytes, want one pointer", n)
	}
	r := Rate{PerSecond: 20, Burst: 40}
	var c ConnLimiter
	if !c.Trim(t0) {
		t.Fatal("zero ConnLimiter holds something")
	}
	for i := range 41 {
		if !c.Allow(r, t0) {
			t.Fatalf("message %d refused", i+1)
		}
	}
	if c.Allow(r, t0) {
		t.Fatal("message 42 allowed")
	}
	if c.Trim(t0.Add(time.Second)) {
		t.Fatal("trimmed a bucket that is not full")
	}
	if !c.Allow(r, t0.Add(time.Second)) {
		t.Fatal("refill after 1s refused")
	}
	if !c.Trim(t0.Add(3 * time.Second)) {
		t.Fatal("full bucket not trimmed")
	}
	// After a trim the connection starts over with a full bucket.
	for i := range 41 {
		if !c.Allow(r, t0.Add(3*time.Second)) {
			t.Fatalf("message %d after trim refused", i+1)
		}
	}
	var off ConnLimiter
	for range 1000 {
		if !off.Allow(Rate{}, t0) {
			t.Fatal("disabled rate refused")
		}
	}
	if off.l != nil {
		t.Fatal("disabled rate allocated a limiter")
	}
}

func TestConnLimiterNoAllocs(t *testing.T) {
	r := Rate{PerSecond: 1e9, Burst: 10}
	var c ConnLimiter
	c.Allow(r, t0)
	now := t0
	if n := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Microsecond)
		c.Allow(r, now)
	}); n != 0 {
		t.Errorf("%v allocations per message, want 0", n)
	}
}
