package server

import (
	"maps"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/switchboard-rt/switchboard/internal/lograte"
	"github.com/switchboard-rt/switchboard/internal/ratelimit"
	"github.com/switchboard-rt/switchboard/pkg/control"
	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/wsedge"
)

// Limits bounds what one browser, one address or one caller can take from
// a node. The zero value holds safe defaults; each refusal is answered
// with a documented code and counted by limit (see Server.Rejections).
// The channels one browser may join are bounded by
// Config.Hub.MaxSubscriptions.
type Limits struct {
	// MaxConns bounds the browser connections of the node; past it,
	// upgrades get 503. Default: 100,000; negative: no limit.
	MaxConns int
	// MaxConnsPerIP bounds the browser connections from one client
	// address (an IPv6 one by its /64); past it, upgrades get 429. Default: 1,000; negative: no
	// limit. Browsers behind one NAT share an address.
	MaxConnsPerIP int
	// MaxConnsPerVisitor bounds the browser connections of one visitor
	// (an identity token's subject, or an anonymous id) on the node; past
	// it, upgrades get 429. Default: 100; negative: no limit.
	MaxConnsPerVisitor int
	// TrustedProxies are the networks of the reverse proxies in front of
	// the node, whose X-Forwarded-For is believed when counting
	// connections per address. Default: none, X-Forwarded-For is ignored.
	TrustedProxies []netip.Prefix
	// MaxFrameBytes bounds a frame a browser sends; a larger one closes
	// it with 1009. Default: 4096.
	MaxFrameBytes int64
	// FrameRate and FrameBurst bound the frames a second a browser sends,
	// on average and at once; a browser beyond them is closed with 1008
	// "rate limit exceeded". Default: 20 a second, bursts of 80; negative
	// FrameRate: no limit.
	FrameRate  float64
	FrameBurst int
	// EmitRate and EmitBurst bound EmitMessage calls a second per caller
	// (its token when APIToken is set, its IP address otherwise); past
	// them, RESOURCE_EXHAUSTED. Default: 0, no limit; EmitBurst defaults
	// to one second's worth.
	EmitRate  float64
	EmitBurst int
	// HandshakeTimeout bounds how long an HTTP client may take to send its
	// request headers (the WebSocket upgrade included) and a gRPC client
	// its connection preface, so that slow or silent clients cannot hold
	// connections open. Default: 5s.
	HandshakeTimeout time.Duration

	// MaxHTTPConns bounds the HTTP connections that are not WebSockets:
	// requests, idle keep-alive connections and upgrades in progress
	// (upgraded connections count in MaxConns instead). Past it, a new
	// connection is answered 503 and closed as soon as it is accepted.
	// Default: 10,000; negative: no limit.
	MaxHTTPConns int
	// MaxHTTPConnsPerIP bounds them per client address: the TCP peer's,
	// since nothing is read yet; TrustedProxies are exempt. Past it, 429.
	// Default: 1,000, as many as MaxConnsPerIP lets upgrade at once;
	// negative: no limit.
	MaxHTTPConnsPerIP int
	// MaxGRPCConns bounds the gRPC connections. Past it, the first call on
	// a new connection fails with RESOURCE_EXHAUSTED "too many gRPC
	// connections: retry later" and the connection is closed (with TLS,
	// closed at once). Default: 1,000; negative: no limit.
	MaxGRPCConns int
	// MaxGRPCConnsPerIP bounds the gRPC connections per client address,
	// answered likewise past it; TrustedProxies are exempt. Default: 100;
	// negative: no limit.
	MaxGRPCConnsPerIP int
	// IdleTimeout closes an HTTP keep-alive connection idle this long, and
	// a gRPC connection with no call in progress (with a GOAWAY, after
	// which clients reconnect when they next call). Default: 30s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request headers of an HTTP request (the
	// request gets 431; net/http allows 4 KiB more) and the metadata of a
	// gRPC call (the stream is reset; grpc-go clients refuse to send
	// more, with INTERNAL). Default: 16 KiB.
	MaxHeaderBytes int
	// MaxGRPCStreams bounds the calls in progress on one gRPC connection:
	// past it, a gRPC client holds further calls until one ends. Default:
	// 256.
	MaxGRPCStreams int
	// GRPCRefusalRate and GRPCRefusalBurst bound the gRPC calls a client
	// address may make that are refused for their token or need none
	// (health, reflection), a second on average and at once; past them its
	// connection is closed. TrustedProxies are bounded by connection.
	// Default: 20 a second, bursts of 100.
	GRPCRefusalRate  float64
	GRPCRefusalBurst int
	// SendBuffer is the kernel send buffer of each browser connection
	// (SO_SNDBUF, which Linux doubles for its bookkeeping): what a browser
	// that stops reading can make the kernel hold. Default: 64 KiB;
	// negative: the system's default, which grows up to net.ipv4.tcp_wmem.
	SendBuffer int
}

func (l Limits) handshakeTimeout() time.Duration {
	if l.HandshakeTimeout <= 0 {
		return 5 * time.Second
	}
	return l.HandshakeTimeout
}

func (l Limits) idleTimeout() time.Duration {
	if l.IdleTimeout <= 0 {
		return 30 * time.Second
	}
	return l.IdleTimeout
}

func (l Limits) maxHeaderBytes() int { return orDefault(l.MaxHeaderBytes, 16<<10) }

func (l Limits) maxGRPCStreams() int { return orDefault(l.MaxGRPCStreams, 256) }

