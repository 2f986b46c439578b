package server

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// healthService is grpc-go's health server with Watch streams that end
// when the node stops.
//
// health.Server.Watch returns only when its caller leaves, and
// grpc.Server.GracefulStop waits for every stream, so one standby or
// client-side health check watching this node would hold every shutdown
// until ShutdownTimeout and then cut the in-flight calls off. Once stop is
// called, each Watch makes sure its caller has seen NOT_SERVING and ends
// with UNAVAILABLE, so the caller reconnects, perhaps to another node.
type healthService struct {
	*health.Server
	stopCtx  context.Context
	stopNow  context.CancelFunc
	stopOnce sync.Once
}

var _ healthpb.HealthServer = (*healthService)(nil)

func newHealthService() *healthService {
	ctx, cancel := context.WithCancel(context.Background())
	return &healthService{Server: health.NewServer(), stopCtx: ctx, stopNow: cancel}
}

// stop ends every Watch stream, present and future.
func (h *healthService) stop() { h.stopOnce.Do(h.stopNow) }

// Watch serves health.Server.Watch until the caller leaves or stop is
// called.
func (h *healthService) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(h.stopCtx, cancel)()
	ws := &watchStream{Health_WatchServer: stream, ctx: ctx}
	err := h.Server.Watch(req, ws)
	if h.stopCtx.Err() == nil || stream.Context().Err() != nil {
		return err
	}
	// The inner Watch has returned, so nothing else sends on the stream.
	if !ws.sent || ws.last == healthpb.HealthCheckResponse_SERVING {
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}); err != nil {
			return err
		}
	}
	return status.Error(codes.Unavailable, "server is shutting down")
}

// watchStream is a Watch stream with its own context, remembering what it
// sent last.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx  context.Context
	sent bool
	last healthpb.HealthCheckResponse_ServingStatus
}

func (s *watchStream) Context() context.Context { return s.ctx }

func (s *watchStream) Send(r *healthpb.HealthCheckResponse) error {
	if err := s.Health_WatchServer.Send(r); err != nil {
		return err
	}
	s.sent, s.last = true, r.GetStatus()
	return nil
}
