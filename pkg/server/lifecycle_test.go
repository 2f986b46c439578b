package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// TestNewAddressPolicy checks that the gRPC API is not opened beyond
// loopback without a token unless asked to.
func TestNewAddressPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     Config
		wantErr error // nil: New succeeds
	}{
		{"loopback, no token", Config{GRPCAddr: "127.0.0.1:0"}, nil},
		{"localhost, no token", Config{GRPCAddr: "localhost:0"}, nil},
		{"IPv6 loopback, no token", Config{GRPCAddr: "[::1]:0"}, nil},
		{"any address, no token", Config{GRPCAddr: "0.0.0.0:0"}, ErrInsecure},
		{"empty host, no token", Config{GRPCAddr: ":0"}, ErrInsecure},
		{"any address, insecure", Config{GRPCAddr: "0.0.0.0:0", Insecure: true}, nil},
		{"any address, token", Config{GRPCAddr: "0.0.0.0:0", APIToken: "t"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if strings.HasPrefix(tc.cfg.GRPCAddr, "[::1]") {
				ln, err := net.Listen("tcp", "[::1]:0")
				if err != nil {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				ln.Close()
			}
			tc.cfg.HTTPAddr = "127.0.0.1:0"
			tc.cfg.Logger = testLogger(t, 0)
			srv, err := New(tc.cfg)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("New(%+v): got %v; want %v", tc.cfg, err, tc.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "SWITCHBOARD_API_TOKEN") {
					t.Errorf("error %q: want it to say how to fix it", err)
				}
				return
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := srv.Run(ctx); err != nil {
				t.Errorf("Run with a canceled context: got %v; want nil", err)
			}
		})
	}

	t.Run("invalid address", func(t *testing.T) {
		t.Parallel()
		_, err := New(Config{HTTPAddr: "127.0.0.1:0", GRPCAddr: "no-port", Logger: testLogger(t, 0)})
		if err == nil {
			t.Errorf("New with GRPCAddr %q: got nil; want an error", "no-port")
		}
	})
	t.Run("address in use", func(t *testing.T) {
		t.Parallel()
		n := startNode(t, Config{})
		_, err := New(Config{HTTPAddr: n.srv.HTTPAddr(), GRPCAddr: "127.0.0.1:0", Logger: testLogger(t, 0)})
		if err == nil {
			t.Errorf("New on a busy HTTP address: got nil; want an error")
		}
	})
}

// TestProbes checks /healthz, /readyz and /metrics while serving.
func TestProbes(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	n.dialReading(t).waitCount(t, 1)
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, err := n.get(path); code != http.StatusOK {
			t.Errorf("GET %s: got %d, %v; want 200", path, code, err)
		}
	}
	resp, err := n.hc.Get(n.http + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "\nswitchboard_connections 1\n") || !strings.Contains(string(body), "\nswitchboard_visitors 1\n") {
		t.Errorf("/metrics: got %s; want switchboard_connections 1 and switchboard_visitors 1", body)
	}
	resp, err = n.hc.Get(n.http + "/client.js")
	if err != nil {
		t.Fatalf("GET /client.js: %v", err)
	}
	js, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(js) == 0 || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
		t.Errorf("GET /client.js: got %d, %q, %d bytes; want 200, a JavaScript type and the script", resp.StatusCode, resp.Header.Get("Content-Type"), len(js))
	}
	if code, _ := n.get("/nope"); code != http.StatusNotFound {
		t.Errorf("GET /nope: got %d; want 404", code)
	}
}

// blocker is a gRPC service whose one method waits until released, to
// hold a unary call in flight across a shutdown.
type blocker struct {
	entered chan struct{}
	release chan struct{}
}

func newBlocker() *blocker {
	return &blocker{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

const blockMethod = "/switchboard.test.Blocker/Block"

func (b *blocker) register(s *Server) {
	s.grpcSrv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "switchboard.test.Blocker",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Block",
			Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
				in := new(emptypb.Empty)
				if err := dec(in); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, _ any) (any, error) {
					b.entered <- struct{}{}
					select {
					case <-b.release:
						return &emptypb.Empty{}, nil
					case <-ctx.Done():
						return nil, status.FromContextError(ctx.Err()).Err()
					}
				}
				if ic == nil {
					return h(ctx, in)
				}
				return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: blockMethod}, h)
			},
		}},
	}, b)
}

