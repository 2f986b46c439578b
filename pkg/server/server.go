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
	"sync"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	pairv1 "github.com/switchboard-rt/switchboard/gen/switchboard/pair/v1"
	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/pkg/certs"
	"github.com/switchboard-rt/switchboard/pkg/cluster"
	"github.com/switchboard-rt/switchboard/pkg/control"
	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/identity"
	"github.com/switchboard-rt/switchboard/pkg/metrics"
	"github.com/switchboard-rt/switchboard/pkg/pair"
	"github.com/switchboard-rt/switchboard/pkg/wsedge"
	"github.com/switchboard-rt/switchboard/web"
)

// Config configures a node. The zero value listens on the contract's
// default addresses.
type Config struct {
	// HTTPAddr is where browsers connect (/ws, /client.js, /client.mjs,
	// /client.d.ts) and probes look (/healthz, /readyz, /metrics). Default: ":8080".
	HTTPAddr string
	// GRPCAddr is where web servers call the API. Default: ":9090" with an
	// APIToken, "127.0.0.1:9090" without one.
	GRPCAddr string
	// APIToken, when set, must be presented by every gRPC caller as
	// "authorization: Bearer <token>"; health and reflection stay open.
	APIToken string
	// TokenSecret is the secret the site's web servers sign browsers'
	// identity tokens with (HS256); a browser that connects with a valid
	// one (GET /ws?token=) counts as the token's subject. Default: unset,
	// every token is refused (401). Whoever knows it can sign in as anyone.
	TokenSecret string
	// RequireToken refuses browsers without a valid identity token (401).
	// Default: false: anonymous browsers count by their ?visitor= id, or
	// each connection as a visitor of its own. It needs TokenSecret.
	RequireToken bool
	// Insecure allows a GRPCAddr other than loopback without an APIToken,
	// letting anyone who reaches the port emit to every browser.
	Insecure bool
	// AllowedOrigins lists browser origins allowed besides the request's
	// own host; see wsedge.Config.AllowedOrigins. Default: same host only.
	AllowedOrigins []string
	// KeepAlive is the longest a vanished browser keeps counting. Default:
	// 20s.
	KeepAlive time.Duration
	// ShutdownTimeout bounds a graceful shutdown. Browsers get up to 3/4
	// of it to finish their close handshake and in-flight gRPC calls up to
	// 9/10 of it; whatever still runs then is cut off. Default: 10s.
	ShutdownTimeout time.Duration
	// DrainSpread is the window over which browsers are closed on shutdown
	// so they do not all reconnect at once. Default: 1s; it is capped at
	// half of ShutdownTimeout.
	DrainSpread time.Duration
	// MaxDataBytes bounds one message's data as JSON. Default: 64 KiB.
	MaxDataBytes int
	// Limits bounds what browsers and callers may take; see Limits.
	Limits Limits
	// PrimaryAddr, when set, makes this node the standby of the primary
	// whose gRPC API listens there: it serves only while it cannot see the
	// primary's gRPC health SERVING, and hands its browsers back when it
	// can (see the state machine in standby.go). Default: unset, a
	// primary. Exactly one node may name the primary; a node naming
	// itself is refused.
	PrimaryAddr string
	// StandbyWait, on a primary with a standby, is how long the primary
	// waits at start for its standby to hand over the message log before
	// it serves alone. A primary that comes back after a crash then
	// continues the log its standby kept meanwhile, and browsers it gets
	// back resume without a gap. Meanwhile it is not ready and refuses
	// browsers and emits, so the proxy keeps them on the standby. The
	// standby connects within about a second. Default: 0, no wait: a node
	// without a standby.
	StandbyWait time.Duration
	// HandBackSpread is the window over which a standby that sees its
	// primary again closes its browsers (1012), at random times, so that
	// they do not all reconnect to the primary at once. Default: 3s.
	// Longer spares the primary; meanwhile both nodes count some browsers.
	HandBackSpread time.Duration
	// Cluster, with URLs set, makes this node a member of a cluster over
	// NATS (see package cluster): every member active, sharing one message
	// log and exact counts. Its history bounds are the hub's. Default: no
	// URLs, one node or a pair. It excludes PrimaryAddr.
	Cluster cluster.Config
	// Hub tunes the hub; its Logger defaults to Logger.
	Hub hub.Config
	// TLS serves the listeners over TLS; see TLSConfig. Default: plain
	// text.
	TLS TLSConfig
	// AdminAddr, when set, is where an admin listener serves the
	// operator's page (/, /state.json; see package dashboard), pprof
	// (/debug/pprof/) and /metrics. Default: unset, no admin listener.
	// pprof reveals the process's internals and can cost CPU: bind it to
	// loopback or a private network.
	AdminAddr string
	// PrivateMetrics serves /metrics on the admin listener only: the HTTP
	// listener's answers 404. /metrics tells whoever reads it the Go
	// version, the counts, the uptime and the refusals. Default: false,
	// /metrics on both, the HTTP listener's gathered at most five times a
	// second, bursts of ten.
	PrivateMetrics bool
	// Logger receives the node's logs. Default: slog.Default().
	Logger *slog.Logger
}

