package client_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/switchboard-rt/switchboard/internal/freeport"
	"github.com/switchboard-rt/switchboard/pkg/client"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

// TestEmitLostAnswer loses the answers of the first two attempts after
// the node delivered: the retries carry the same key, so the browser gets
// the message once and Emit reports the duplicate.
func TestEmitLostAnswer(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := startNode(t, server.Config{})
	var attempts atomic.Int32
	var keys []string
	loseAnswer := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
			return err
		}
		if k, ok := req.(interface{ GetIdempotencyKey() string }); ok {
			keys = append(keys, k.GetIdempotencyKey())
		}
		if attempts.Add(1) <= 2 {
			return status.Error(codes.Unavailable, "answer lost")
		}
		return nil
	}
	c := dial(t, n.GRPCAddr(), client.WithDialOptions(grpc.WithChainUnaryInterceptor(loseAnswer)))
	b := dialBrowser(t, ctx, n.HTTPAddr())

	res, err := c.Emit(ctx, "E", "once")
	if err != nil {
		t.Fatalf("Emit: %v", err)
	}
	if !res.Duplicate || res.Recipients != 1 || len(res.ID) != 26 {
		t.Errorf("Emit = %+v; want a duplicate of a delivery to 1 browser, with a 26-character id", res)
	}
	if len(keys) != 3 || keys[0] != res.ID || keys[1] != res.ID || keys[2] != res.ID {
		t.Errorf("attempts' keys = %v; want 3 times %q", keys, res.ID)
	}
	mark, err := c.Emit(ctx, "Marker", nil, client.WithIdempotencyKey("marker-1"))
	if err != nil || mark.ID != "marker-1" || mark.Duplicate {
		t.Fatalf("Emit(Marker) = %+v, %v; want id marker-1, not a duplicate", mark, err)
	}
	if got := b.nextMessage(ctx); got.ID != res.ID {
		t.Errorf("browser's first message = %q; want %q", got.ID, res.ID)
	}
	if got := b.nextMessage(ctx); got.ID != "marker-1" {
		t.Errorf("browser's second message = %q; want the marker (the first delivered once)", got.ID)
	}

	if _, err := c.Emit(ctx, "E", nil, client.WithIdempotencyKey("bad\x01key")); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Emit with an invalid key = %v; want code %v", err, codes.InvalidArgument)
	}
}

// TestEmitAcrossRestart emits while the node is down: Emit retries until
// the node is back, then succeeds.
func TestEmitAcrossRestart(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	addr := freeport.Addr(t)
	a := startNode(t, server.Config{GRPCAddr: addr})
	c := dial(t, addr)
	if _, err := c.Emit(ctx, "E", "before"); err != nil {
		t.Fatalf("Emit before the restart: %v", err)
	}
	a.stop(t)

	type result struct {
		res client.EmitResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := c.Emit(ctx, "E", "during", client.WithIdempotencyKey("restart-1"))
		done <- result{res, err}
	}()
	time.Sleep(200 * time.Millisecond) // let a few attempts fail
	select {
	case r := <-done:
		t.Fatalf("Emit with the node down returned %+v, %v; want it to retry", r.res, r.err)
	default:
	}
	startNodeRetry(t, ctx, server.Config{GRPCAddr: addr})
	select {
	case r := <-done:
		if r.err != nil || r.res.ID != "restart-1" || r.res.Duplicate {
			t.Errorf("Emit across the restart = %+v, %v; want id restart-1, not a duplicate", r.res, r.err)
		}
	case <-ctx.Done():
		t.Fatal("Emit did not return after the node came back")
	}

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	dead := dial(t, freeport.Addr(t))
	if _, err := dead.Emit(short, "E", nil); status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Emit to nobody until its deadline = %v; want UNAVAILABLE or DEADLINE_EXCEEDED", err)
	}
}

// TestWatchFollowsActiveNode watches through a client that knows both the
// primary and its standby (as nginx would route): the watch ends up on
// whichever node serves, across a fail-over and a hand-back.
func TestWatchFollowsActiveNode(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	pAddr := freeport.Addr(t)
	p := startNode(t, server.Config{GRPCAddr: pAddr})
	s := startNode(t, server.Config{PrimaryAddr: pAddr, HandBackSpread: 200 * time.Millisecond})

	r := manual.NewBuilderWithScheme("failover")
	r.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: pAddr}, {Addr: s.GRPCAddr()}}})
	c := dial(t, "failover:///nodes", client.WithDialOptions(
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
	))
	w := startWatch(t, ctx, c, "")
	b := dialBrowser(t, ctx, p.HTTPAddr())
	w.waitFor(t, 1) // on the primary: the passive standby refuses

	b.c.CloseNow() // it would not answer the primary's close handshake
	p.stop(t)
	waitReady(t, ctx, s)
	dialBrowser(t, ctx, s.HTTPAddr())
	dialBrowser(t, ctx, s.HTTPAddr())
	w.waitFor(t, 2) // on the standby

	p2 := startNodeRetry(t, ctx, server.Config{GRPCAddr: pAddr})
	for range 3 {
		dialBrowser(t, ctx, p2.HTTPAddr())
	}
	w.waitFor(t, 3) // back on the primary, the standby's browsers handed back
	if !w.running() {
		t.Fatalf("Watch returned: %v", w.err)
	}
}

// waitReady polls the node's /readyz until it answers 200.
func waitReady(t *testing.T, ctx context.Context, n *node) {
	t.Helper()
	for {
		code, _ := httpGet(ctx, "http://"+n.HTTPAddr()+"/readyz")
		if code == 200 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("node %s not ready: last status %d", n.HTTPAddr(), code)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// httpGet returns the status of GET url, without keeping the connection.
func httpGet(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
