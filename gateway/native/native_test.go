package native

import (
	"encoding/json"
	"testing"

	"github.com/portcullis-gw/portcullis/audit/reason"
)

func TestEncodersProduceJSON(t *testing.T) {
	outs := [][]byte{
		AppendWelcome(nil, "s\"1", "portcullis/1"),
		AppendSubscribed(nil, 1, true, "news"),
		AppendUnsubscribed(nil, 0, false, "news"),
		AppendPong(nil, 4, true),
		AppendEvent(nil, "news", []byte(`{"a":1}`)),
		AppendError(nil, 1, true, reason.TokenReplayed, ""),
		AppendString(nil, "line\nbreak\u2028\x00\xff"),
	}
	for _, o := range outs {
		if !json.Valid(o) {
			t.Errorf("invalid JSON: %s", o)
		}
	}
	var e map[string]any
	_ = json.Unmarshal(AppendError(nil, 1, true, reason.TokenReplayed, ""), &e)
	if e["code"] != "auth_failed" || e["message"] != "authentication failed" {
		t.Fatalf("token problems must read auth_failed: %v", e)
	}
}
