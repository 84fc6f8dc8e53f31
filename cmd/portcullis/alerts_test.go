package main

import (
	"strings"
	"testing"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/gateway/config"
)

// alerting.rules[].event is parsed at load: a known name becomes its
// audit.Kind, an unknown one (a misspelling would otherwise silently never
// match) is a config error naming the key.
func TestAlertRuleEventParsed(t *testing.T) {
	c := config.Alerting{SMTP: config.SMTP{TLS: "starttls"}, Rules: []config.AlertRule{
		{Name: "stalls", Event: "loop_stalled"},
		{Name: "any_critical", MinSeverity: "critical"},
	}}
	out, err := alertConfig(c)
	if err != nil {
		t.Fatalf("valid rules: %v", err)
	}
	if out.Rules[0].Event != audit.KindLoopStalled || out.Rules[1].Event != 0 {
		t.Fatalf("rules %+v", out.Rules)
	}

	c.Rules = append(c.Rules, config.AlertRule{Name: "typo", Event: "event_loop_stalled"})
	_, err = alertConfig(c)
	if err == nil {
		t.Fatal("an unknown event name was accepted")
	}
	if msg := err.Error(); !strings.Contains(msg, "alerting.rules[2].event") || !strings.Contains(msg, `"event_loop_stalled"`) {
		t.Fatalf("error does not name the key and the value: %v", err)
	}
}
