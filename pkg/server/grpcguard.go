package server

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/switchboard-rt/switchboard/internal/lograte"
	"github.com/switchboard-rt/switchboard/internal/netaddr"
	"github.com/switchboard-rt/switchboard/internal/ratelimit"
)

// The UNAUTHENTICATED answers: each says what is wrong and how to send
// the token.
const (
	msgNoToken     = `missing API token: send it as metadata "authorization: Bearer <token>"`
	msgBadScheme   = `malformed authorization metadata: want "authorization: Bearer <token>"`
	msgWrongToken  = `invalid API token: send the node's SWITCHBOARD_API_TOKEN as metadata "authorization: Bearer <token>"`
	msgTooManyRefs = "too many refused or unauthenticated calls from your address: closing the connection"
)

// grpcGuard runs for every gRPC stream as soon as its headers are read,
// before the server starts a goroutine for it or reads its request
// (grpc.InTapHandle). It refuses API calls without the token, so that
// callers without one cost the node a header decode and a short answer,
// whatever they send after. And it bounds the calls an address may make
// that are refused or need no token (health, reflection): past the
// budget, its connection is closed, which ends rapid-reset floods (a
// stream opened and cancelled at once, again and again) from callers
// without a token, and its new connections are refused at accept until
// the budget refills. Trusted proxies, which carry many callers, are
// budgeted by connection instead.
//
// grpc-go keeps the context of a stream refused here, and the timer of
// its deadline, until the deadline: the guard is also the server's stats
// handler, which gives each connection a context of its own, cancelled
// when the connection ends, so that what refused streams leave goes with
// their connection, which the idle timeout closes in time.
type grpcGuard struct {
	token    []byte // nil: every call is open
	conns    *connLimiter
	exempt   []netip.Prefix
	budget   *ratelimit.Keyed
	onReject func(limit string)
	logs     *lograte.Limiter
}

func (g *grpcGuard) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	open := !needsToken(info.FullMethodName)
	if !open && g.token == nil {
		return ctx, nil
	}
	var err error
	if !open {
		msg := g.check(info.Header["authorization"])
		if msg == "" {
			return ctx, nil
		}
		err = status.Error(codes.Unauthenticated, msg)
		g.onReject(LimitAPIToken)
		g.logs.Log(ctx, slog.LevelInfo, "refused gRPC calls without a valid API token",
			"method", lograte.Truncate(info.FullMethodName, 0), "peer", peerAddr(ctx), "reason", msg)
	}
	if !g.spend(ctx) {
		// A call without the token still says so, as the contract has it.
		if err != nil {
			return nil, status.Error(codes.Unauthenticated, status.Convert(err).Message()+"; "+msgTooManyRefs)
		}
		return nil, status.Error(codes.ResourceExhausted, msgTooManyRefs)
	}
	return ctx, err
}

// check returns why the authorization metadata fails, or "" if it
// carries the token.
func (g *grpcGuard) check(vals []string) string {
	if len(vals) == 0 {
		return msgNoToken
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return msgBadScheme
	}
	if subtle.ConstantTimeCompare([]byte(tok), g.token) != 1 {
		return msgWrongToken
	}
	return ""
}

// spend takes one call from the budget of the caller's address; once the
// budget is spent it closes the caller's connection and reports false.
func (g *grpcGuard) spend(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return true
	}
	ip := netaddr.Of(p.Addr)
	key := netaddr.Key(ip).String()
	if netaddr.In(ip, g.exempt) {
		key = p.Addr.String()
	}
	if g.budget.Allow(key, time.Now()) {
		return true
	}
	g.onReject(LimitGRPCRefusals)
	g.logs.Log(ctx, slog.LevelWarn, "closed gRPC connections making too many refused or unauthenticated calls", "peer", p.Addr.String())
	if g.conns == nil {
		return false
	}
	if c := g.conns.lookup(p.Addr.String()); c != nil && c.closing.CompareAndSwap(false, true) {
		// The server holds a lock of the connection's while it runs the
		// tap handle: close from elsewhere, once the refusal has had a
		// moment to go out.
		time.AfterFunc(10*time.Millisecond, func() { c.Close() })
	}
	return false
}

// admits reports whether a new connection from peer may open: not while
// its address is out of its budget of refused calls, so that a caller
// who reconnects at once is refused at accept, before any handshake.
func (g *grpcGuard) admits(peer netip.Addr) bool {
	return netaddr.In(peer, g.exempt) || g.budget.Ready(netaddr.Key(peer).String(), time.Now())
}

// connCancel is the key of the cancel function of a connection's context.
type connCancel struct{}

// TagConn gives each connection a context that HandleConn cancels when
// the connection ends.
func (g *grpcGuard) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	return context.WithValue(ctx, connCancel{}, cancel)
}

// HandleConn cancels a connection's context once it has ended.
func (g *grpcGuard) HandleConn(ctx context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnEnd); ok {
		if cancel, ok := ctx.Value(connCancel{}).(context.CancelFunc); ok {
			cancel()
		}
	}
}

// TagRPC and HandleRPC complete the stats.Handler; calls are measured by
// the interceptors.
func (g *grpcGuard) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (g *grpcGuard) HandleRPC(context.Context, stats.RPCStats)                       {}

// needsToken reports whether a method needs the API token: all do but
// health checks and reflection, so that probes and grpcurl work without
// it.
func needsToken(fullMethod string) bool {
	service, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return service != healthpb.Health_ServiceDesc.ServiceName && !strings.HasPrefix(service, "grpc.reflection.")
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
