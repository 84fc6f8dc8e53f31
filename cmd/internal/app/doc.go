// Package app assembles a running Portcullis gateway from its config: it
// takes the data-dir lock, binds the listeners, builds every component
// (audit trail, alert engine, token source, ban pipeline, feeds, gateway,
// admin API, watchdog) in dependency order, reloads them from the config
// file on SIGHUP or POST /v1/reload, drains on SIGTERM and closes them in
// reverse order. Every component has the same life: built from the config,
// started, reloaded with the keys that changed, closed. The command
// packages only parse flags and call Serve; `config check` builds what
// serve builds from the same functions (Check).
//
// app imports no command package: it sits under the commands and above
// gateway, policy, audit and alerting.
package app
