package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboard-rt/switchboard/pkg/metrics"
)

func TestReject(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.Reject("connections_per_ip")
	m.Reject("connections_per_ip")
	m.Reject("emit_rate")
	want := `
# HELP switchboard_limit_rejections_total Requests, connections or frames refused by a limit, by limit.
# TYPE switchboard_limit_rejections_total counter
switchboard_limit_rejections_total{limit="connections_per_ip"} 2
switchboard_limit_rejections_total{limit="emit_rate"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "switchboard_limit_rejections_total"); err != nil {
		t.Fatal(err)
	}
}

func TestNilCountsNothing(t *testing.T) {
	t.Parallel()
	var m *metrics.Metrics
	m.Reject("anything") // must not panic
}

func TestRegistriesAreSeparate(t *testing.T) {
	t.Parallel()
	a, b := prometheus.NewRegistry(), prometheus.NewRegistry()
	ma, _ := metrics.New(a), metrics.New(b)
	ma.Reject("x")
	if got := testutil.ToFloat64(ma.LimitRejections.WithLabelValues("x")); got != 1 {
		t.Fatalf("got %v; want 1", got)
	}
	n, err := testutil.GatherAndCount(b, "switchboard_limit_rejections_total")
	if err != nil || n != 0 {
		t.Fatalf("second registry: got %d series, %v; want 0, nil", n, err)
	}
}
