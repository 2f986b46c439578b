package wsedge

import (
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/switchboard-rt/switchboard/internal/netaddr"
)

// The limits the edge enforces, as named in Rejections and OnReject (the
// "limit" label of switchboard_limit_rejections_total).
const (
	// LimitConnections: the node holds Config.MaxConns connections; the
	// upgrade gets 503.
	LimitConnections = "connections"
	// LimitConnectionsPerIP: the client's address holds
	// Config.MaxConnsPerIP connections; the upgrade gets 429.
	LimitConnectionsPerIP = "connections_per_ip"
	// LimitConnectionsPerVisitor: the visitor (the token's subject, or
	// the anonymous id) holds Config.MaxConnsPerVisitor connections on
	// this node; the upgrade gets 429.
	LimitConnectionsPerVisitor = "connections_per_visitor"
	// LimitIdentityToken: a bad, expired or missing identity token; the
	// upgrade gets 401.
	LimitIdentityToken = "identity_token"
	// LimitFrameRate: the browser sent frames faster than Config.FrameRate
	// allows; closed with 1008.
	LimitFrameRate = "frame_rate"
	// LimitFrameSize: a frame over Config.ReadLimit; closed with 1009.
	LimitFrameSize = "frame_size"
	// LimitSubscriptions: a subscribe past hub.Config.MaxSubscriptions;
	// closed with 1008.
	LimitSubscriptions = "subscriptions"
	// LimitInvalidFrame: bad JSON, unknown type, binary frame, bad UTF-8 or
	// an invalid channel; closed with 1008.
	LimitInvalidFrame = "invalid_frame"
	// LimitInvalidParameter: a bad query parameter on the upgrade (channel,
	// epoch, offset, visitor); the upgrade gets 400.
	LimitInvalidParameter = "invalid_parameter"
)

var limitNames = [...]string{LimitConnections, LimitConnectionsPerIP, LimitConnectionsPerVisitor, LimitIdentityToken, LimitFrameRate, LimitFrameSize, LimitSubscriptions, LimitInvalidFrame, LimitInvalidParameter}

// rejections counts refusals by limit.
type rejections struct {
	counts [len(limitNames)]atomic.Int64 // in limitNames order
}

func (r *rejections) add(limit string) {
	for i, n := range limitNames {
		if n == limit {
			r.counts[i].Add(1)
			return
		}
	}
}

// Rejections returns how many upgrades and connections each limit has
// refused since the Handler was made, keyed by the Limit names; every
// limit is present, at zero if it never refused anyone.
func (h *Handler) Rejections() map[string]int64 {
	m := make(map[string]int64, len(limitNames))
	for i, n := range limitNames {
		m[n] = h.rejected.counts[i].Load()
	}
	return m
}

// reject counts a refusal by limit.
func (h *Handler) reject(limit string) {
	h.rejected.add(limit)
	if h.onReject != nil {
		h.onReject(limit)
	}
}

// perKey counts the connections of each key: a client address (by
// netaddr.Key), or a visitor.
type perKey[K comparable] struct {
	max int // <= 0: no limit
	mu  sync.Mutex
	n   map[K]int
}

func newPerKey[K comparable](max int) perKey[K] { return perKey[K]{max: max, n: make(map[K]int)} }

// acquire takes a slot for k; it reports false when k holds max already.
func (p *perKey[K]) acquire(k K) bool {
	if p.max <= 0 {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[k] >= p.max {
		return false
	}
	p.n[k]++
	return true
}

func (p *perKey[K]) release(k K) {
	if p.max <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[k]--; p.n[k] <= 0 {
		delete(p.n, k)
	}
}

// clientIP returns the address a request comes from: its direct peer, or,
// when that peer is one of the trusted proxies, the rightmost address in
// X-Forwarded-For that is not a trusted proxy. Only the entries trusted
// proxies appended are believed: everything left of them is whatever the
// client chose to send.
func clientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := netaddr.Parse(r.RemoteAddr)
	if !netaddr.In(peer, trusted) {
		return peer
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	ip := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			// A trusted proxy wrote no such entry: keep the last
			// address a trusted hop vouched for.
			return ip
		}
		ip = a.Unmap()
		if !netaddr.In(ip, trusted) {
			return ip
		}
	}
	return ip // every hop is a trusted proxy: take the first one
}
