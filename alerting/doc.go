// Package alerting owns the alerts of docs/ALERTS.md: rules over audit
// events, grouping like Alertmanager, inhibition, silences, an hourly cap,
// a durable bbolt outbox, a hardened SMTP notifier and signed webhooks.
//
// It is a pipeline of stages, each in its own file:
//
//	rules.go     events → rule matches (sliding-window thresholds)
//	dispatch.go  matches → groups, flushed after group_wait / group_interval / repeat_interval
//	inhibit.go   groups muted while an "under attack" rule fires
//	silence.go   groups muted by operator silences (persisted)
//	ratecap.go   max_per_hour, with one "N further alerts held back" digest
//	outbox.go    rendered notifications persisted in bbolt before the first attempt, one
//	             per destination (mail, each webhook), each retried with backoff
//	smtp.go      the Notifier that speaks SMTP (go-mail composes, net/smtp transports)
//	webhook.go   the Notifier that POSTs Alertmanager webhook JSON, HMAC-signed
//
// Engine (engine.go) is an audit.Sink: Emit only queues. Rules run on one
// worker goroutine, delivery on another; neither is ever called back from
// Emit. Every decision is reported as an alert_sent or alert_failed audit
// event to the sink given in Options.Audit; alert_* events given to Emit are
// ignored so that the engine never feeds on its own reports.
//
// alerting imports audit and policy/statefile (the bbolt opener, for its
// outbox), nothing else from policy and nothing from gateway or cmd.
package alerting