// Server is one Switchboard node with its listeners bound.
type Server struct {
	cfg       Config
	log       *slog.Logger
	hub       *hub.Hub
	httpLn    net.Listener
	grpcLn    net.Listener
	httpConns *connLimiter // the HTTP listener's connections, under TLS if any
	grpcConns *connLimiter
	httpSrv   *http.Server
	grpcSrv   *grpc.Server
	health    *healthService
	edge      *wsedge.Handler
	api       *control.Service
	ready     atomic.Bool
	state     atomic.Int32    // stateActive, a standby's stateUnknown or statePassive, a primary's stateSyncing, a member's stateJoining
	standby   *standby        // nil for a primary
	pair      *pair.Service   // the log service of a primary; nil for a standby and in a cluster
	member    *cluster.Member // nil outside a cluster
	started   time.Time

	rejected       map[string]*atomic.Int64 // by the limits in nodeLimits
	reg            *prometheus.Registry
	metrics        *metrics.Metrics
	grpcMetrics    *grpcprom.ServerMetrics
	metricsHandler http.Handler
	publicMetrics  *metricsCache
	httpCerts      *certs.Store // nil without TLS
	grpcCerts      *certs.Store // nil without TLS; may be httpCerts
	adminLn        net.Listener // nil without AdminAddr
}

