package alerting

import (
	"context"
	"encoding/json"
	"time"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
)

// Message is one rendered notification: a mail (Subject, Text, HTML), or
// for a webhook the Alertmanager JSON body (JSON; Subject kept for the
// logs). Subject and bodies may hold attacker-supplied text: the mail
// Notifier must put Subject only into an encoded header and the bodies
// only into the body; the JSON is encoded by encoding/json.
type Message struct {
	ID      string          `json:"id"` // outbox id; unique per delivery
	Subject string          `json:"subject"`
	Text    string          `json:"text,omitempty"`
	HTML    string          `json:"html,omitempty"`
	JSON    json.RawMessage `json:"json,omitempty"`
	Date    time.Time       `json:"date"`
}

// Notifier delivers a message to one destination. retryable says whether a
// later attempt may succeed (SMTP: timeouts, 4xx replies, TLS missing;
// webhook: 5xx, 408, 429, timeouts) or not (SMTP: 5xx replies, refused
// credentials; webhook: other 3xx and 4xx). Notify must return by ctx's
// deadline.
type Notifier interface {
	Notify(ctx context.Context, m Message) (retryable bool, err error)
}

// notification is what flows from dispatch through the filter stages to the
// outbox: a snapshot of one group, or a digest.
type notification struct {
	GroupKey  string
	Rule      string
	Labels    Labels
	Severity  audit.Severity
	Summary   string
	Event     string
	Threshold int
	Window    time.Duration
	First     time.Time
	Last      time.Time
	Count     int64
	Fresh     int64
	Update    int
	Repeat    bool

	TopIPs      []KV
	TopPrefixes []KV
	TopUsers    []KV
	OtherIPs    int64
	Bans        []banAction
	MoreBans    int64
	Samples     []audit.Event

	// Digest: how many notifications the cap held back, and their summaries.
	Held     int64
	HeldList []string
}

// Decision is what the pipeline did with a notification; it is the Reason
// of the alert_sent / alert_failed audit event that reports it.
type Decision uint8

// Decisions.
const (
	Queued    Decision = iota // persisted in the outbox (alert_sent)
	Sent                      // delivered to the SMTP server (alert_sent)
	Inhibited                 // muted while an inhibiting rule fires (alert_sent)
	Silenced                  // muted by a silence (alert_sent)
	Capped                    // held back by max_per_hour (alert_sent)
	Digest                    // the held-back digest was queued (alert_sent)
	Retry                     // an attempt failed, another will follow (alert_failed)
	Refused                   // an attempt failed for good (alert_failed)
	Expired                   // not delivered within the expiry (alert_failed)
	Dropped                   // could not be persisted (alert_failed)
	Elsewhere                 // another node of the cluster sent the group's mail (alert_sent)
)

var decisionReasons = [...]reason.Reason{reason.AlertQueued, reason.AlertSent, reason.AlertInhibited,
	reason.AlertSilenced, reason.AlertCapped, reason.AlertDigest, reason.AlertRetry, reason.AlertRefused,
	reason.AlertExpired, reason.AlertDropped, reason.AlertSentElsewhere}

// Reason is the audit reason that reports d.
func (d Decision) Reason() reason.Reason {
	if int(d) < len(decisionReasons) {
		return decisionReasons[d]
	}
	return reason.Internal
}

// String returns the audit spelling of d.
func (d Decision) String() string {
	if int(d) < len(decisionReasons) {
		return decisionReasons[d].String()
	}
	return "unknown"
}
