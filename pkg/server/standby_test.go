package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/internal/freeport"
	"github.com/switchboard-rt/switchboard/internal/proxytest"
)

// readyz returns the status and body of the node's /readyz.
func (n *node) readyz() (int, string) {
	resp, err := n.hc.Get(n.http + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// health returns the node's gRPC health for service "".
func (n *node) health(ctx context.Context) (healthpb.HealthCheckResponse_ServingStatus, error) {
	resp, err := healthpb.NewHealthClient(n.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return resp.GetStatus(), err
}

// waitActive waits until the standby serves, and returns how long it took.
func (n *node) waitActive(t testing.TB) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, waitTimeout, func() (bool, string) {
		code, body := n.readyz()
		return code == http.StatusOK, fmt.Sprintf("standby GET /readyz: got %d %q; want 200", code, body)
	})
	return time.Since(start)
}

// checkPassive checks every way a passive standby refuses work.
func (n *node) checkPassive(t testing.TB) {
	t.Helper()
	eventually(t, waitTimeout, func() (bool, string) {
		code, body := n.readyz()
		return code == http.StatusServiceUnavailable && strings.Contains(body, "standby"),
			fmt.Sprintf("standby GET /readyz: got %d %q; want 503 saying standby", code, body)
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, resp, err := dialBrowser(ctx, n.hc, n.ws, nil)
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("upgrade on a passive standby: got %v, %v; want 503", resp, err)
	}
	_, err = n.api.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E"})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "standby") {
		t.Errorf("EmitMessage on a passive standby: got %v; want UNAVAILABLE saying standby", err)
	}
	if _, err := n.api.GetOnlineCount(ctx, &switchboardv1.GetOnlineCountRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("GetOnlineCount on a passive standby: got %v; want UNAVAILABLE", err)
	}
	stream, err := n.api.WatchCount(ctx, &switchboardv1.WatchCountRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("WatchCount on a passive standby: got %v; want UNAVAILABLE", err)
	}
	if st, err := n.health(ctx); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health of a passive standby: got %v, %v; want NOT_SERVING", st, err)
	}
	if body := n.metrics(t); !strings.Contains(body, "\nswitchboard_active 0\n") {
		t.Errorf("/metrics of a passive standby: got %s; want switchboard_active 0", body)
	}
}

