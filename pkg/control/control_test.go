package control

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/pkg/hub"
)

func newHub(t *testing.T, cfg hub.Config) *hub.Hub {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := hub.New(cfg)
	if err != nil {
		t.Fatalf("hub.New: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// fakeWatch is a WatchCount stream that records what is sent.
type fakeWatch struct {
	grpc.ServerStream
	ctx  context.Context
	sent chan int64
}

func (f *fakeWatch) Context() context.Context { return f.ctx }

func (f *fakeWatch) Send(r *switchboardv1.WatchCountResponse) error {
	f.sent <- r.GetConnections()
	return nil
}

func TestEmitMessageValidation(t *testing.T) {
	t.Parallel()
	s := New(Config{Hub: newHub(t, hub.Config{}), MaxDataBytes: 1000})
	tests := []struct {
		name string
		req  *switchboardv1.EmitMessageRequest
		want codes.Code
	}{
		{"ok", &switchboardv1.EmitMessageRequest{Event: "ShowMessage", Data: structpb.NewStringValue("hi")}, codes.OK},
		{"ok, channel", &switchboardv1.EmitMessageRequest{Event: "ShowMessage", Channel: "quotes"}, codes.OK},
		{"ok, unicode event", &switchboardv1.EmitMessageRequest{Event: "Zeigé"}, codes.OK},
		{"empty event", &switchboardv1.EmitMessageRequest{}, codes.InvalidArgument},
		{"event too long", &switchboardv1.EmitMessageRequest{Event: strings.Repeat("e", MaxEventLen+1)}, codes.InvalidArgument},
		{"event at the limit", &switchboardv1.EmitMessageRequest{Event: strings.Repeat("e", MaxEventLen)}, codes.OK},
		{"event with a space", &switchboardv1.EmitMessageRequest{Event: "a b"}, codes.InvalidArgument},
		{"event with a control", &switchboardv1.EmitMessageRequest{Event: "a\x00"}, codes.InvalidArgument},
		{"event not UTF-8", &switchboardv1.EmitMessageRequest{Event: "a\xff"}, codes.InvalidArgument},
		{"channel with a space", &switchboardv1.EmitMessageRequest{Event: "E", Channel: "a b"}, codes.InvalidArgument},
		{"channel too long", &switchboardv1.EmitMessageRequest{Event: "E", Channel: strings.Repeat("c", 129)}, codes.InvalidArgument},
		{"data over MaxDataBytes", &switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewStringValue(strings.Repeat("x", 999))}, codes.InvalidArgument},
		{"data at MaxDataBytes", &switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewStringValue(strings.Repeat("x", 998))}, codes.OK},
		{"key", &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: "order 42/é"}, codes.OK},
		{"key at the limit", &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: strings.Repeat("k", MaxKeyLen)}, codes.OK},
		{"key too long", &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: strings.Repeat("k", MaxKeyLen+1)}, codes.InvalidArgument},
		{"key with a control", &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: "a\n"}, codes.InvalidArgument},
		{"key not UTF-8", &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: "a\xff"}, codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := s.EmitMessage(context.Background(), tc.req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("got %v (%v); want %v", got, err, tc.want)
			}
			if err == nil && (resp.GetId() == "" || resp.GetRecipients() != 0) {
				t.Errorf("response: got id %q, recipients %d; want an id and 0", resp.GetId(), resp.GetRecipients())
			}
		})
	}
}

func TestDefaultMaxDataBytes(t *testing.T) {
	t.Parallel()
	s := New(Config{Hub: newHub(t, hub.Config{})})
	for _, tc := range []struct {
		n    int
		want codes.Code
	}{{DefaultMaxDataBytes - 2, codes.OK}, {DefaultMaxDataBytes - 1, codes.InvalidArgument}} {
		_, err := s.EmitMessage(context.Background(), &switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewStringValue(strings.Repeat("x", tc.n))})
		if got := status.Code(err); got != tc.want {
			t.Errorf("string of %d bytes: got %v; want %v", tc.n, got, tc.want)
		}
	}
}

