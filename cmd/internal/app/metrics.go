//go:build linux

package app

import (
	"time"

	"github.com/portcullis-gw/portcullis/gateway/metrics"
)

// metricsState is what GET /metrics reads of the running parts at scrape
// time. The admin API serves only once every part is built.
func (a *App) metricsState() metrics.State {
	st := a.gw.srv.Stats()
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
	}
}
