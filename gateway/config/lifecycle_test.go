package config

import (
	"strings"
	"testing"
	"time"
)

// log_level and shutdown.drain: the defaults, and a bad value named with
// its place in the file.
func TestLifecycleKeys(t *testing.T) {
	c := Default()
	if c.LogLevel != "info" || c.Shutdown.Drain != 30*time.Second {
		t.Fatalf("defaults: log_level %q, shutdown.drain %s", c.LogLevel, c.Shutdown.Drain)
	}
	got, err := Load(write(t, "log_level: debug\nshutdown: {drain: 0s}\n"))
	if err != nil || got.LogLevel != "debug" || got.Shutdown.Drain != 0 {
		t.Fatalf("valid values: %+v %v", got, err)
	}
	for yaml, want := range map[string]string{
		"log_level: verbose\n":       `:1:1: log_level: "verbose" must be debug, info, warn or error`,
		"shutdown:\n  drain: -1s\n":  `:2:3: shutdown.drain: -1s must be between 0s (close every client at once) and 10m`,
		"shutdown:\n  drain: 11m\n":  `:2:3: shutdown.drain: 11m0s must be between 0s`,
		"shutdown:\n  drain: soon\n": `:2:10: shutdown.drain: "soon" is not a duration`,
		"shutdown:\n  grace: 10s\n":  `:2:3: shutdown.grace: unknown key`,
	} {
		_, err := Load(write(t, yaml))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v\nwant %q", yaml, err, want)
		}
	}
}
