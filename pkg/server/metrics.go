package server

import (
	"fmt"
	"net/http"
	"time"
)

// serveMetrics writes the node's counters in the Prometheus text format.
func (s *Server) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	st := s.hub.Stats()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	metric := func(name, typ, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", name, help, name, typ, name, v)
	}
	metric("switchboard_connections", "gauge", "Open browser connections in the cluster.", s.hub.Count(""))
	metric("switchboard_messages_emitted_total", "counter", "Messages emitted on this node.", st.Emitted.Load())
	metric("switchboard_frames_delivered_total", "counter", "Message frames queued to browsers.", st.Delivered.Load())
	metric("switchboard_slow_disconnects_total", "counter", "Browsers dropped because their send queue overflowed.", st.SlowDisconnects.Load())
	metric("switchboard_write_failures_total", "counter", "Browsers dropped because a write failed or timed out.", st.WriteFailures.Load())
	active := int64(0)
	if s.state.Load() == stateActive {
		active = 1
	}
	metric("switchboard_active", "gauge", "1 while the node serves browsers and emits; 0 while a standby is passive.", active)
	metric("switchboard_uptime_seconds", "gauge", "Seconds since the node started.", int64(time.Since(s.started).Seconds()))
}
