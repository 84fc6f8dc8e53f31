package config

import (
	"strings"
	"testing"
	"time"
)

// log_level, shutdown.drain and io_uring: the defaults, and a bad value named with
// its place in the file.
func TestLifecycleKeys(t *testing.T) {
	c := Default()
	if c.LogLevel != "info" || c.Shutdown.Drain != 30*time.Second || !c.IOURing {
		t.Fatalf("defaults: log_level %q, shutdown.drain %s, io_uring %v", c.LogLevel, c.Shutdown.Drain, c.IOURing)
	}
	got, err := Load(write(t, "log_level: debug\nshutdown: {drain: 0s}\nio_uring: false\n"))
	if err != nil || got.LogLevel != "debug" || got.Shutdown.Drain != 0 || got.IOURing {
		t.Fatalf("valid values: %+v %v", got, err)
	}
	for yaml, want := range map[string]string{
		"log_level: verbose\n":       `:1:1: log_level: "verbose" must be debug, info, warn or error`,
		"shutdown:\n  drain: -1s\n":  `:2:3: shutdown.drain: -1s must be between 0s (close every client at once) and 10m`,
		"shutdown:\n  drain: 11m\n":  `:2:3: shutdown.drain: 11m0s must be between 0s`,
		"shutdown:\n  drain: soon\n": `:2:10: shutdown.drain: "soon" is not a duration`,
		"shutdown:\n  grace: 10s\n":  `:2:3: shutdown.grace: unknown key`,
		"io_uring: maybe\n":          `:1:11: io_uring:`,
	} {
		_, err := Load(write(t, yaml))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v\nwant %q", yaml, err, want)
		}
	}
}
