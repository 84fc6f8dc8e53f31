// Package metrics exports the gateway's counters in the Prometheus text
// format for GET /metrics on the admin listener (docs/METRICS.md lists every
// family).
//
// Most families are counted from the audit events every refusal, ban,
// token redemption, alert decision and connection already produces: Wrap
// puts a counting Sink in front of the audit sink. What is not an event is
// read at scrape time (a State function: open sockets, deliveries, bans in
// force, the longest loop stall, lost audit events) or counted on its hot
// path through a nil-safe handle (Messages.Inc, Metrics.ObservePublish).
//
// Every hot-path call is allocation-free and takes no lock and no map
// lookup: counters are fixed arrays of atomics indexed by the enums'
// numbers (audit.Kind, reason.Reason, Protocol, Op); label text is made
// only when Prometheus scrapes.
//
// metrics imports only audit, audit/reason and policy/bans from the project
// (bans for the actor of automatic bans), besides the Prometheus client. It
// must never import gateway (the gateway calls into it), cmd or alerting.
package metrics
