package metrics_test

import (
	"testing"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/metrics"
)

// hotEvents are events the event loops emit most: every one must cross
// the metrics sink without allocating.
var hotEvents = []audit.Event{
	{Event: audit.KindConnOpen, Stage: audit.StageHandshake, Proto: "portcullis.v1"},
	{Event: audit.KindConnClose, Stage: audit.StageClose, Proto: "wamp.2.json", Reason: reason.ClientClosed},
	{Event: audit.KindMessageRejected, Stage: audit.StageMessage, Reason: reason.MsgRate},
	{Event: audit.KindAuthFailed, Stage: audit.StageMessage, Reason: reason.TokenReplayed},
	{Event: audit.KindConnRejected, Stage: audit.StageAccept, Reason: reason.ConnRate},
	{Event: audit.KindBan, Stage: audit.StageSystem, Actor: "auto", Reason: reason.TokenReplayed},
}

func TestHotPathAllocatesNothing(t *testing.T) {
	m := newMetrics(t, metrics.Options{})
	s := m.Wrap(audit.Discard{})
	var sink audit.Sink = s // as the gateway holds it: behind the interface
	msgs := m.Messages()
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"Sink.Emit", func() {
			for i := range hotEvents {
				sink.Emit(hotEvents[i])
			}
		}},
		{"Messages.Inc", func() { msgs.Inc(metrics.ProtocolWAMP1, metrics.OpPublish) }},
		{"ObservePublish", func() { m.ObservePublish(750 * time.Microsecond) }},
	} {
		if n := testing.AllocsPerRun(1000, c.f); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", c.name, n)
		}
	}
}

func BenchmarkSinkEmit(b *testing.B) {
	m := newMetrics(b, metrics.Options{})
	var sink audit.Sink = m.Wrap(audit.Discard{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			sink.Emit(hotEvents[i%len(hotEvents)])
			i++
		}
	})
}

func BenchmarkMessagesInc(b *testing.B) {
	m := newMetrics(b, metrics.Options{})
	msgs := m.Messages()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			msgs.Inc(metrics.ProtocolNative, metrics.OpSubscribe)
		}
	})
}
