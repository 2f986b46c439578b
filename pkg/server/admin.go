package server

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"
)

// serveAdmin serves the operator's page (/ and /state.json), pprof
// (/debug/pprof/) and the metrics on the admin listener, if there is one,
// and returns a function that stops it.
func (s *Server) serveAdmin() (stop func()) {
	if s.adminLn == nil {
		return func() {}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /metrics", s.serveMetrics)
	stopDashboard := s.startDashboard(mux)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(s.adminLn); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener failed", "err", err)
		}
	}()
	s.log.Info("admin listener serving the operator's page, pprof and metrics", "admin_addr", s.AdminAddr())
	return func() {
		srv.Close()
		<-done
		stopDashboard()
	}
}

// AdminAddr returns the bound address of the admin listener, or "" when
// there is none.
func (s *Server) AdminAddr() string {
	if s.adminLn == nil {
		return ""
	}
	return s.adminLn.Addr().String()
}
