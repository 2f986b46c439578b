// Package control is the gRPC API web servers call: the one place where
// generated protobuf types meet hub types. It validates every request and
// maps hub errors to gRPC status codes.
package control

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/pkg/frame"
	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// Limits on EmitMessage input.
const (
	// MaxEventLen is the longest event name, in bytes.
	MaxEventLen = 128
	// DefaultMaxDataBytes is the default limit on a message's data encoded
	// as JSON.
	DefaultMaxDataBytes = 64 << 10
	// MaxDataDepth is the deepest nesting of lists and structs in data.
	MaxDataDepth = 32
)

// Config tunes a Service. Only Hub is required.
type Config struct {
	// Hub receives emits and answers counts.
	Hub *hub.Hub
	// MaxDataBytes bounds a message's data encoded as JSON. Default:
	// DefaultMaxDataBytes (64 KiB). Every browser receives a copy, so large
	// payloads multiply.
	MaxDataBytes int
}

// Service implements switchboard.v1.SwitchboardService.
type Service struct {
	switchboardv1.UnimplementedSwitchboardServiceServer
	hub     *hub.Hub
	maxData int
}

var _ switchboardv1.SwitchboardServiceServer = (*Service)(nil)

// New returns a Service for cfg.
func New(cfg Config) *Service {
	s := &Service{hub: cfg.Hub, maxData: cfg.MaxDataBytes}
	if s.maxData <= 0 {
		s.maxData = DefaultMaxDataBytes
	}
	return s
}

// EmitMessage validates the request and queues the message to its
// recipients.
func (s *Service) EmitMessage(ctx context.Context, req *switchboardv1.EmitMessageRequest) (*switchboardv1.EmitMessageResponse, error) {
	if err := validateEvent(req.GetEvent()); err != nil {
		return nil, err
	}
	if err := validateChannel(req.GetChannel()); err != nil {
		return nil, err
	}
	data, err := encodeValue(nil, req.GetData(), s.maxData)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid data: %v", err)
	}
	id, n, err := s.hub.Emit(ctx, hub.Message{Event: req.GetEvent(), Channel: req.GetChannel(), Data: data})
	if err != nil {
		return nil, hubError(err)
	}
	return &switchboardv1.EmitMessageResponse{Id: id, Recipients: int64(n)}, nil
}

// GetOnlineCount returns the current count.
func (s *Service) GetOnlineCount(_ context.Context, req *switchboardv1.GetOnlineCountRequest) (*switchboardv1.GetOnlineCountResponse, error) {
	if err := validateChannel(req.GetChannel()); err != nil {
		return nil, err
	}
	return &switchboardv1.GetOnlineCountResponse{Connections: s.hub.Count(req.GetChannel())}, nil
}

// WatchCount streams the count until the caller goes away or the server
// drains; a draining server ends the stream with UNAVAILABLE so the caller
// reconnects, perhaps to another node.
func (s *Service) WatchCount(req *switchboardv1.WatchCountRequest, stream switchboardv1.SwitchboardService_WatchCountServer) error {
	if err := validateChannel(req.GetChannel()); err != nil {
		return err
	}
	err := s.hub.Watch(stream.Context(), req.GetChannel(), func(n int64) error {
		return stream.Send(&switchboardv1.WatchCountResponse{Connections: n})
	})
	if ctxErr := stream.Context().Err(); ctxErr != nil {
		return status.FromContextError(ctxErr).Err()
	}
	return hubError(err)
}

func hubError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, hub.ErrClosed):
		return status.Error(codes.Unavailable, "server is draining: retry on another node")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Unavailable, "failed to publish: %v", err)
}

func validateEvent(event string) error {
	switch {
	case event == "":
		return status.Error(codes.InvalidArgument, "event is required")
	case len(event) > MaxEventLen:
		return status.Errorf(codes.InvalidArgument, "event is longer than %d bytes", MaxEventLen)
	}
	if err := frame.ValidateName(event); err != nil {
		return status.Errorf(codes.InvalidArgument, "invalid event: %v", err)
	}
	return nil
}

func validateChannel(channel string) error {
	if channel == "" {
		return nil
	}
	if err := frame.ValidateChannel(channel); err != nil {
		return status.Errorf(codes.InvalidArgument, "invalid channel: %v", err)
	}
	return nil
}