// ErrInsecure is returned by New for a GRPCAddr beyond loopback without an
// APIToken or Insecure.
var ErrInsecure = errors.New("refusing to serve the gRPC API beyond loopback without an API token: set SWITCHBOARD_API_TOKEN, require client certificates (SWITCHBOARD_GRPC_CLIENT_CA), bind SWITCHBOARD_GRPC_ADDR to 127.0.0.1, or set SWITCHBOARD_INSECURE=true")

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
		if cfg.APIToken != "" || cfg.TLS.mutual() {
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
	if cfg.HandBackSpread <= 0 {
		cfg.HandBackSpread = 3 * time.Second
	}
	if cfg.Hub.Logger == nil {
		cfg.Hub.Logger = cfg.Logger
	}
	if err := cfg.TLS.check(cfg.PrimaryAddr); err != nil {
		return nil, err
	}
	// Client certificates authenticate callers as a token does.
	if cfg.APIToken == "" && !cfg.TLS.mutual() {
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

	s := &Server{cfg: cfg, log: cfg.Logger, started: time.Now(), rejected: newRejections()}
	if cfg.Hub.OnOverBudget == nil {
		cfg.Hub.OnOverBudget = func() { s.countRejection(hub.LimitQueuedBytes) }
	}
	if len(cfg.Cluster.URLs) > 0 {
		if err := s.joinCluster(); err != nil {
			return nil, err
		}
		cfg.Hub.Broker, cfg.Hub.Sequencer = s.member, s.member
	}
	if s.hub, err = hub.New(cfg.Hub); err != nil {
		if s.member != nil {
			s.member.Close()
		}
		return nil, fmt.Errorf("failed to start hub: %w", err)
	}
	defer func() {
		if err != nil {
			s.closeListeners()
			s.hub.Close()
		}
	}()
	if s.member != nil {
		s.member.Start(s.hub)
		s.state.Store(stateJoining)
	}
	s.initMetrics()
	if err = s.loadCerts(); err != nil {
		return nil, err
	}
	if s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("failed to listen for HTTP on %s: %w", cfg.HTTPAddr, err)
	}
	s.httpConns = s.limitHTTP(s.httpLn)
	s.httpLn = s.tlsListener(s.httpConns)
	if s.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("failed to listen for gRPC on %s: %w", cfg.GRPCAddr, err)
	}
	s.grpcConns = s.limitGRPC(s.grpcLn)
	s.grpcLn = s.grpcConns
	if cfg.AdminAddr != "" {
		if s.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			return nil, fmt.Errorf("failed to listen for the admin listener on %s: %w", cfg.AdminAddr, err)
		}
	}

	if cfg.PrimaryAddr != "" {
		if cfg.PrimaryAddr == cfg.GRPCAddr || cfg.PrimaryAddr == s.GRPCAddr() {
			return nil, fmt.Errorf("invalid primary address %s: it is this node's own gRPC address", cfg.PrimaryAddr)
		}
		if s.standby, err = newStandby(s); err != nil {
			return nil, fmt.Errorf("failed to set up the watch on primary %s: %w", cfg.PrimaryAddr, err)
		}
		// Until the primary answers, take nobody: it may be serving.
		s.state.Store(stateUnknown)
		s.hub.Pause()
	}

	s.health = newHealthService()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.SetServingStatus(switchboardv1.SwitchboardService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	l := cfg.Limits
	guard := s.guard()
	s.grpcConns.admits = guard.admits
	s.grpcSrv = grpc.NewServer(append(s.grpcOptions(),
		grpc.InTapHandle(guard.tap),
		grpc.StatsHandler(guard),
		grpc.MaxRecvMsgSize(maxRecvMsgSize(cfg.MaxDataBytes)),
		grpc.ConnectionTimeout(l.handshakeTimeout()),
		grpc.MaxConcurrentStreams(uint32(max(1, l.maxGRPCStreams()))),
		grpc.MaxHeaderListSize(uint32(max(1024, l.maxHeaderBytes()))),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: l.idleTimeout()}),
	)...)
	s.api = control.New(s.controlLimits(control.Config{Hub: s.hub, MaxDataBytes: cfg.MaxDataBytes}))
	switchboardv1.RegisterSwitchboardServiceServer(s.grpcSrv, s.api)
	healthpb.RegisterHealthServer(s.grpcSrv, s.health)
	if s.standby == nil && s.member == nil {
		s.pair = pair.NewService(s.hub, s.log)
		pairv1.RegisterPairServiceServer(s.grpcSrv, s.pair)
	} else if cfg.StandbyWait > 0 {
		return nil, errors.New("a standby does not wait for a standby: set SWITCHBOARD_STANDBY_WAIT on the primary only")
	}
	reflection.Register(s.grpcSrv)
	s.grpcMetrics.InitializeMetrics(s.grpcSrv)

	mux := http.NewServeMux()
	s.edge = wsedge.New(s.edgeLimits(wsedge.Config{
		Hub:            s.hub,
		Logger:         s.log,
		AllowedOrigins: cfg.AllowedOrigins,
		KeepAlive:      cfg.KeepAlive,
		Identity:       identity.NewVerifier([]byte(cfg.TokenSecret)),
		RequireToken:   cfg.RequireToken,
	}))
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		switch s.state.Load() {
		case stateActive:
			s.edge.ServeHTTP(w, r)
		case stateSyncing:
			http.Error(w, "starting: taking the message log from the standby", http.StatusServiceUnavailable)
		case stateJoining:
			http.Error(w, "not ready: "+s.clusterReason()+"; connect to another node", http.StatusServiceUnavailable)
		default:
			http.Error(w, "standby: primary is serving", http.StatusServiceUnavailable)
		}
	})
	mux.Handle("GET /client.js", web.ClientHandler())
	mux.Handle("GET /client.mjs", web.ModuleHandler())
	mux.Handle("GET /client.d.ts", web.TypesHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() || s.hub.Draining() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		switch s.state.Load() {
		case statePassive:
			http.Error(w, "standby: primary is serving", http.StatusServiceUnavailable)
			return
		case stateUnknown:
			http.Error(w, "standby: checking the primary", http.StatusServiceUnavailable)
			return
		case stateSyncing:
			http.Error(w, "starting: taking the message log from the standby", http.StatusServiceUnavailable)
			return
		case stateJoining:
			http.Error(w, "not ready: "+s.clusterReason(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /metrics", s.servePublicMetrics)
	s.httpSrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: l.handshakeTimeout(),
		IdleTimeout:       l.idleTimeout(),
		MaxHeaderBytes:    max(1024, l.maxHeaderBytes()),
		// An upgraded connection leaves the HTTP listener's count: the
		// edge counts it from then on.
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateHijacked {
				handOff(c)
			}
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.checkFileLimit()
	return s, nil
}

// maxRecvMsgSize leaves room around the data limit for the request's other
// fields and protobuf's own encoding of the value (up to four times the
// JSON's size, for lists of small numbers). Data past it fails with the
// transport's RESOURCE_EXHAUSTED before it is decoded, data within it and
// over the limit with the contract's INVALID_ARGUMENT.
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
// DrainSpread, WatchCount and health Watch streams end with UNAVAILABLE,
// in-flight gRPC calls finish, and Run returns within ShutdownTimeout,
// with no browser connection left open.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- s.grpcSrv.Serve(s.grpcLn) }()
	go func() { errc <- s.httpSrv.Serve(s.httpLn) }()
	defer s.serveAdmin()() // until shutdown is over
	s.ready.Store(true)
	var watching sync.WaitGroup
	watchCtx, stopWatching := context.WithCancel(context.Background())
	defer stopWatching()
	s.watchCerts(watchCtx, &watching)
	if s.standby != nil {
		// The standby's health follows its state, set by the watcher.
		watching.Add(1)
		go func() {
			defer watching.Done()
			s.standby.run(watchCtx)
		}()
		s.log.Info("switchboard serving as a standby", "http_addr", s.HTTPAddr(), "grpc_addr", s.GRPCAddr(), "node", s.hub.Node(), "auth", s.cfg.APIToken != "", "primary", s.cfg.PrimaryAddr)
	} else if s.member != nil {
		watching.Add(1)
		go func() {
			defer watching.Done()
			s.followCluster(watchCtx)
		}()
		s.log.Info("switchboard serving as a cluster member", "http_addr", s.HTTPAddr(), "grpc_addr", s.GRPCAddr(), "node", s.hub.Node(), "auth", s.cfg.APIToken != "", "cluster", s.cfg.Cluster.Name, "member", s.cfg.Cluster.Member)
	} else {
		if s.cfg.StandbyWait > 0 {
			s.takeStandbyLog(ctx)
		}
		s.setHealth(healthpb.HealthCheckResponse_SERVING)
		pos := s.hub.Position()
		s.log.Info("switchboard serving", "http_addr", s.HTTPAddr(), "grpc_addr", s.GRPCAddr(), "node", s.hub.Node(), "auth", s.cfg.APIToken != "", "epoch", pos.Epoch, "offset", pos.Offset)
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		s.log.Error("listener failed", "err", serveErr)
	}
	// A standby stops switching before it shuts down.
	stopWatching()
	watching.Wait()
	return errors.Join(serveErr, s.shutdown())
}

// takeStandbyLog holds a starting primary back, up to StandbyWait, until
// its standby has handed over the message log (see pair.Service).
func (s *Server) takeStandbyLog(ctx context.Context) {
	s.state.Store(stateSyncing)
	s.hub.Pause()
	s.log.Info("waiting for the standby's message log before serving", "wait", s.cfg.StandbyWait)
	if !s.pair.WaitForStandby(ctx, s.cfg.StandbyWait) {
		s.log.Info("no standby handed over a log: serving with a new one", "waited", s.cfg.StandbyWait)
	}
	s.hub.Resume()
	s.state.Store(stateActive)
}

// setHealth sets the gRPC health of the node (service "") and of its API.
func (s *Server) setHealth(st healthpb.HealthCheckResponse_ServingStatus) {
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(switchboardv1.SwitchboardService_ServiceDesc.ServiceName, st)
}

// shutdown stops the node within ShutdownTimeout. Browsers get up to 3/4
// of it to say goodbye, in-flight gRPC calls up to 9/10 of it, and what is
// still running then is cut off, so that Run returns in time whatever the
// peers do.
func (s *Server) shutdown() error {
	start := time.Now()
	timeout := s.cfg.ShutdownTimeout
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s.log.Info("shutting down", "browsers", s.hub.Count(""), "deadline", timeout)

	// Probes and standbys first learn that this node is going away.
	s.ready.Store(false)
	s.health.Shutdown()

	// Browsers are told to reconnect elsewhere, spread over DrainSpread;
	// new upgrades get 503 and WatchCount streams end with UNAVAILABLE.
	drainCtx, cancelDrain := context.WithDeadline(ctx, start.Add(timeout*3/4))
	err := s.hub.Drain(drainCtx, hub.ReasonShutdown, s.cfg.DrainSpread)
	cancelDrain()
	if err != nil {
		s.log.Warn("browsers still closing at the drain deadline; cutting them off", "err", err)
		s.edge.Close()
	}

	// In-flight calls finish; health Watch streams and a standby's log
	// session end, since GracefulStop would wait for them forever.
	s.health.stop()
	if s.pair != nil {
		s.pair.Stop()
	}
	grpcCtx, cancelGRPC := context.WithDeadline(ctx, start.Add(timeout*9/10))
	defer cancelGRPC()
	stopped := make(chan struct{})
	go func() {
		s.grpcSrv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-grpcCtx.Done():
		s.log.Warn("gRPC calls still running at the deadline; cutting them off")
		s.grpcSrv.Stop()
		<-stopped
	}

	if err := s.httpSrv.Shutdown(ctx); err != nil {
		s.log.Warn("HTTP requests still running at the deadline; cutting them off", "err", err)
		s.httpSrv.Close()
	}
	// No browser connection outlives Run.
	s.edge.Close()
	err = s.hub.Close()
	s.log.Info("shut down", "took", time.Since(start).Round(time.Millisecond))
	if err != nil {
		return fmt.Errorf("failed to close the hub: %w", err)
	}
	return nil
}

func (s *Server) closeListeners() {
	for _, ln := range []net.Listener{s.httpLn, s.grpcLn, s.adminLn} {
		if ln != nil {
			ln.Close()
		}
	}
}
