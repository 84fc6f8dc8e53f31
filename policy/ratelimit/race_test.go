//go:build race

package ratelimit

// raceEnabled scales down tests that the race detector makes slow.
const raceEnabled = true
