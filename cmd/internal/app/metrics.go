//go:build linux

package app

import (
	"time"

	"github.com/portcullis-gw/portcullis/gateway"
	"github.com/portcullis-gw/portcullis/gateway/metrics"
)

// metricsState is what GET /metrics reads of the running parts at scrape
// time. The admin API serves only once every part is built.
func (a *App) metricsState() metrics.State {
	st := a.gw.srv.Stats()
	turns := metrics.Histogram{Sum: st.LoopTurns.Sum}
	for _, b := range st.LoopTurns.Buckets {
		if b.Le != gateway.InfBound {
			turns.Bounds = append(turns.Bounds, time.Duration(b.Le))
		}
		turns.Cumulative = append(turns.Cumulative, b.Count)
	}
	var calls []metrics.Syscall
	st.Syscalls.Each(func(name string, n uint64) { calls = append(calls, metrics.Syscall{Call: name, Count: n}) })
	return metrics.State{
		Sockets:          st.Connections,
		Accepted:         st.Accepted,
		Subscriptions:    st.Subscriptions,
		Topics:           st.Topics,
		Published:        st.Published,
		Delivered:        st.Delivered,
		SlowConsumers:    st.SlowConsumers,
		InboundHeldBytes: st.InboundHeldBytes,
		MaxLoopStall:     time.Duration(st.MaxLoopStall),
		Bans:             int64(a.pipe.guard.Stats().Bans),
		AuditDropped:     a.trail.w.Stats().Dropped,
		LoopTurns:        turns,
		Syscalls:         calls,
	}
}
