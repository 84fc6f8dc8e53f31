package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/portcullis-gw/portcullis/audit"
	"github.com/portcullis-gw/portcullis/audit/reason"
	"github.com/portcullis-gw/portcullis/gateway/metrics"
)

var (
	dashMetric = regexp.MustCompile(`portcullis_[a-z_]+`)
	dashBy     = regexp.MustCompile(`\bby \(([a-z_, ]+)\)`)
)

// dashStrings collects every string value of the decoded JSON v.
func dashStrings(v any, out *[]string) {
	switch x := v.(type) {
	case string:
		*out = append(*out, x)
	case []any:
		for _, e := range x {
			dashStrings(e, out)
		}
	case map[string]any:
		for _, e := range x {
			dashStrings(e, out)
		}
	}
}

// TestGrafanaDashboardQueriesExist holds docs/grafana-dashboard.json to
// the families the gateway exports: every portcullis_ metric a panel or a
// variable queries is a registered family (a histogram's _bucket, _sum and
// _count included), every label it groups by is one of those families'
// labels, and the panels the operators' guide promises are there.
func TestGrafanaDashboardQueriesExist(t *testing.T) {
	raw, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	m := newMetrics(t, metrics.Options{})
	// Count something in the families that export only what they counted,
	// so that their labels show.
	s := m.Wrap(audit.Discard{})
	s.Emit(audit.Event{Event: audit.KindConnRejected, Stage: audit.StageAccept, Reason: reason.Blocked})
	s.Emit(audit.Event{Event: audit.KindAlertSent, Stage: audit.StageSystem, Reason: reason.AlertSent})
	m.Messages().Inc(metrics.ProtocolNative, metrics.OpPing)
	m.ObservePublish(0)
	gathered, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	fams := map[string]*dto.MetricFamily{}
	for _, f := range gathered {
		fams[f.GetName()] = f
	}
	// family is the registered family a queried series name belongs to.
	family := func(name string) *dto.MetricFamily {
		if f := fams[name]; f != nil {
			return f
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if f := fams[strings.TrimSuffix(name, suffix)]; f != nil && strings.HasSuffix(name, suffix) &&
				f.GetType() == dto.MetricType_HISTOGRAM {
				return f
			}
		}
		return nil
	}

	var strs []string
	dashStrings(dash, &strs)
	queried := map[string]bool{}
	for _, q := range strs {
		names := dashMetric.FindAllString(q, -1)
		labels := map[string]bool{"le": true, "instance": true, "job": true}
		for _, n := range names {
			f := family(n)
			if f == nil {
				t.Errorf("the dashboard queries %s, which gateway/metrics does not export: %q", n, q)
				continue
			}
			queried[f.GetName()] = true
			for _, mt := range f.GetMetric() {
				for _, l := range mt.GetLabel() {
					labels[l.GetName()] = true
				}
			}
		}
		if len(names) == 0 {
			continue
		}
		for _, by := range dashBy.FindAllStringSubmatch(q, -1) {
			for _, l := range strings.Split(by[1], ",") {
				if l = strings.TrimSpace(l); !labels[l] {
					t.Errorf("the dashboard groups by %q, a label of none of %v: %q", l, names, q)
				}
			}
		}
	}
	for _, want := range []string{"portcullis_connections", "portcullis_refusals_total", "portcullis_deliveries_total",
		"portcullis_publish_duration_seconds", "portcullis_bans", "portcullis_bans_total",
		"portcullis_audit_dropped_total", "portcullis_alerts_total"} {
		if !queried[want] {
			t.Errorf("the dashboard has no panel on %s", want)
		}
	}
}
