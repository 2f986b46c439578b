// Package control is the gRPC API web servers call: the one place where
// generated protobuf types meet hub types. It validates every request and
// maps hub errors to gRPC status codes.
package control

import (
	"context"
	"encoding/base64"
	"errors"
	"math"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/internal/ratelimit"
	"github.com/switchboard-rt/switchboard/pkg/frame"
	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/identity"
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
	// MaxKeyLen is the longest idempotency key, in bytes.
	MaxKeyLen = 128
)

// Config tunes a Service. Only Hub is required.
type Config struct {
	// Hub receives emits and answers counts.
	Hub *hub.Hub
	// MaxDataBytes bounds a message's data encoded as JSON. Default:
	// DefaultMaxDataBytes (64 KiB). Every browser receives a copy, so large
	// payloads multiply.
	MaxDataBytes int
	// EmitRate is the average number of EmitMessage calls a second one
	// caller may make, EmitBurst how many it may make at once; a caller
	// beyond them gets RESOURCE_EXHAUSTED. A caller is its token when
	// EmitByToken is set (every web server sharing the API token shares
	// the limit), its IP address otherwise. Default: 0, no limit; EmitBurst
	// defaults to one second's worth (at least 1).
	EmitRate    float64
	EmitBurst   int
	EmitByToken bool
	// OnReject, if set, is called with the Limit name each time a limit
	// refuses a call, for metrics.
	OnReject func(limit string)
}

// Service implements switchboard.v1.SwitchboardService.
type Service struct {
	switchboardv1.UnimplementedSwitchboardServiceServer
	hub     *hub.Hub
	maxData int

	emits       *ratelimit.Keyed // nil: no emit rate limit
	emitByToken bool
	emitRate    float64
	onReject    func(limit string)
	rejected    rejections
}

var _ switchboardv1.SwitchboardServiceServer = (*Service)(nil)

// New returns a Service for cfg.
func New(cfg Config) *Service {
	s := &Service{hub: cfg.Hub, maxData: cfg.MaxDataBytes}
	if s.maxData <= 0 {
		s.maxData = DefaultMaxDataBytes
	}
	s.onReject, s.emitByToken, s.emitRate = cfg.OnReject, cfg.EmitByToken, cfg.EmitRate
	if cfg.EmitRate > 0 {
		burst := cfg.EmitBurst
		if burst <= 0 {
			burst = max(1, int(math.Ceil(cfg.EmitRate)))
		}
		s.emits = ratelimit.NewKeyed(cfg.EmitRate, burst, 0)
	}
	return s
}

// EmitMessage validates the request and queues the message to its
// recipients.
func (s *Service) EmitMessage(ctx context.Context, req *switchboardv1.EmitMessageRequest) (*switchboardv1.EmitMessageResponse, error) {
	if err := s.allowEmit(ctx); err != nil {
		return nil, err
	}
	if err := validateEvent(req.GetEvent()); err != nil {
		return nil, err
	}
	if err := validateChannel(req.GetChannel()); err != nil {
		return nil, err
	}
	data, err := encodeValue(nil, req.GetData(), s.maxData)
	if err != nil {
		s.rejectData(err)
		return nil, status.Errorf(codes.InvalidArgument, "invalid data: %v", err)
	}
	key := req.GetIdempotencyKey()
	if err := validateKey(key); err != nil {
		return nil, err
	}
	res, err := s.hub.EmitOnce(ctx, key, hub.Message{Event: req.GetEvent(), Channel: req.GetChannel(), Data: data})
	if err != nil {
		return nil, hubError(err)
	}
	return &switchboardv1.EmitMessageResponse{Id: res.ID, Recipients: int64(res.Recipients), Duplicate: res.Duplicate, Offset: res.Offset}, nil
}

// GetOnlineCount returns the current count.
func (s *Service) GetOnlineCount(_ context.Context, req *switchboardv1.GetOnlineCountRequest) (*switchboardv1.GetOnlineCountResponse, error) {
	if err := validateChannel(req.GetChannel()); err != nil {
		return nil, err
	}
	if s.hub.Paused() {
		return nil, hubError(hub.ErrPaused)
	}
	o := s.hub.Online(req.GetChannel())
	return &switchboardv1.GetOnlineCountResponse{Connections: o.Connections, Visitors: o.Visitors}, nil
}

