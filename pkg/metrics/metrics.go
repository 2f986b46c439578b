// Package metrics holds the Prometheus counters that the transports
// increment, registered on a registry the node owns (never the global
// default one, so that many nodes can run in one process, as in tests).
//
// The hub's own counters stay in hub.Stats, read by collectors in
// pkg/server: the hub imports no metrics library.
package metrics

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the counters a node's transports increment. A nil *Metrics
// is valid and counts nothing, so a component built without one (as in
// most tests) needs no check.
type Metrics struct {
	// LimitRejections counts requests, connections and frames refused by
	// a limit, by the limit's name (label "limit"), such as
	// "connections_per_ip" or "emit_rate". Exported as
	// switchboard_limit_rejections_total.
	LimitRejections *prometheus.CounterVec
}

// New returns the counters, registered on reg. It panics if reg already
// holds them, like prometheus.MustRegister: one Metrics per registry.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		LimitRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_limit_rejections_total",
			Help: "Requests, connections or frames refused by a limit, by limit.",
		}, []string{"limit"}),
	}
	reg.MustRegister(m.LimitRejections)
	return m
}

// Reject counts one refusal by the named limit. It is safe on a nil
// *Metrics and for concurrent use.
func (m *Metrics) Reject(limit string) {
	if m == nil {
		return
	}
	m.LimitRejections.WithLabelValues(limit).Inc()
}
