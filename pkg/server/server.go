// Package server wires a Switchboard node together: the hub, the HTTP
// listener (WebSocket edge, health, readiness, metrics), the gRPC listener
// (API, health, reflection, interceptors) and the order in which they shut
// down.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/pkg/control"
	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/wsedge"
)

// Config configures a node. The zero value listens on the contract's
// default addresses.
type Config struct {
	// HTTPAddr is where browsers connect (/ws) and probes look (/healthz,
	// /readyz, /metrics). Default: ":8080".
	HTTPAddr string
	// GRPCAddr is where web servers call the API. Default: ":9090" with an
	// APIToken, "127.0.0.1:9090" without one.
	GRPCAddr string
	// APIToken, when set, must be presented by every gRPC caller as
	// "authorization: Bearer <token>"; health and reflection stay open.
	APIToken string
	// Insecure allows a GRPCAddr other than loopback without an APIToken,
	// letting anyone who reaches the port emit to every browser.
	Insecure bool
	// AllowedOrigins lists browser origins allowed besides the request's
	// own host; see wsedge.Config.AllowedOrigins. Default: same host only.
	AllowedOrigins []string
	// KeepAlive is the longest a vanished browser keeps counting. Default:
	// 20s.
	KeepAlive time.Duration
	// ShutdownTimeout bounds a graceful shutdown. Default: 10s.
	ShutdownTimeout time.Duration
	// DrainSpread is the window over which browsers are closed on shutdown
	// so they do not all reconnect at once. Default: 1s; it is capped at
	// half of ShutdownTimeout.
	DrainSpread time.Duration
	// MaxDataBytes bounds one message's data as JSON. Default: 64 KiB.
	MaxDataBytes int
	// Hub tunes the hub; its Logger defaults to Logger.
	Hub hub.Config
	// Logger receives the node's logs. Default: slog.Default().
	Logger *slog.Logger
}

// Server is one Switchboard node with its listeners bound.
type Server struct {
	cfg     Config
	log     *slog.Logger
	hub     *hub.Hub
	httpLn  net.Listener
	grpcLn  net.Listener
	httpSrv *http.Server
	grpcSrv *grpc.Server
	health  *health.Server
	ready   atomic.Bool
	started time.Time
}

// ErrInsecure is returned by New for a GRPCAddr beyond loopback without an
// APIToken or Insecure.
var ErrInsecure = errors.New("refusing to serve the gRPC API beyond loopback without an API token: set SWITCHBOARD_API_TOKEN, bind SWITCHBOARD_GRPC_ADDR to 127.0.0.1, or set SWITCHBOARD_INSECURE=true")

// New checks cfg, builds the node and binds its listeners, so that a bad
// address fails here, before anything is served.
func New(cfg Config) (_ *Server, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = ":8080"
	}
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:9090"
		if cfg.APIToken != "" {
			cfg.GRPCAddr = ":9090"
		}
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.DrainSpread <= 0 {
		cfg.DrainSpread = time.Second
	}
	cfg.DrainSpread = min(cfg.DrainSpread, cfg.ShutdownTimeout/2)
	if cfg.Hub.Logger == nil {
		cfg.Hub.Logger = cfg.Logger
	}
	if cfg.APIToken == "" {
		loopback, err := isLoopback(cfg.GRPCAddr)
		if err != nil {
			return nil, err
		}
		if !loopback {
			if !cfg.Insecure {
				return nil, ErrInsecure
			}
			cfg.Logger.Warn("INSECURE: the gRPC API is open beyond loopback without a token; anyone who reaches it can emit to every browser", "grpc_addr", cfg.GRPCAddr)
		}
	}

	s := &Server{cfg: cfg, log: cfg.Logger, started: time.Now()}
	if s.hub, err = hub.New(cfg.Hub); err != nil {
		return nil, fmt.Errorf("failed to start hub: %w", err)
	}
	defer func() {
		if err != nil {
			s.closeListeners()
			s.hub.Close()
		}
	}()
	if s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("failed to listen for HTTP on %s: %w", cfg.HTTPAddr, err)
	}
	if s.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("failed to listen for gRPC on %s: %w", cfg.GRPCAddr, err)
	}

	s.health = health.NewServer()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.SetServingStatus(switchboardv1.SwitchboardService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	s.grpcSrv = grpc.NewServer(append(serverOptions(s.log, cfg.APIToken), grpc.MaxRecvMsgSize(maxRecvMsgSize(cfg.MaxDataBytes)))...)
	switchboardv1.RegisterSwitchboardServiceServer(s.grpcSrv, control.New(control.Config{Hub: s.hub, MaxDataBytes: cfg.MaxDataBytes}))
	healthpb.RegisterHealthServer(s.grpcSrv, s.health)
	reflection.Register(s.grpcSrv)

	mux := http.NewServeMux()
	mux.Handle("GET /ws", wsedge.New(wsedge.Config{
		Hub:            s.hub,
		Logger:         s.log,
		AllowedOrigins: cfg.AllowedOrigins,
		KeepAlive:      cfg.KeepAlive,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() || s.hub.Draining() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /metrics", s.serveMetrics)
	s.httpSrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// maxRecvMsgSize leaves room around the data limit for the request's other
// fields and protobuf's own encoding of the value.
func maxRecvMsgSize(maxData int) int {
	if maxData <= 0 {
		maxData = control.DefaultMaxDataBytes
	}
	return 4*maxData + 64<<10
}

func isLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("invalid gRPC address %q: %w", addr, err)
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// HTTPAddr returns the bound address of the HTTP listener.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// GRPCAddr returns the bound address of the gRPC listener.
func (s *Server) GRPCAddr() string { return s.grpcLn.Addr().String() }

// Hub returns the node's hub.
func (s *Server) Hub() *hub.Hub { return s.hub }

// Run serves until ctx ends, then shuts down gracefully: readiness and
// gRPC health go NOT_SERVING, browsers are closed with 1001 spread over
// DrainSpread, WatchCount streams end, in-flight gRPC calls finish, and
// Run returns within ShutdownTimeout.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- s.grpcSrv.Serve(s.grpcLn) }()
	go func() { errc <- s.httpSrv.Serve(s.httpLn) }()
	s.ready.Store(true)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(switchboardv1.SwitchboardService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	s.log.Info("switchboard serving", "http_addr", s.HTTPAddr(), "grpc_addr", s.GRPCAddr(), "node", s.hub.Node(), "auth", s.cfg.APIToken != "")

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		s.log.Error("listener failed", "err", serveErr)
	}
	return errors.Join(serveErr, s.shutdown())
}

func (s *Server) shutdown() error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	s.log.Info("shutting down", "browsers", s.hub.Count(""), "deadline", s.cfg.ShutdownTimeout)

	s.ready.Store(false)
	s.health.Shutdown()
	if err := s.hub.Drain(ctx, hub.ReasonShutdown, s.cfg.DrainSpread); err != nil {
		s.log.Warn("browsers still closing at the deadline", "err", err)
	}

	stopped := make(chan struct{})
	go func() {
		s.grpcSrv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.log.Warn("gRPC calls still running at the deadline; cutting them off")
		s.grpcSrv.Stop()
	}
	httpErr := s.httpSrv.Shutdown(ctx)
	if httpErr != nil {
		s.httpSrv.Close()
	}
	err := s.hub.Close()
	s.log.Info("shut down", "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(httpErr, err)
}

func (s *Server) closeListeners() {
	for _, ln := range []net.Listener{s.httpLn, s.grpcLn} {
		if ln != nil {
			ln.Close()
		}
	}
}