// TestGracefulShutdown follows a node from ctx cancel to Run's return:
// readiness and health go NOT_SERVING, every browser gets 1001 with a
// reason, WatchCount ends with UNAVAILABLE, new upgrades get 503, an
// in-flight unary call finishes, and Run returns nil in time.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 10 * time.Second
	blk := newBlocker()
	n := startNode(t, Config{ShutdownTimeout: shutdownTimeout, DrainSpread: 200 * time.Millisecond}, blk.register)
	var browsers []*browser
	for range 10 {
		browsers = append(browsers, n.dialReading(t))
	}
	n.waitCount(t, "", 10)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch, err := n.api.WatchCount(ctx, &switchboardv1.WatchCountRequest{})
	if err != nil {
		t.Fatalf("WatchCount: got %v; want nil", err)
	}
	w := recordWatch(watch)
	w.waitLast(t, 10)
	hw, err := healthpb.NewHealthClient(n.conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: serviceName})
	if err != nil {
		t.Fatalf("health Watch: got %v; want nil", err)
	}
	if resp, err := hw.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Watch first status: got %v, %v; want SERVING", resp.GetStatus(), err)
	}

	// A unary call in flight when the shutdown starts.
	var wg sync.WaitGroup
	var callErr error
	wg.Go(func() {
		callErr = n.conn.Invoke(context.Background(), blockMethod, &emptypb.Empty{}, &emptypb.Empty{})
	})
	<-blk.entered

	n.cancel()
	stopped := time.Now()

	// Health goes NOT_SERVING and the health stream then ends.
	resp, err := hw.Recv()
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health Watch after cancel: got %v, %v; want NOT_SERVING", resp.GetStatus(), err)
	}
	// Every browser gets a going-away close with a reason.
	for i, b := range browsers {
		err := b.waitClosed(t, waitTimeout)
		ce, ok := closeError(err)
		if !ok || ce.Code != websocket.StatusGoingAway || ce.Reason == "" {
			t.Errorf("browser %d: got %v; want close 1001 with a reason", i, err)
		}
	}
	// WatchCount ends with UNAVAILABLE, so its caller reconnects elsewhere.
	if got := status.Code(w.waitEnd(t)); got != codes.Unavailable {
		t.Errorf("WatchCount end: got %v (%v); want %v", got, w.err, codes.Unavailable)
	}
	// While the unary call holds the gRPC server open, the HTTP side is
	// draining: not ready, still alive, no new browsers.
	if code, err := n.get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz while draining: got %d, %v; want 503", code, err)
	}
	if code, err := n.get("/healthz"); code != http.StatusOK {
		t.Errorf("GET /healthz while draining: got %d, %v; want 200", code, err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), waitTimeout)
	b, dresp, err := dialBrowser(dctx, n.hc, n.ws, nil)
	dcancel()
	if b != nil {
		b.closeNow()
		t.Errorf("upgrade while draining: got a connection; want 503")
	} else if dresp == nil || dresp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("upgrade while draining: got %v, %v; want 503", dresp, err)
	}
	select {
	case <-n.done:
		t.Fatalf("Run returned before the in-flight call finished")
	default:
	}

	// The in-flight call finishes normally, then Run returns nil in time.
	close(blk.release)
	wg.Wait()
	if callErr != nil {
		t.Errorf("in-flight unary call: got %v; want nil", callErr)
	}
	select {
	case <-n.done:
	case <-time.After(shutdownTimeout + waitTimeout):
		t.Fatalf("Run did not return")
	}
	took := time.Since(stopped)
	if n.runErr != nil {
		t.Errorf("Run: got %v; want nil", n.runErr)
	}
	if took > shutdownTimeout {
		t.Errorf("Run returned %v after cancel; want within ShutdownTimeout %v", took, shutdownTimeout)
	}
	t.Logf("graceful shutdown took %v", took.Round(time.Millisecond))
}

// TestShutdownHealthWatch checks that an open health Watch stream, as a
// standby or a client-side health check keeps, sees NOT_SERVING and does
// not hold the shutdown until ShutdownTimeout.
func TestShutdownHealthWatch(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 10 * time.Second
	n := startNode(t, Config{ShutdownTimeout: shutdownTimeout})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var streams []grpc.ServerStreamingClient[healthpb.HealthCheckResponse]
	for _, svc := range []string{"", serviceName, "no.such.Service"} {
		hw, err := healthpb.NewHealthClient(n.conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("health Watch(%q): got %v; want nil", svc, err)
		}
		if _, err := hw.Recv(); err != nil {
			t.Fatalf("health Watch(%q) first status: got %v; want nil", svc, err)
		}
		streams = append(streams, hw)
	}

	start := time.Now()
	if err := n.stop(t); err != nil {
		t.Errorf("Run: got %v; want nil", err)
	}
	took := time.Since(start)
	t.Logf("shutdown with open health Watch streams took %v", took.Round(time.Millisecond))
	if took > shutdownTimeout/2 {
		t.Errorf("shutdown took %v; want well under ShutdownTimeout %v", took, shutdownTimeout)
	}
	for i, hw := range streams {
		var last healthpb.HealthCheckResponse_ServingStatus
		var err error
		for {
			var resp *healthpb.HealthCheckResponse
			if resp, err = hw.Recv(); err != nil {
				break
			}
			last = resp.GetStatus()
		}
		if i < 2 && last != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health Watch %d: last status: got %v; want NOT_SERVING", i, last)
		}
		if got := status.Code(err); got != codes.Unavailable {
			t.Errorf("health Watch %d end: got %v; want %v", i, err, codes.Unavailable)
		}
	}
}

