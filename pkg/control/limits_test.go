package control

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/pkg/hub"
)

func fromPeer(ip string, port int, token string) context.Context {
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: port}})
	if token != "" {
		ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+token))
	}
	return ctx
}

func TestEmitRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		byToken bool
		calls   []context.Context
		want    []codes.Code
	}{
		{
			name:  "by address, ports shared",
			calls: []context.Context{fromPeer("10.0.0.1", 1, ""), fromPeer("10.0.0.1", 2, ""), fromPeer("10.0.0.1", 3, ""), fromPeer("10.0.0.2", 1, "")},
			want:  []codes.Code{codes.OK, codes.OK, codes.ResourceExhausted, codes.OK},
		},
		{
			name:    "by token",
			byToken: true,
			calls:   []context.Context{fromPeer("10.0.0.1", 1, "a"), fromPeer("10.0.0.2", 1, "a"), fromPeer("10.0.0.3", 1, "a"), fromPeer("10.0.0.1", 1, "b")},
			want:    []codes.Code{codes.OK, codes.OK, codes.ResourceExhausted, codes.OK},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var rejected []string
			s := New(Config{Hub: newHub(t, hub.Config{}), EmitRate: 0.001, EmitBurst: 2, EmitByToken: tc.byToken,
				OnReject: func(l string) { rejected = append(rejected, l) }})
			for i, ctx := range tc.calls {
				_, err := s.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E"})
				if got := status.Code(err); got != tc.want[i] {
					t.Fatalf("call %d: got %v (%v); want %v", i, got, err, tc.want[i])
				}
				if err != nil && !strings.Contains(err.Error(), "rate limit") {
					t.Fatalf("call %d: got message %q; want it to name the rate limit", i, err)
				}
			}
			if got := s.Rejections()[LimitEmitRate]; got != 1 || len(rejected) != 1 || rejected[0] != LimitEmitRate {
				t.Fatalf("rejections: got %d, OnReject %v; want 1, [%s]", got, rejected, LimitEmitRate)
			}
		})
	}
}

func TestEmitRateOffByDefault(t *testing.T) {
	t.Parallel()
	s := New(Config{Hub: newHub(t, hub.Config{})})
	for i := range 1000 {
		if _, err := s.EmitMessage(fromPeer("10.0.0.1", 1, ""), &switchboardv1.EmitMessageRequest{Event: "E"}); err != nil {
			t.Fatalf("call %d: got %v; want nil", i, err)
		}
	}
}

func TestDataRejectionsCounted(t *testing.T) {
	t.Parallel()
	s := New(Config{Hub: newHub(t, hub.Config{}), MaxDataBytes: 10})
	ctx := context.Background()
	s.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewStringValue(strings.Repeat("x", 20))})
	s.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E", Data: nested(MaxDataDepth+1, structpb.NewNullValue(), false)})
	got := s.Rejections()
	if got[LimitDataSize] != 1 || got[LimitDataDepth] != 1 || got[LimitEmitRate] != 0 {
		t.Fatalf("Rejections: got %v; want data_size 1, data_depth 1, emit_rate 0", got)
	}
}
