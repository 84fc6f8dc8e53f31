package config

import "time"

// MaxDrain bounds shutdown.drain: a stop that takes longer than this is a
// mistake (and outlasts every service manager's stop timeout).
const MaxDrain = 10 * time.Minute

// LogLevels are the values log_level accepts, in increasing severity.
var LogLevels = []string{"debug", "info", "warn", "error"}

// validateLifecycle checks the keys of the process's own life: the log
// level and the drain window.
func (d *decoder) validateLifecycle() {
	c := d.c
	ok := false
	for _, l := range LogLevels {
		ok = ok || c.LogLevel == l
	}
	if !ok {
		d.bad("log_level", "%q must be debug, info, warn or error", c.LogLevel)
	}
	if c.Shutdown.Drain < 0 || c.Shutdown.Drain > MaxDrain {
		d.bad("shutdown.drain", "%s must be between 0s (close every client at once) and 10m", c.Shutdown.Drain)
	}
}
