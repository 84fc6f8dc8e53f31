package decision

import (
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

// The zero Decision never lets anything through.
func TestZeroRefuses(t *testing.T) {
	var d Decision
	if d.Allowed() || d.Why() != reason.Internal {
		t.Fatalf("zero Decision: allowed %v, why %v", d.Allowed(), d.Why())
	}
	if a := Allow(); !a.Allowed() || a.Why() != reason.None {
		t.Fatalf("Allow: %+v", a)
	}
	if d := Deny(reason.None); d.Allowed() || d.Why() != reason.Internal {
		t.Fatalf("Deny(None): %+v", d)
	}
	if d := Reply(reason.None, ""); d.Allowed() || d.Why() != reason.Internal {
		t.Fatalf("Reply(None): %+v", d)
	}
}

// Every refusal before the upgrade has an HTTP status and a message;
// every frame-stage refusal a close code.
func TestStandardAnswers(t *testing.T) {
	cases := []struct {
		r      reason.Reason
		status int
		close  uint16
	}{
		{reason.Blocked, 403, 1008},
		{reason.Banned, 403, 1008},
		{reason.ConnRate, 429, 0},
		{reason.PerIPConnections, 429, 0},
		{reason.HandshakeFailRate, 429, 0},
		{reason.GlobalConnections, 503, 0},
		{reason.AuditUnavailable, 503, 0},
		{reason.HandshakeTimeout, 408, 0},
		{reason.HandshakeTooLarge, 431, 0},
		{reason.BadHandshake, 400, 0},
		{reason.BadOrigin, 403, 0},
		{reason.BadSubprotocol, 400, 0},
		{reason.BadPath, 404, 0},
		{reason.BadClientIP, 400, 0},
		{reason.ProxyHeader, 400, 0},
		{reason.BadHeader, 400, 0},
		{reason.ProtocolError, 0, 1002},
		{reason.InvalidUTF8, 0, 1007},
		{reason.FrameTooLarge, 0, 1009},
		{reason.MessageTooLarge, 0, 1009},
		{reason.SlowConsumer, 0, 1008},
		{reason.MessageTimeout, 0, 1008},
		{reason.InboundBudget, 0, 1008},
		{reason.GlobalInbound, 0, 1008},
		{reason.BytesRate, 0, 1008},
	}
	for _, c := range cases {
		d := Deny(c.r)
		if d.Allowed() || d.Why() != c.r || d.Status != c.status || d.Close != c.close || d.Message == "" {
			t.Errorf("Deny(%v) = %+v, want status %d close %d and a message", c.r, d, c.status, c.close)
		}
	}
}

// A message-stage refusal keeps the connection open; the modifiers change
// only what they name.
func TestReplyAndModifiers(t *testing.T) {
	d := Reply(reason.MessageTooLarge, "")
	if d.Close != 0 || d.Status != 0 || d.Message != "" || d.Why() != reason.MessageTooLarge {
		t.Fatalf("Reply: %+v", d)
	}
	if d := ReplyOf(reason.None); !d.Allowed() {
		t.Fatal("ReplyOf(None) refuses")
	}
	if d := ReplyOf(reason.TopicDenied); d.Allowed() || d.Close != 0 || d.Why() != reason.TopicDenied {
		t.Fatalf("ReplyOf(TopicDenied): %+v", d)
	}
	d = Deny(reason.ConnRate).WithRetry(3 * time.Second).WithMessage("slow down")
	if d.Retry != 3*time.Second || d.Message != "slow down" || d.Status != 429 {
		t.Fatalf("modified: %+v", d)
	}
	d = Deny(reason.Unsupported).Closing(1003, "binary frames are not supported")
	if d.Close != 1003 || d.Message != "binary frames are not supported" || d.Why() != reason.Unsupported {
		t.Fatalf("Closing: %+v", d)
	}
}
