package control

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/identity"
)

// sink is a Transport that takes every frame.
type sink struct{}

func (sink) Write([][]byte) (bool, error) { return false, nil }
func (sink) Flush() error                 { return nil }
func (sink) Abort()                       {}
func (sink) Close(hub.Reason)             {}

func TestGetPresence(t *testing.T) {
	t.Parallel()
	h := newHub(t, hub.Config{})
	s := New(Config{Hub: h})
	for _, key := range []string{identity.TokenKey("bob"), identity.AnonymousKey("zed"), identity.TokenKey("amy"), identity.TokenKey("amy"), ""} {
		c, err := h.Connect(sink{}, hub.Start{Visitor: key, Channels: []string{"q"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
	}
	ctx := context.Background()

	n, err := s.GetOnlineCount(ctx, &switchboardv1.GetOnlineCountRequest{Channel: "q"})
	if err != nil || n.GetConnections() != 5 || n.GetVisitors() != 4 {
		t.Fatalf("GetOnlineCount: got %v, %v; want 5 connections, 4 visitors", n, err)
	}

	type visitor struct {
		id    string
		kind  switchboardv1.Visitor_Kind
		conns int64
	}
	var got []visitor
	tok := ""
	for pages := 0; pages < 5; pages++ {
		res, err := s.GetPresence(ctx, &switchboardv1.GetPresenceRequest{Channel: "q", PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatalf("GetPresence: %v", err)
		}
		for _, v := range res.GetVisitors() {
			got = append(got, visitor{v.GetId(), v.GetKind(), v.GetConnections()})
		}
		if tok = res.GetNextPageToken(); tok == "" {
			break
		}
	}
	want := []visitor{
		{"zed", switchboardv1.Visitor_KIND_ANONYMOUS, 1},
		{"amy", switchboardv1.Visitor_KIND_TOKEN, 2},
		{"bob", switchboardv1.Visitor_KIND_TOKEN, 1},
	}
	if len(got) != len(want) {
		t.Fatalf("presence: got %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("visitor %d: got %v; want %v", i, got[i], want[i])
		}
	}

	for _, bad := range []*switchboardv1.GetPresenceRequest{
		{PageSize: -1}, {PageSize: MaxPageSize + 1}, {PageToken: "!!"}, {PageToken: "eHl6"}, {Channel: "a b"},
	} {
		if _, err := s.GetPresence(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("GetPresence(%v): got %v; want InvalidArgument", bad, err)
		}
	}
	if res, err := s.GetPresence(ctx, &switchboardv1.GetPresenceRequest{PageSize: MaxPageSize}); err != nil || len(res.GetVisitors()) != 3 {
		t.Errorf("GetPresence of everyone, the largest page: got %v, %v; want 3 visitors", res, err)
	}
	h.Pause()
	if _, err := s.GetPresence(ctx, &switchboardv1.GetPresenceRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("GetPresence while paused: got %v; want Unavailable", err)
	}
}
