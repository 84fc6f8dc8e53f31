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

func TestConnBucket(t *testing.T) {
	if n := unsafe.Sizeof(ConnBucket{}); n != 8 {
		t.Fatalf("ConnBucket is %d bytes, want 8 (it sits inline in every connection)", n)
	}
	r := Rate{PerSecond: 10, Burst: 4} // 5 at once, then one per 100 ms
	var b ConnBucket
	ms := func(n int64) time.Duration { return time.Duration(n) * time.Millisecond }
	for i := 0; i < 5; i++ {
		if !b.Allow(r, ms(0)) {
			t.Fatalf("burst message %d refused", i)
		}
	}
	if b.Allow(r, ms(0)) {
		t.Fatal("6th message at once allowed")
	}
	if b.Allow(r, ms(50)) {
		t.Fatal("allowed after 50 ms")
	}
	if !b.Allow(r, ms(101)) {
		t.Fatal("refused after 100 ms")
	}
	// A long quiet spell refills to the burst, not beyond.
	b.Settle(r, ms(3_600_000))
	for i := 0; i < 5; i++ {
		if !b.Allow(r, ms(3_600_000)) {
			t.Fatalf("after an hour, message %d refused", i)
		}
	}
	if b.Allow(r, ms(3_600_000)) {
		t.Fatal("bucket refilled beyond its burst")
	}
	full := b
	for range 1000 {
		if !b.Allow(Rate{}, 0) || !b.Allow(Rate{PerSecond: -1}, 0) {
			t.Fatal("disabled rate refused")
		}
	}
	b.Settle(Rate{PerSecond: -1}, ms(4_000_000))
	if b != full {
		t.Fatal("a disabled rate changed the bucket")
	}
}

// TestConnBucketDefaultRate checks the documented default: 41 messages at
// once, then 20 per second.
func TestConnBucketDefaultRate(t *testing.T) {
	r := DefaultMsgRate
	var b ConnBucket
	for i := range r.Burst + 1 {
		if !b.Allow(r, 0) {
			t.Fatalf("message %d refused", i+1)
		}
	}
	if b.Allow(r, 0) {
		t.Fatalf("message %d allowed", r.Burst+2)
	}
	if !b.Allow(r, 51*time.Millisecond) || b.Allow(r, 52*time.Millisecond) {
		t.Fatal("not one message per 50 ms after the burst")
	}
}

func TestConnBucketNoAllocs(t *testing.T) {
	r := Rate{PerSecond: 1e9, Burst: 10}
	var b ConnBucket
	var since time.Duration
	if n := testing.AllocsPerRun(1000, func() {
		since += time.Microsecond
		b.Allow(r, since)
	}); n != 0 {
		t.Errorf("%v allocations per message, want 0", n)
	}
}