// TestShutdownStalledBrowser checks that browsers that do not take part
// in their goodbye keep Run no longer than ShutdownTimeout: one stopped
// reading with its socket buffers full, so a write is stuck; one stopped
// reading with room left, so the close handshake waits for an answer that
// never comes.
func TestShutdownStalledBrowser(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 2 * time.Second
	// Queues large enough that the browser stalls rather than overflows,
	// and a write timeout and keep-alive far past the shutdown deadline, so
	// that only the shutdown ends these browsers.
	n := startNode(t, Config{
		ShutdownTimeout: shutdownTimeout,
		KeepAlive:       time.Minute,
		MaxDataBytes:    1 << 20,
		Hub:             hub.Config{QueueFrames: 1 << 20, QueueBytes: 1 << 30, WriteTimeout: time.Minute},
	})
	stalled, deaf, reader := n.dial(t), n.dial(t), n.dialReading(t)
	stalled.send(t, `{"type":"subscribe","channel":"fill"}`)
	reader.send(t, `{"type":"subscribe","channel":"fill"}`)
	n.waitCount(t, "fill", 2)
	n.waitCount(t, "", 3)

	// Fill the stalled browser's socket buffers (a few MiB on loopback).
	data := structpb.NewStringValue(strings.Repeat("y", 512<<10))
	var last string
	for range 32 {
		last = n.emit(t, &switchboardv1.EmitMessageRequest{Event: "Fill", Channel: "fill", Data: data}).GetId()
	}
	reader.waitMessage(t, last)
	if got := n.count(t, ""); got != 3 {
		t.Fatalf("count before the shutdown: got %d; want 3 (nobody dropped yet)", got)
	}

	start := time.Now()
	if err := n.stop(t); err != nil {
		t.Errorf("Run: got %v; want nil", err)
	}
	took := time.Since(start)
	t.Logf("shutdown with a stalled and a deaf browser took %v (ShutdownTimeout %v)", took.Round(time.Millisecond), shutdownTimeout)
	// A silent peer holds a close handshake 5 s: a generous bound still
	// tells a cut-off from a wait.
	if took > shutdownTimeout+1500*time.Millisecond {
		t.Errorf("Run returned %v after cancel; want within ShutdownTimeout %v", took, shutdownTimeout)
	}
	if ce, ok := closeError(reader.waitClosed(t, waitTimeout)); !ok || ce.Code != websocket.StatusGoingAway {
		t.Errorf("reading browser: got %v; want close 1001", reader.readErr())
	}
	for name, b := range map[string]*browser{"stalled": stalled, "deaf": deaf} {
		b.read()
		err := b.waitClosed(t, waitTimeout)
		if err == nil {
			t.Errorf("%s browser: got nil; want the connection ended", name)
		}
		t.Logf("%s browser: %v", name, err)
	}
}

// TestShutdownForced checks that a gRPC call that outlives its share of
// ShutdownTimeout is cut off and Run still returns nil in time.
func TestShutdownForced(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = time.Second
	blk := newBlocker()
	n := startNode(t, Config{ShutdownTimeout: shutdownTimeout}, blk.register)
	n.dialReading(t)
	n.waitCount(t, "", 1)
	callErr := make(chan error, 1)
	go func() {
		callErr <- n.conn.Invoke(context.Background(), blockMethod, &emptypb.Empty{}, &emptypb.Empty{})
	}()
	<-blk.entered

	start := time.Now()
	if err := n.stop(t); err != nil {
		t.Errorf("Run: got %v; want nil", err)
	}
	took := time.Since(start)
	t.Logf("shutdown with a call that never ends took %v (ShutdownTimeout %v)", took.Round(time.Millisecond), shutdownTimeout)
	if took > shutdownTimeout+2*time.Second {
		t.Errorf("Run returned %v after cancel; want within ShutdownTimeout %v", took, shutdownTimeout)
	}
	if took < shutdownTimeout/2 {
		t.Errorf("Run returned %v after cancel; want it to wait for the call for most of ShutdownTimeout", took)
	}
	if err := <-callErr; status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		t.Errorf("call cut off by the shutdown: got %v; want UNAVAILABLE or CANCELED", err)
	}
}
