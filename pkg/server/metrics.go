package server

import (
	"net/http"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchboard-rt/switchboard/pkg/metrics"
)

// initMetrics builds the node's own registry (never the global default
// one, so that many nodes can live in one process): the hub's counters,
// read from hub.Stats when scraped, the transports' limit rejections,
// the standard gRPC server metrics, and the Go and process collectors.
// It needs s.hub.
func (s *Server) initMetrics() {
	reg := prometheus.NewRegistry()
	s.reg = reg
	s.metrics = metrics.New(reg)
	s.grpcMetrics = grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	reg.MustRegister(
		s.grpcMetrics,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	st := s.hub.Stats()
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, labels prometheus.Labels, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, f)
	}
	load := func(v interface{ Load() int64 }) func() float64 {
		return func() float64 { return float64(v.Load()) }
	}
	const droppedHelp = "Message frames thrown away, by reason: overflow (the recipient's queue was full and it was dropped as slow) or closed (the recipient was closing)."
	reg.MustRegister(
		gauge("switchboard_connections", "Open browser connections in the cluster.",
			func() float64 { return float64(s.hub.Count("")) }),
		gauge("switchboard_local_connections", "Open browser connections on this node.",
			func() float64 { return float64(s.hub.LocalCount()) }),
		gauge("switchboard_subscriptions", "Channel subscriptions held by this node's browsers.", load(&st.Subscriptions)),
		gauge("switchboard_channels", "Channels with at least one subscriber on this node.", load(&st.Channels)),
		counter("switchboard_messages_emitted_total", "Messages emitted on this node.", nil, load(&st.Emitted)),
		counter("switchboard_frames_delivered_total", "Message frames queued to browsers.", nil, load(&st.Delivered)),
		counter("switchboard_frames_dropped_total", droppedHelp, prometheus.Labels{"reason": "overflow"}, load(&st.DroppedOverflow)),
		counter("switchboard_frames_dropped_total", droppedHelp, prometheus.Labels{"reason": "closed"}, load(&st.DroppedClosed)),
		counter("switchboard_slow_disconnects_total", "Browsers dropped because their send queue overflowed.", nil, load(&st.SlowDisconnects)),
		counter("switchboard_write_failures_total", "Browsers dropped because a write failed or timed out.", nil, load(&st.WriteFailures)),
		gauge("switchboard_active", "1 while the node serves browsers and emits; 0 while a standby is passive or checking its primary.",
			func() float64 {
				if s.state.Load() == stateActive {
					return 1
				}
				return 0
			}),
		gauge("switchboard_standby", "1 when the node is a standby (started with a primary address), 0 for a primary.",
			func() float64 {
				if s.standby != nil {
					return 1
				}
				return 0
			}),
		gauge("switchboard_history_messages", "Messages the log holds for browsers that resume or ask for the last ones.",
			func() float64 { n, _ := s.hub.HistoryStats(); return float64(n) }),
		gauge("switchboard_history_bytes", "Bytes of the message frames the log holds.",
			func() float64 { _, b := s.hub.HistoryStats(); return float64(b) }),
		gauge("switchboard_log_offset", "Offset of the newest message in the log.",
			func() float64 { return float64(s.hub.Position().Offset) }),
		counter("switchboard_resumes_total", "Browsers that reconnected asking to resume, by outcome: recovered (nothing missed) or lost (the log could not answer; the page should reload its state).", prometheus.Labels{"outcome": "recovered"}, load(&st.Recovered)),
		counter("switchboard_resumes_total", "Browsers that reconnected asking to resume, by outcome: recovered (nothing missed) or lost (the log could not answer; the page should reload its state).", prometheus.Labels{"outcome": "lost"}, load(&st.NotRecovered)),
		gauge("switchboard_log_followed", "1 while the pair shares the message log: on a primary, a standby follows it; on a standby, it follows its primary.",
			func() float64 {
				if s.standby != nil && s.standby.link.Following() || s.standby == nil && s.hub.Following() {
					return 1
				}
				return 0
			}),
		counter("switchboard_follower_drops_total", "Times a following standby was dropped for not acknowledging in time; the primary then went on alone.", nil, load(&st.FollowerDrops)),
		gauge("switchboard_cluster_member", "1 when the node is a cluster member (SWITCHBOARD_NATS_URL set), 0 otherwise.",
			func() float64 {
				if s.member != nil {
					return 1
				}
				return 0
			}),
		gauge("switchboard_cluster_ready", "On a cluster member: 1 while NATS is up and the member has caught up with the log, 0 otherwise.",
			func() float64 {
				if s.member == nil {
					return 0
				}
				if st, _ := s.member.State(); st.Ready() {
					return 1
				}
				return 0
			}),
		gauge("switchboard_nodes", "Other nodes whose counts this node adds to its own: a cluster's other members, or the pair's other node.",
			func() float64 { return float64(len(s.hub.RemoteCounts())) }),
		gauge("switchboard_uptime_seconds", "Seconds since the node started.",
			func() float64 { return time.Since(s.started).Seconds() }),
	)
	s.metricsHandler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          promLogger{s},
		Registry:          reg, // promhttp_metric_handler_errors_total
		EnableOpenMetrics: false,
	})
}

// Metrics returns the counters the node's transports increment, such as
// its limit rejections.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// Registry returns the node's Prometheus registry, served on /metrics.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// serveMetrics serves the registry in the Prometheus text format.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	s.metricsHandler.ServeHTTP(w, r)
}

// promLogger logs the errors of a scrape.
type promLogger struct{ s *Server }

func (l promLogger) Println(v ...any) { l.s.log.Error("failed to serve metrics", "err", v) }
