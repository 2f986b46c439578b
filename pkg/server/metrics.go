package server

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/switchboard-rt/switchboard/internal/ratelimit"
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
		gauge("switchboard_visitors", "Distinct visitors among the open browser connections in the cluster.",
			func() float64 { return float64(s.hub.Visitors("")) }),
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
	s.metricsHandler = promhttp.HandlerFor(withoutHostNetwork{reg}, promhttp.HandlerOpts{
		ErrorLog:          promLogger{s},
		Registry:          reg, // promhttp_metric_handler_errors_total
		EnableOpenMetrics: false,
	})
	s.publicMetrics = &metricsCache{h: s.metricsHandler, rate: 5, burst: 10}
}

// withoutHostNetwork leaves out the process collector's network counters:
// they count the traffic of the whole network namespace, not the node's,
// which is no business of whoever reads /metrics.
type withoutHostNetwork struct{ prometheus.Gatherer }

func (g withoutHostNetwork) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := g.Gatherer.Gather()
	return slices.DeleteFunc(mfs, func(mf *dto.MetricFamily) bool {
		return strings.HasPrefix(mf.GetName(), "process_network_")
	}), err
}

// metricsCache answers the public /metrics: anyone can reach the public
// listener, and a scrape costs far more than a probe, so past a few
// gathers a second (rate, bursts of burst) scrapes get the last one
// rendered for their format and encoding. Scrapes that arrive while one
// renders wait for it.
type metricsCache struct {
	h     http.Handler
	rate  float64
	burst int

	mu      sync.Mutex
	gathers ratelimit.Bucket
	started bool
	entries [4]cachedScrape // by metricsVariant
}

type cachedScrape struct {
	code   int
	header http.Header
	body   []byte
}

// metricsVariant is the rendering a request asks for: protobuf or text,
// gzipped or not; anything else in its headers is ignored.
func metricsVariant(r *http.Request) (i int, accept, encoding string) {
	accept, encoding = "text/plain;version=0.0.4", "identity"
	if a := r.Header.Get("Accept"); strings.Contains(a, "application/vnd.google.protobuf") {
		i, accept = 1, a
	}
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		i, encoding = i+2, "gzip"
	}
	return i, accept, encoding
}

func (c *metricsCache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i, accept, encoding := metricsVariant(r)
	now := time.Now()
	c.mu.Lock()
	if !c.started {
		c.gathers, c.started = ratelimit.NewBucket(c.rate, c.burst, now), true
	}
	e := &c.entries[i]
	if e.header == nil || c.gathers.Allow(now) {
		req := httptest.NewRequestWithContext(r.Context(), http.MethodGet, "/metrics", nil)
		req.Header.Set("Accept", accept)
		req.Header.Set("Accept-Encoding", encoding)
		rec := httptest.NewRecorder()
		c.h.ServeHTTP(rec, req)
		*e = cachedScrape{code: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	}
	code, header, body := e.code, e.header, e.body
	c.mu.Unlock()
	maps.Copy(w.Header(), header)
	w.WriteHeader(code)
	w.Write(body)
}

// Metrics returns the counters the node's transports increment, such as
// its limit rejections.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// Registry returns the node's Prometheus registry, served on /metrics.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// serveMetrics serves the registry in the Prometheus text format, fresh:
// the admin listener's /metrics.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	s.metricsHandler.ServeHTTP(w, r)
}

// servePublicMetrics serves the HTTP listener's /metrics: the registry
// gathered at most five times a second (see metricsCache), or 404 with
// PrivateMetrics.
func (s *Server) servePublicMetrics(w http.ResponseWriter, r *http.Request) {
	if s.cfg.PrivateMetrics {
		http.Error(w, "metrics are served on the admin listener only", http.StatusNotFound)
		return
	}
	s.publicMetrics.ServeHTTP(w, r)
}

// promLogger logs the errors of a scrape.
type promLogger struct{ s *Server }

func (l promLogger) Println(v ...any) { l.s.log.Error("failed to serve metrics", "err", v) }
