package config

import (
	"strings"
	"testing"
)

// The limits on inbound bytes are checked alone and against each other.
func TestInboundLimitChecks(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       string
	}{
		{"timeout positive", "limits:\n  message_timeout: 0s\n", "limits.message_timeout: must be a positive duration"},
		{"per-ip positive", "limits:\n  inbound_buffer_per_ip: 0\n", "limits.inbound_buffer_per_ip: must be a positive number"},
		{"per-ip fits a message", "limits:\n  inbound_buffer_per_ip: 1000\n", "limits.inbound_buffer_per_ip: 1000 is below limits.max_message_bytes 1048576"},
		{"total positive", "limits:\n  inbound_buffer_total: 0\n", "limits.inbound_buffer_total: must be a positive number"},
		{"per-ip within total", "limits:\n  inbound_buffer_per_ip: 8388608\n  inbound_buffer_total: 4194304\n",
			":3:3: limits.inbound_buffer_total: 4194304 is below limits.inbound_buffer_per_ip 8388608"},
		{"byte rate positive", "limits:\n  bytes_rate: {rate: 0, burst: 2097152}\n", "limits.bytes_rate.rate: must be a positive number"},
		{"burst fits a message", "limits:\n  bytes_rate: {rate: 1, burst: 1000}\n", "limits.bytes_rate.burst: 1000 is below limits.max_message_bytes 1048576"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Load(write(t, c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
	c, err := Load(write(t, "limits:\n  max_message_bytes: 65536\n  bytes_rate: {rate: 1000, burst: 65536}\n  inbound_buffer_per_ip: 65536\n  inbound_buffer_total: 65536\n"))
	if err != nil {
		t.Fatalf("valid limits refused: %v", err)
	}
	if c.Limits.MessageTimeout.Seconds() != 10 || c.Limits.BytesRate.Burst != 65536 {
		t.Fatalf("%+v", c.Limits)
	}
}
