package query

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// checkFor polls cond until it returns nil or timeout passes.
func checkFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func appendLines(t *testing.T, path string, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func evLine(seq int) string {
	return ev(seq, t0.Add(time.Duration(seq)*time.Second), "conn_open", "info") + "\n"
}

// collector gathers delivered sequence numbers.
type collector struct {
	mu   sync.Mutex
	seqs []uint64
}

func (c *collector) emit(line []byte) error {
	var r Record
	if err := r.Parse(line, FieldSeq); err != nil {
		return fmt.Errorf("emitted a bad line %q", line)
	}
	c.mu.Lock()
	c.seqs = append(c.seqs, r.Seq)
	c.mu.Unlock()
	return nil
}

func (c *collector) want(seqs ...uint64) func() error {
	return func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !slices.Equal(c.seqs, seqs) {
			return fmt.Errorf("got %v, want %v", c.seqs, seqs)
		}
		return nil
	}
}

func TestFollowAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	active := filepath.Join(dir, ActiveName)
	appendLines(t, active, evLine(1)+evLine(2)+`{"seq":3,"time":"2025-`) // the writer is mid-line
	fo, off, err := NewFollower(active, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fo.Close()
	if want := int64(len(evLine(1) + evLine(2))); off != want {
		t.Fatalf("start offset %d, want %d", off, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var c collector
	done := make(chan error, 1)
	go func() { done <- fo.Run(ctx, 2*time.Millisecond, c.emit, nil) }()

	// The writer finishes line 3, then writes line 4.
	appendLines(t, active, `03-01T12:00:03Z","event":"conn_open"}`+"\n"+evLine(4))
	checkFor(t, 5*time.Second, c.want(3, 4))

	// Rotation: a last line into the old file, rename, a new audit.log.
	appendLines(t, active, evLine(5))
	if err := os.Rename(active, filepath.Join(dir, "audit-20250301T120005Z-1.log")); err != nil {
		t.Fatal(err)
	}
	appendLines(t, active, evLine(6))
	appendLines(t, active, evLine(7))
	checkFor(t, 5*time.Second, c.want(3, 4, 5, 6, 7))

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestFollowCatchesUpOnMissedRotations(t *testing.T) {
	// Time is a parameter: drive Poll directly instead of a ticker.
	dir := t.TempDir()
	active := filepath.Join(dir, ActiveName)
	appendLines(t, active, evLine(1))
	fo, _, err := NewFollower(active, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fo.Close()
	var c collector
	appendLines(t, active, evLine(2))
	if err := fo.Poll(c.emit); err != nil {
		t.Fatal(err)
	}
	// Two rotations between polls, the second file already compressed.
	appendLines(t, active, evLine(3))
	os.Rename(active, filepath.Join(dir, "audit-20250301T120003Z-1.log"))
	writeFile(t, filepath.Join(dir, "audit-20250301T120005Z-4.log.gz"), []string{evLine(4)[:len(evLine(4))-1], evLine(5)[:len(evLine(5))-1]}, true, "")
	appendLines(t, active, evLine(6))
	if err := fo.Poll(c.emit); err != nil {
		t.Fatal(err)
	}
	if err := c.want(2, 3, 4, 5, 6)(); err != nil {
		t.Fatal(err)
	}
	// Nothing new: nothing delivered twice.
	if err := fo.Poll(c.emit); err != nil {
		t.Fatal(err)
	}
	if err := c.want(2, 3, 4, 5, 6)(); err != nil {
		t.Fatal(err)
	}
}

func TestFollowWaitsForTheFileAndRereadsAfterTruncation(t *testing.T) {
	dir := t.TempDir()
	active := filepath.Join(dir, ActiveName)
	var warns []string
	fo, off, err := NewFollower(active, func(s string) { warns = append(warns, s) })
	if err != nil || off != 0 {
		t.Fatal(off, err)
	}
	defer fo.Close()
	var c collector
	if err := fo.Poll(c.emit); err != nil {
		t.Fatal(err)
	}
	appendLines(t, active, evLine(1)+evLine(2))
	fo.Poll(c.emit)
	os.WriteFile(active, []byte(evLine(3)), 0o600) // copytruncate-style
	fo.Poll(c.emit)
	if err := c.want(1, 2, 3)(); err != nil {
		t.Fatal(err)
	}
	if len(warns) != 1 {
		t.Errorf("warnings %q", warns)
	}
}