func TestDrainedHub(t *testing.T) {
	t.Parallel()
	h := newHub(t, hub.Config{})
	s := New(Config{Hub: h})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	watch := &fakeWatch{ctx: ctx, sent: make(chan int64, 16)}
	watchErr := make(chan error, 1)
	go func() { watchErr <- s.WatchCount(&switchboardv1.WatchCountRequest{}, watch) }()
	if got := <-watch.sent; got != 0 {
		t.Errorf("first WatchCount value: got %d; want 0", got)
	}

	if err := h.Drain(ctx, hub.ReasonShutdown, 0); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if got := status.Code(<-watchErr); got != codes.Unavailable {
		t.Errorf("WatchCount when the hub drains: got %v; want %v", got, codes.Unavailable)
	}
	_, err := s.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E"})
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("EmitMessage on a drained hub: got %v; want %v", got, codes.Unavailable)
	}
	err = s.WatchCount(&switchboardv1.WatchCountRequest{}, &fakeWatch{ctx: ctx, sent: make(chan int64, 1)})
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("WatchCount on a drained hub: got %v; want %v", got, codes.Unavailable)
	}
	resp, err := s.GetOnlineCount(ctx, &switchboardv1.GetOnlineCountRequest{})
	if err != nil || resp.GetConnections() != 0 {
		t.Errorf("GetOnlineCount on a drained hub: got %v, %v; want 0", resp.GetConnections(), err)
	}
}

func TestWatchCountCallerLeaves(t *testing.T) {
	t.Parallel()
	s := New(Config{Hub: newHub(t, hub.Config{})})
	ctx, cancel := context.WithCancel(context.Background())
	watch := &fakeWatch{ctx: ctx, sent: make(chan int64, 16)}
	done := make(chan error, 1)
	go func() { done <- s.WatchCount(&switchboardv1.WatchCountRequest{Channel: "room"}, watch) }()
	<-watch.sent
	cancel()
	if got := status.Code(<-done); got != codes.Canceled {
		t.Errorf("WatchCount after the caller left: got %v; want %v", got, codes.Canceled)
	}
}

// failingLog is a shared log that takes no message, as a cluster member
// that lost NATS.
type failingLog struct{}

func (failingLog) Append(context.Context, hub.Message) (uint64, bool, error) {
	return 0, false, errors.New("log down")
}

func TestSharedLogFailure(t *testing.T) {
	t.Parallel()
	s := New(Config{Hub: newHub(t, hub.Config{Sequencer: failingLog{}})})
	_, err := s.EmitMessage(context.Background(), &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: "k"})
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("EmitMessage with a failing shared log: got %v (%v); want %v, to retry on another node", got, err, codes.Unavailable)
	}
}

func TestPausedHub(t *testing.T) {
	t.Parallel()
	h := newHub(t, hub.Config{})
	s := New(Config{Hub: h})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	watch := &fakeWatch{ctx: ctx, sent: make(chan int64, 16)}
	watchErr := make(chan error, 1)
	go func() { watchErr <- s.WatchCount(&switchboardv1.WatchCountRequest{}, watch) }()
	if got := <-watch.sent; got != 0 {
		t.Errorf("first WatchCount value: got %d; want 0", got)
	}
	h.Pause()
	wantErr := status.Error(codes.Unavailable, ErrStandbyMessage)
	if err := <-watchErr; status.Code(err) != codes.Unavailable {
		t.Errorf("WatchCount when the hub pauses: got %v; want %v", err, wantErr)
	}
	_, err := s.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: "k"})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || st.Message() != ErrStandbyMessage {
		t.Errorf("EmitMessage on a paused hub: got %v; want %v", err, wantErr)
	}
	if _, err := s.GetOnlineCount(ctx, &switchboardv1.GetOnlineCountRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("GetOnlineCount on a paused hub: got %v; want %v", err, wantErr)
	}
	h.Resume()
	resp, err := s.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: "k"})
	if err != nil || resp.GetId() != "k" || resp.GetDuplicate() {
		t.Errorf("EmitMessage after Resume: got %v, %v; want id k, not a duplicate", resp, err)
	}
	resp, err = s.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: "k"})
	if err != nil || resp.GetId() != "k" || !resp.GetDuplicate() {
		t.Errorf("EmitMessage again: got %v, %v; want id k, a duplicate", resp, err)
	}
}
