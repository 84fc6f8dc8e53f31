package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Descriptions of the families the collector exports (docs/METRICS.md).
var (
	descConnections = prometheus.NewDesc("portcullis_connections",
		"Open WebSocket connections (upgraded), by protocol.", []string{"protocol"}, nil)
	descConnectionsTotal = prometheus.NewDesc("portcullis_connections_total",
		"WebSocket connections opened (conn_open events), by protocol.", []string{"protocol"}, nil)
	descRefusals = prometheus.NewDesc("portcullis_refusals_total",
		"Refusals (conn_rejected, message_rejected, auth_failed, subscribe_denied events), by stage and reason.",
		[]string{"stage", "reason"}, nil)
	descMessages = prometheus.NewDesc("portcullis_messages_total",
		"Client messages handled, by protocol and op.", []string{"protocol", "op"}, nil)
	descBansTotal = prometheus.NewDesc("portcullis_bans_total",
		"Bans created (ban events), by source: auto (strikes) or manual (admin API, CLI).", []string{"source"}, nil)
	descTokens = prometheus.NewDesc("portcullis_tokens_total",
		"Client token redemptions, by result: ok, or the reason it was refused.", []string{"result"}, nil)
	descAuditEvents = prometheus.NewDesc("portcullis_audit_events_total",
		"Audit events emitted (before folding into summaries), by event kind.", []string{"event"}, nil)
	descAlerts = prometheus.NewDesc("portcullis_alerts_total",
		"Alert decisions (alert_sent, alert_failed events), by result.", []string{"result"}, nil)

	descSockets = prometheus.NewDesc("portcullis_sockets",
		"Open client sockets, handshakes in progress included.", nil, nil)
	descAccepted = prometheus.NewDesc("portcullis_accepted_total",
		"Client sockets accepted.", nil, nil)
	descSubscriptions = prometheus.NewDesc("portcullis_subscriptions",
		"Subscriptions held.", nil, nil)
	descTopics = prometheus.NewDesc("portcullis_topics",
		"Topics with at least one subscriber, summed over the event loops.", nil, nil)
	descPublications = prometheus.NewDesc("portcullis_publications_total",
		"Publications posted to the event loops.", nil, nil)
	descDeliveries = prometheus.NewDesc("portcullis_deliveries_total",
		"Frames queued to subscribers.", nil, nil)
	descSlowConsumers = prometheus.NewDesc("portcullis_slow_consumers_total",
		"Connections closed as slow consumers.", nil, nil)
	descInboundHeld = prometheus.NewDesc("portcullis_inbound_held_bytes",
		"Bytes unfinished client messages hold against limits.inbound_buffer_total.", nil, nil)
	descLoopStall = prometheus.NewDesc("portcullis_loop_stall_max_seconds",
		"The longest an event loop spent on one batch of work since start, in seconds.", nil, nil)
	descBans = prometheus.NewDesc("portcullis_bans",
		"Bans held.", nil, nil)
	descAuditDropped = prometheus.NewDesc("portcullis_audit_dropped_total",
		"Audit events lost: the queue was full or the disk refused writes.", nil, nil)
	descLoopTurn = prometheus.NewDesc("portcullis_loop_turn_seconds",
		"Duration of the event loops' turns that did work (events, tasks, timers), in seconds.", nil, nil)
	descSyscalls = prometheus.NewDesc("portcullis_syscalls_total",
		"System calls made by the event loops (eventfd_write: wake-ups posted to them), by call.", []string{"call"}, nil)
)

// collector exports the counters and the State at scrape time. Label text
// is made here, never when counting.
type collector struct{ m *Metrics }

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnections, descConnectionsTotal, descRefusals, descMessages,
		descBansTotal, descTokens, descAuditEvents, descAlerts, descSockets, descAccepted, descSubscriptions,
		descTopics, descPublications, descDeliveries, descSlowConsumers, descInboundHeld, descLoopStall,
		descBans, descAuditDropped, descLoopTurn, descSyscalls} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. Small fixed label sets (protocols,
// ban sources, event kinds, token reasons) are always exported, zeros
// included, so that rate() sees the first increase; the large cross
// products (stage × reason, protocol × op) and alert decisions appear once
// counted.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	k := &c.m.c
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	for p := range numProtocols {
		opened, closed := k.opened[p].Load(), k.closed[p].Load()
		counter(descConnectionsTotal, opened, p.String())
		// Read apart, a close may be counted whose open was not yet:
		// never export a negative gauge.
		open := float64(0)
		if opened > closed {
			open = float64(opened - closed)
		}
		gauge(descConnections, open, p.String())
	}
	for s := range numStages {
		for r := range numReasons {
			if v := k.refusals[s][r].Load(); v > 0 {
				counter(descRefusals, v, stageNames[s], reason.Reason(r).String())
			}
		}
	}
	for p := range numProtocols {
		for o := range numOps {
			if v := c.m.messages.n[p][o].Load(); v > 0 {
				counter(descMessages, v, p.String(), o.String())
			}
		}
	}
	for src, name := range banSourceNames {
		counter(descBansTotal, k.bans[src].Load(), name)
	}
	counter(descTokens, k.authOK.Load(), "ok")
	for r := range numReasons {
		if v := k.authFailed[r].Load(); v > 0 || reason.Reason(r).IsAuth() {
			counter(descTokens, v, reason.Reason(r).String())
		}
	}
	for i := 1; i < numKinds; i++ {
		if name := audit.Kind(i).String(); name != "" {
			counter(descAuditEvents, k.events[i].Load(), name)
		}
	}
	for r := range numReasons {
		if v := k.alerts[r].Load(); v > 0 {
			counter(descAlerts, v, reason.Reason(r).String())
		}
	}

	var st State
	if c.m.state != nil {
		st = c.m.state()
	}
	gauge(descSockets, float64(st.Sockets))
	counter(descAccepted, st.Accepted)
	gauge(descSubscriptions, float64(st.Subscriptions))
	gauge(descTopics, float64(st.Topics))
	counter(descPublications, st.Published)
	counter(descDeliveries, st.Delivered)
	counter(descSlowConsumers, st.SlowConsumers)
	gauge(descInboundHeld, float64(st.InboundHeldBytes))
	gauge(descLoopStall, st.MaxLoopStall.Seconds())
	gauge(descBans, float64(st.Bans))
	counter(descAuditDropped, st.AuditDropped)
	if h := st.LoopTurns; len(h.Cumulative) == len(h.Bounds)+1 {
		buckets := make(map[float64]uint64, len(h.Bounds))
		for i, b := range h.Bounds {
			buckets[b.Seconds()] = h.Cumulative[i]
		}
		ch <- prometheus.MustNewConstHistogram(descLoopTurn, h.Cumulative[len(h.Bounds)], h.Sum.Seconds(), buckets)
	}
	for _, sc := range st.Syscalls {
		counter(descSyscalls, sc.Count, sc.Call)
	}
}