// metrics returns the node's /metrics.
func (n *node) metrics(t testing.TB) string {
	t.Helper()
	resp, err := n.hc.Get(n.http + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestStandby runs a primary and its standby through a fail-over and back:
// the standby stays passive while the primary serves, takes over when it
// stops, and hands its browsers back when it returns.
func TestStandby(t *testing.T) {
	t.Parallel()
	const spread = time.Second
	primaryAddr := freeport.Addr(t)
	primary := startNode(t, Config{GRPCAddr: primaryAddr})
	standby := startNode(t, Config{PrimaryAddr: primaryAddr, HandBackSpread: spread})
	standby.checkPassive(t)
	if code, _ := primary.get("/readyz"); code != http.StatusOK {
		t.Errorf("primary GET /readyz: got %d; want 200", code)
	}

	// The primary goes: the standby takes over and serves browsers.
	primary.stop(t)
	took := standby.waitActive(t)
	t.Logf("standby active %v after the primary stopped", took)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if st, err := standby.health(ctx); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health of an active standby: got %v, %v; want SERVING", st, err)
	}
	if body := standby.metrics(t); !strings.Contains(body, "\nswitchboard_active 1\n") {
		t.Errorf("/metrics of an active standby: got %s; want switchboard_active 1", body)
	}
	const n = 6
	browsers := make([]*browser, n)
	for i := range browsers {
		browsers[i] = standby.dialReading(t)
	}
	standby.waitCount(t, "", n)
	resp := standby.emit(t, &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: "during-fail-over"})
	for _, b := range browsers {
		b.waitMessage(t, resp.GetId())
	}
	stream, err := standby.api.WatchCount(ctx, &switchboardv1.WatchCountRequest{})
	if err != nil {
		t.Fatalf("WatchCount on an active standby: got %v; want nil", err)
	}
	watch := recordWatch(stream)
	watch.waitLast(t, n)

	// The primary returns: the standby hands every browser back, spread
	// over the window, and ends its WatchCount streams.
	var mu sync.Mutex
	var closedAt []time.Time
	var wg sync.WaitGroup
	for _, b := range browsers {
		wg.Go(func() {
			<-b.done
			mu.Lock()
			closedAt = append(closedAt, time.Now())
			mu.Unlock()
		})
	}
	startNodeAt(t, Config{GRPCAddr: primaryAddr})
	if err := watch.waitEnd(t); status.Code(err) != codes.Unavailable {
		t.Errorf("WatchCount on the standby once the primary returns: got %v; want UNAVAILABLE", err)
	}
	wg.Wait()
	first, last := closedAt[0], closedAt[0]
	for _, at := range closedAt {
		if at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	for i, b := range browsers {
		ce, ok := closeError(b.readErr())
		if !ok || ce.Code != websocket.StatusServiceRestart {
			t.Errorf("browser %d closed with %v; want close 1012", i, b.readErr())
		}
	}
	if got := last.Sub(first); got < spread/2 {
		t.Errorf("hand-back closes span %v; want at least %v", got, spread/2)
	}
	eventually(t, waitTimeout, func() (bool, string) {
		got := standby.srv.Hub().Count("")
		return got == 0, fmt.Sprintf("standby count: got %d; want 0", got)
	})
	standby.checkPassive(t)
}

// TestStandbyPrimaryVanishes cuts the standby off from a primary that
// keeps serving, as a vanished network would (no reset, no FIN): the
// standby must take over within two check intervals.
func TestStandbyPrimaryVanishes(t *testing.T) {
	t.Parallel()
	primary := startNode(t, Config{})
	link := proxytest.Start(t, primary.srv.GRPCAddr())
	standby := startNode(t, Config{PrimaryAddr: link.Addr()})
	standby.checkPassive(t)
	link.Blackhole()
	took := standby.waitActive(t)
	t.Logf("standby active %v after the primary vanished", took)
	if limit := primaryCheckInterval + primaryCheckTimeout + 2*time.Second; took > limit {
		t.Errorf("standby took %v to take over; want at most about %v", took, limit)
	}
	standby.dialReading(t)
	standby.waitCount(t, "", 1)
}

func TestStandbyOwnAddress(t *testing.T) {
	t.Parallel()
	addr := freeport.Addr(t)
	if srv, err := New(Config{HTTPAddr: "127.0.0.1:0", GRPCAddr: addr, PrimaryAddr: addr, Logger: testLogger(t, 0)}); err == nil {
		srv.closeListeners()
		srv.hub.Close()
		t.Fatal("New with PrimaryAddr = GRPCAddr: got nil; want an error")
	}
}

func TestIdempotentEmit(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	b := n.dialReading(t)
	b.waitCount(t, 1)

	first := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: "order-1"})
	second := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: "order-1"})
	if first.GetId() != "order-1" || first.GetDuplicate() || first.GetRecipients() != 1 {
		t.Errorf("first emit: got %v; want id order-1, 1 recipient, not a duplicate", first)
	}
	if second.GetId() != "order-1" || !second.GetDuplicate() || second.GetRecipients() != 1 {
		t.Errorf("second emit: got %v; want id order-1, 1 recipient, a duplicate", second)
	}

	// Twenty at once: one delivers.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	fresh := 0
	for range 20 {
		wg.Go(func() {
			resp, err := n.api.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: "order-2"})
			if err != nil || resp.GetId() != "order-2" {
				t.Errorf("concurrent emit: got %v, %v; want id order-2", resp, err)
				return
			}
			if !resp.GetDuplicate() {
				mu.Lock()
				fresh++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if fresh != 1 {
		t.Errorf("concurrent emits not marked duplicate: got %d; want 1", fresh)
	}
	marker := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "Marker"})
	var ids []string
	for _, m := range b.waitMessage(t, marker.GetId()) {
		ids = append(ids, m.ID)
	}
	if want := []string{"order-1", "order-2", marker.GetId()}; strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Errorf("browser got ids %v; want %v", ids, want)
	}

	for _, key := range []string{strings.Repeat("k", 129), "tab\there", "nul\x00"} {
		_, err := n.api.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: key})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("emit with key %q: got %v; want INVALID_ARGUMENT", key, err)
		}
	}
}
