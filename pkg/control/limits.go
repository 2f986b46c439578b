package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// The limits the service enforces, as named in Rejections and OnReject
// (the "limit" label of switchboard_limit_rejections_total).
const (
	// LimitEmitRate: a caller emitted faster than Config.EmitRate;
	// RESOURCE_EXHAUSTED.
	LimitEmitRate = "emit_rate"
	// LimitDataSize: data over Config.MaxDataBytes; INVALID_ARGUMENT.
	LimitDataSize = "data_size"
	// LimitDataDepth: data nested deeper than MaxDataDepth;
	// INVALID_ARGUMENT.
	LimitDataDepth = "data_depth"
)

var limitNames = []string{LimitEmitRate, LimitDataSize, LimitDataDepth}

// rejections counts refusals by limit, in limitNames order.
type rejections struct {
	counts [3]atomic.Int64
}

// Rejections returns how many calls each limit has refused since the
// Service was made, keyed by the Limit names; every limit is present.
func (s *Service) Rejections() map[string]int64 {
	m := make(map[string]int64, len(limitNames))
	for i, n := range limitNames {
		m[n] = s.rejected.counts[i].Load()
	}
	return m
}

func (s *Service) reject(limit string) {
	for i, n := range limitNames {
		if n == limit {
			s.rejected.counts[i].Add(1)
		}
	}
	if s.onReject != nil {
		s.onReject(limit)
	}
}

// rejectData counts an encodeValue error that is a limit.
func (s *Service) rejectData(err error) {
	var tl tooLargeError
	switch {
	case errors.As(err, &tl):
		s.reject(LimitDataSize)
	case errors.Is(err, errTooDeep):
		s.reject(LimitDataDepth)
	}
}

// allowEmit applies the emit rate limit to the caller of ctx.
func (s *Service) allowEmit(ctx context.Context) error {
	if s.emits == nil {
		return nil
	}
	if s.emits.Allow(callerKey(ctx, s.emitByToken), time.Now()) {
		return nil
	}
	s.reject(LimitEmitRate)
	return status.Error(codes.ResourceExhausted, fmt.Sprintf("emit rate limit exceeded (%g a second): slow down and retry", s.emitRate))
}

// callerKey names the caller a rate limit applies to: its bearer token
// when byToken is set and it sent one (auth has checked it by then), else
// its IP address; every connection from one host shares it.
func callerKey(ctx context.Context, byToken bool) string {
	if byToken {
		if v := metadata.ValueFromIncomingContext(ctx, "authorization"); len(v) > 0 {
			return "token " + v[0]
		}
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	addr := p.Addr.String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return "addr " + host
	}
	return "addr " + addr
}
