package server

import (
	"maps"
	"net/netip"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/control"
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
}

func (l Limits) handshakeTimeout() time.Duration {
	if l.HandshakeTimeout <= 0 {
		return 5 * time.Second
	}
	return l.HandshakeTimeout
}

// edgeLimits adds the browser limits to cfg, counting refusals in
// switchboard_limit_rejections_total.
func (s *Server) edgeLimits(cfg wsedge.Config) wsedge.Config {
	l := s.cfg.Limits
	cfg.MaxConns, cfg.MaxConnsPerIP, cfg.TrustedProxies = l.MaxConns, l.MaxConnsPerIP, l.TrustedProxies
	cfg.ReadLimit, cfg.FrameRate, cfg.FrameBurst = l.MaxFrameBytes, l.FrameRate, l.FrameBurst
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
func (s *Server) countRejection(limit string) { s.metrics.Reject(limit) }

// Rejections returns how many times each limit has refused a browser or a
// caller since the node started, by limit name (the names of the
// switchboard_limit_rejections_total "limit" label).
func (s *Server) Rejections() map[string]int64 {
	m := s.edge.Rejections()
	maps.Copy(m, s.api.Rejections())
	return m
}