// orDefault returns v, or def when v is 0; a negative v means no limit.
func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// The limits the node enforces itself, as named in Rejections (the
// "limit" label of switchboard_limit_rejections_total); the edge's and
// the API's are in wsedge and control.
const (
	// LimitHTTPConns: Limits.MaxHTTPConns; the connection gets 503.
	LimitHTTPConns = "http_connections"
	// LimitHTTPConnsPerIP: Limits.MaxHTTPConnsPerIP; 429.
	LimitHTTPConnsPerIP = "http_connections_per_ip"
	// LimitGRPCConns: Limits.MaxGRPCConns; RESOURCE_EXHAUSTED.
	LimitGRPCConns = "grpc_connections"
	// LimitGRPCConnsPerIP: Limits.MaxGRPCConnsPerIP; RESOURCE_EXHAUSTED.
	LimitGRPCConnsPerIP = "grpc_connections_per_ip"
	// LimitAPIToken: a gRPC call without a valid API token;
	// UNAUTHENTICATED.
	LimitAPIToken = "api_token"
	// LimitGRPCRefusals: an address past Limits.GRPCRefusalRate; the call
	// gets UNAUTHENTICATED if it lacks the token, RESOURCE_EXHAUSTED if it
	// needs none, and the connection is closed; new connections from the
	// address get RESOURCE_EXHAUSTED until the budget refills.
	LimitGRPCRefusals = "grpc_refusals"
)

// limitHTTP bounds the HTTP listener.
func (s *Server) limitHTTP(ln net.Listener) *connLimiter {
	l := s.cfg.Limits
	c := newConnLimiter(ln, s.log, s.countRejection)
	c.max, c.perIP, c.exempt = orDefault(l.MaxHTTPConns, 10_000), orDefault(l.MaxHTTPConnsPerIP, 1_000), l.TrustedProxies
	c.total, c.address = LimitHTTPConns, LimitHTTPConnsPerIP
	if s.httpCerts == nil {
		c.refuse = refuseHTTP
	}
	return c
}

// limitGRPC bounds the gRPC listener; its connections are tracked for
// the grpcGuard.
func (s *Server) limitGRPC(ln net.Listener) *connLimiter {
	l := s.cfg.Limits
	c := newConnLimiter(ln, s.log, s.countRejection)
	c.max, c.perIP, c.exempt = orDefault(l.MaxGRPCConns, 1_000), orDefault(l.MaxGRPCConnsPerIP, 100), l.TrustedProxies
	c.total, c.address = LimitGRPCConns, LimitGRPCConnsPerIP
	c.track = true
	if s.grpcCerts == nil {
		c.refuse = refuseGRPC
	}
	return c
}

// guard returns the gRPC server's tap handle.
func (s *Server) guard() *grpcGuard {
	l := s.cfg.Limits
	rate, burst := l.GRPCRefusalRate, l.GRPCRefusalBurst
	if rate <= 0 {
		rate = 20
	}
	if burst <= 0 {
		burst = 100
	}
	g := &grpcGuard{
		conns:    s.grpcConns,
		exempt:   l.TrustedProxies,
		budget:   ratelimit.NewKeyed(rate, burst, 0),
		onReject: s.countRejection,
		logs:     lograte.New(s.log, 0),
	}
	if s.cfg.APIToken != "" {
		g.token = []byte(s.cfg.APIToken)
	}
	return g
}

// edgeLimits adds the browser limits to cfg, counting refusals in
// switchboard_limit_rejections_total.
func (s *Server) edgeLimits(cfg wsedge.Config) wsedge.Config {
	l := s.cfg.Limits
	cfg.MaxConns, cfg.MaxConnsPerIP, cfg.TrustedProxies = l.MaxConns, l.MaxConnsPerIP, l.TrustedProxies
	cfg.MaxConnsPerVisitor = l.MaxConnsPerVisitor
	cfg.ReadLimit, cfg.FrameRate, cfg.FrameBurst = l.MaxFrameBytes, l.FrameRate, l.FrameBurst
	cfg.SendBuffer = l.SendBuffer
	cfg.OnReject = s.countRejection
	return cfg
}

// controlLimits adds the caller limits to cfg: with an API token, the
// emit rate limit applies per token, else per address.
func (s *Server) controlLimits(cfg control.Config) control.Config {
	l := s.cfg.Limits
	cfg.EmitRate, cfg.EmitBurst, cfg.EmitByToken = l.EmitRate, l.EmitBurst, s.cfg.APIToken != ""
	cfg.OnReject = s.countRejection
	return cfg
}

// countRejection counts a refusal by limit; s.metrics may be nil.
func (s *Server) countRejection(limit string) {
	if n := s.rejected[limit]; n != nil {
		n.Add(1)
	}
	s.metrics.Reject(limit)
}

// nodeLimits are the limits the node counts itself, rather than the edge
// or the API.
var nodeLimits = []string{LimitHTTPConns, LimitHTTPConnsPerIP, LimitGRPCConns, LimitGRPCConnsPerIP, LimitAPIToken, LimitGRPCRefusals, hub.LimitQueuedBytes}

func newRejections() map[string]*atomic.Int64 {
	m := make(map[string]*atomic.Int64, len(nodeLimits))
	for _, l := range nodeLimits {
		m[l] = new(atomic.Int64)
	}
	return m
}

// Rejections returns how many times each limit has refused a browser or a
// caller since the node started, by limit name (the names of the
// switchboard_limit_rejections_total "limit" label).
func (s *Server) Rejections() map[string]int64 {
	m := s.edge.Rejections()
	maps.Copy(m, s.api.Rejections())
	for l, n := range s.rejected {
		m[l] = n.Load()
	}
	return m
}