// WatchCount streams the count until the caller goes away or the server
// drains or pauses; either ends the stream with UNAVAILABLE so the caller
// reconnects, perhaps to another node.
func (s *Service) WatchCount(req *switchboardv1.WatchCountRequest, stream switchboardv1.SwitchboardService_WatchCountServer) error {
	if err := validateChannel(req.GetChannel()); err != nil {
		return err
	}
	err := s.hub.WatchOnline(stream.Context(), req.GetChannel(), func(o hub.Online) error {
		return stream.Send(&switchboardv1.WatchCountResponse{Connections: o.Connections, Visitors: o.Visitors})
	})
	if ctxErr := stream.Context().Err(); ctxErr != nil {
		return status.FromContextError(ctxErr).Err()
	}
	return hubError(err)
}

// Bounds of a GetPresence page.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// GetPresence returns one page of the visitors online, in the order of
// their kind and id; the page token is the last visitor's key.
func (s *Service) GetPresence(_ context.Context, req *switchboardv1.GetPresenceRequest) (*switchboardv1.GetPresenceResponse, error) {
	if err := validateChannel(req.GetChannel()); err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = DefaultPageSize
	case size < 0 || size > MaxPageSize:
		return nil, status.Errorf(codes.InvalidArgument, "page_size must be 1 to %d, or 0 for %d", MaxPageSize, DefaultPageSize)
	}
	after, err := decodePageToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if s.hub.Paused() {
		return nil, hubError(hub.ErrPaused)
	}
	page, more := s.hub.Presence(req.GetChannel(), after, size)
	res := &switchboardv1.GetPresenceResponse{Visitors: make([]*switchboardv1.Visitor, 0, len(page))}
	for _, v := range page {
		kind, id := identity.Split(v.Visitor)
		res.Visitors = append(res.Visitors, &switchboardv1.Visitor{Id: id, Kind: kindToProto(kind), Connections: v.Connections})
	}
	if more {
		res.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(page[len(page)-1].Visitor))
	}
	return res, nil
}

// decodePageToken returns the visitor key a page token names.
func decodePageToken(tok string) (string, error) {
	if tok == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) > 2+identity.MaxSubjectLen {
		return "", status.Error(codes.InvalidArgument, "invalid page_token: pass the next_page_token of the page before")
	}
	if kind, _ := identity.Split(string(b)); kind == identity.Unknown {
		return "", status.Error(codes.InvalidArgument, "invalid page_token: pass the next_page_token of the page before")
	}
	return string(b), nil
}

func kindToProto(k identity.Kind) switchboardv1.Visitor_Kind {
	switch k {
	case identity.Token:
		return switchboardv1.Visitor_KIND_TOKEN
	case identity.Anonymous:
		return switchboardv1.Visitor_KIND_ANONYMOUS
	}
	return switchboardv1.Visitor_KIND_UNSPECIFIED
}

func hubError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, hub.ErrClosed):
		return status.Error(codes.Unavailable, "server is draining: retry on another node")
	case errors.Is(err, hub.ErrPaused):
		return status.Error(codes.Unavailable, ErrStandbyMessage)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Unavailable, "failed to publish: %v", err)
}

// ErrStandbyMessage is the text of the UNAVAILABLE status a paused
// (standby) node answers with.
const ErrStandbyMessage = "standby: primary is serving"

// validateKey accepts an empty key (none) or 1 to MaxKeyLen bytes of
// printable UTF-8: the key becomes the message id browsers see.
func validateKey(key string) error {
	if key == "" {
		return nil
	}
	if len(key) > MaxKeyLen {
		return status.Errorf(codes.InvalidArgument, "idempotency_key is longer than %d bytes", MaxKeyLen)
	}
	if !utf8.ValidString(key) {
		return status.Error(codes.InvalidArgument, "invalid idempotency_key: not UTF-8")
	}
	for _, r := range key {
		if !unicode.IsPrint(r) {
			return status.Errorf(codes.InvalidArgument, "invalid idempotency_key: unprintable character %U", r)
		}
	}
	return nil
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
