package admin

import (
	"errors"
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// failPublisher is a Publisher whose broker cannot publish.
type failPublisher struct{ calls int }

func (p *failPublisher) Publish(topic string, _ []byte) (int, error) {
	p.calls++
	return 0, errors.New("publish to " + topic + ": broker: peer unreachable")
}

// A publication the broker could not take is answered 503 publish_failed,
// never a count, and audited with the broker's error.
func TestPublishBrokerFailure(t *testing.T) {
	sink, pub := &sjSink{}, &failPublisher{}
	a := New(Options{Key: "k", Publisher: pub, Audit: sink})
	code, out, raw := sjDo(a, "/v1/publish", `{"topic":"news","data":{"a":1}}`)
	if code != 503 || out["error"] != "publish_failed" || strings.Contains(raw, "delivered") || pub.calls != 1 {
		t.Fatalf("%d %s (calls %d)", code, raw, pub.calls)
	}
	ev := sink.events()
	if len(ev) != 1 || ev[0].Event != audit.KindAdmin || ev[0].Reason != reason.PublishFailed || ev[0].Code != 503 ||
		!strings.Contains(ev[0].Detail, "POST /v1/publish: ") || !strings.Contains(ev[0].Detail, "peer unreachable") {
		t.Fatalf("audit %+v", ev)
	}
}

// A publication the broker took is answered with the count it returned.
func TestPublishAnswersQueuedCount(t *testing.T) {
	a, sink, pub, _ := sjAPI(t)
	code, _, raw := sjDo(a, "/v1/publish", `{"topic":"news","data":{"a":1}}`)
	if code != 200 || strings.TrimSpace(raw) != `{"delivered":1}` || len(pub.got) != 1 || pub.got[0] != `news {"a":1}` {
		t.Fatalf("%d %s %q", code, raw, pub.got)
	}
	if ev := sink.events(); len(ev) != 0 {
		t.Fatalf("audit %+v", ev)
	}
}
