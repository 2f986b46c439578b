package server

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/pkg/control"
)

const serviceName = "switchboard.v1.SwitchboardService"

// listServices asks the reflection service of conn for its services.
func listServices(ctx context.Context, conn *grpc.ClientConn) ([]string, error) {
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	defer stream.CloseSend()
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	if e := resp.GetErrorResponse(); e != nil {
		return nil, fmt.Errorf("reflection error %d: %s", e.GetErrorCode(), e.GetErrorMessage())
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names, nil
}

// TestReflectionAndHealth checks that grpcurl's needs are served: the
// service list by reflection and SERVING health while running.
func TestReflectionAndHealth(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	names, err := listServices(ctx, n.conn)
	if err != nil {
		t.Fatalf("reflection ListServices: got %v; want nil", err)
	}
	for _, want := range []string{serviceName, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection services: got %v; want %s among them", names, want)
		}
	}

	health := healthpb.NewHealthClient(n.conn)
	for _, svc := range []string{"", serviceName} {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health Check(%q): got %v, %v; want SERVING", svc, resp.GetStatus(), err)
		}
	}
	_, err = health.Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	if got := status.Code(err); got != codes.NotFound {
		t.Errorf("health Check of an unknown service: got %v; want %v", got, codes.NotFound)
	}
}

// TestAuth checks the API token: every API call needs it, health and
// reflection do not.
func TestAuth(t *testing.T) {
	t.Parallel()
	const token = "s3cret-token"
	n := startNode(t, Config{APIToken: token})

	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"EmitMessage", func(ctx context.Context) error {
			_, err := n.api.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E"})
			return err
		}},
		{"GetOnlineCount", func(ctx context.Context) error {
			_, err := n.api.GetOnlineCount(ctx, &switchboardv1.GetOnlineCountRequest{})
			return err
		}},
		{"WatchCount", func(ctx context.Context) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			stream, err := n.api.WatchCount(ctx, &switchboardv1.WatchCountRequest{})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}},
	}
	creds := []struct {
		name string
		ctx  func(context.Context) context.Context
		want codes.Code
	}{
		{"no token", func(ctx context.Context) context.Context { return ctx }, codes.Unauthenticated},
		{"wrong token", func(ctx context.Context) context.Context { return bearer(ctx, "wrong") }, codes.Unauthenticated},
		{"token prefix", func(ctx context.Context) context.Context { return bearer(ctx, token[:4]) }, codes.Unauthenticated},
		{"right token", func(ctx context.Context) context.Context { return bearer(ctx, token) }, codes.OK},
	}
	for _, c := range calls {
		for _, cr := range creds {
			t.Run(c.name+"/"+cr.name, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				defer cancel()
				if got := status.Code(c.call(cr.ctx(ctx))); got != cr.want {
					t.Errorf("got %v; want %v", got, cr.want)
				}
			})
		}
	}

	t.Run("health and reflection without a token", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		resp, err := healthpb.NewHealthClient(n.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: serviceName})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health Check: got %v, %v; want SERVING", resp.GetStatus(), err)
		}
		if _, err := listServices(ctx, n.conn); err != nil {
			t.Errorf("reflection: got %v; want nil", err)
		}
	})
}

// nested returns depth lists nested in each other around inner.
func nested(depth int, inner *structpb.Value) *structpb.Value {
	v := inner
	for range depth {
		v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})
	}
	return v
}

// TestBadRequests checks that invalid input is INVALID_ARGUMENT and that
// the server keeps serving.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	b := n.dialReading(t)
	n.waitCount(t, "", 1)

	emit := func(req *switchboardv1.EmitMessageRequest) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := n.api.EmitMessage(ctx, req)
			return err
		}
	}
	big := strings.Repeat("x", control.DefaultMaxDataBytes)
	tests := []struct {
		name string
		call func(context.Context) error
	}{
		{"empty event", emit(&switchboardv1.EmitMessageRequest{})},
		{"event too long", emit(&switchboardv1.EmitMessageRequest{Event: strings.Repeat("e", control.MaxEventLen+1)})},
		{"event with a space", emit(&switchboardv1.EmitMessageRequest{Event: "Show Message"})},
		{"event with a newline", emit(&switchboardv1.EmitMessageRequest{Event: "Show\nMessage"})},
		{"channel with a space", emit(&switchboardv1.EmitMessageRequest{Event: "E", Channel: "a b"})},
		{"channel too long", emit(&switchboardv1.EmitMessageRequest{Event: "E", Channel: strings.Repeat("c", 129)})},
		{"NaN", emit(&switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewNumberValue(math.NaN())})},
		{"infinity", emit(&switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewNumberValue(math.Inf(-1))})},
		{"NaN deep in a struct", emit(&switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewStructValue(&structpb.Struct{
			Fields: map[string]*structpb.Value{"a": nested(3, structpb.NewNumberValue(math.NaN()))},
		})})},
		{"too deep", emit(&switchboardv1.EmitMessageRequest{Event: "E", Data: nested(control.MaxDataDepth+1, structpb.NewNullValue())})},
		{"too deep, empty", emit(&switchboardv1.EmitMessageRequest{Event: "E", Data: nested(control.MaxDataDepth+1, structpb.NewListValue(&structpb.ListValue{}))})},
		{"data over MaxDataBytes", emit(&switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewStringValue(big)})},
		{"GetOnlineCount, bad channel", func(ctx context.Context) error {
			_, err := n.api.GetOnlineCount(ctx, &switchboardv1.GetOnlineCountRequest{Channel: "a\tb"})
			return err
		}},
		{"WatchCount, bad channel", func(ctx context.Context) error {
			stream, err := n.api.WatchCount(ctx, &switchboardv1.WatchCountRequest{Channel: "a b"})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}},
	}
	t.Run("group", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				defer cancel()
				err := tc.call(ctx)
				if got := status.Code(err); got != codes.InvalidArgument {
					t.Errorf("got %v (%v); want %v", got, err, codes.InvalidArgument)
				}
			})
		}
	})

	// Data past the gRPC request size limit is refused before it is
	// decoded.
	t.Run("data far over MaxDataBytes", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		err := emit(&switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewStringValue(strings.Repeat(big, 8))})(ctx)
		if got := status.Code(err); got != codes.ResourceExhausted {
			t.Errorf("got %v (%v); want %v", got, err, codes.ResourceExhausted)
		}
	})

	// The limits themselves are fine, and the server still serves.
	ok := []struct {
		name string
		req  *switchboardv1.EmitMessageRequest
	}{
		{"longest event", &switchboardv1.EmitMessageRequest{Event: strings.Repeat("e", control.MaxEventLen)}},
		{"deepest data", &switchboardv1.EmitMessageRequest{Event: "E", Data: nested(control.MaxDataDepth, structpb.NewNullValue())}},
		{"largest data", &switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewStringValue(big[2:])}},
		{"longest channel", &switchboardv1.EmitMessageRequest{Event: "E", Channel: strings.Repeat("c", 128)}},
	}
	for _, tc := range ok {
		n.emit(t, tc.req)
	}
	resp := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "StillServing"})
	if resp.GetRecipients() != 1 {
		t.Errorf("recipients after bad requests: got %d; want 1", resp.GetRecipients())
	}
	b.waitMessage(t, resp.GetId())
	if got := b.badFrames(); len(got) > 0 {
		t.Errorf("browser got unparsable frames: %q", got)
	}
}

// TestDataRoundTrip checks that every kind of JSON value reaches the
// browser as the JSON it stands for.
func TestDataRoundTrip(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	b := n.dialReading(t)
	n.waitCount(t, "", 1)

	mustValue := func(v any) *structpb.Value {
		t.Helper()
		pv, err := structpb.NewValue(v)
		if err != nil {
			t.Fatalf("structpb.NewValue(%v): %v", v, err)
		}
		return pv
	}
	tests := []struct {
		name string
		data *structpb.Value
		want string // exactly, as the browser receives it
	}{
		{"unset", nil, `null`},
		{"null", structpb.NewNullValue(), `null`},
		{"true", structpb.NewBoolValue(true), `true`},
		{"false", structpb.NewBoolValue(false), `false`},
		{"zero", structpb.NewNumberValue(0), `0`},
		{"integer", structpb.NewNumberValue(-42), `-42`},
		{"fraction", structpb.NewNumberValue(1.5), `1.5`},
		{"large", structpb.NewNumberValue(1e21), `1e+21`},
		{"largest exact integer", structpb.NewNumberValue(1 << 53), `9007199254740992`},
		{"small", structpb.NewNumberValue(1e-7), `1e-7`},
		{"string", structpb.NewStringValue("héllo"), `"héllo"`},
		{"string with escapes", structpb.NewStringValue("a\"b\\c\n\t\x01\u2028"), `"a\"b\\c\n\t\u0001\u2028"`},
		{"empty list", mustValue([]any{}), `[]`},
		{"list", mustValue([]any{1, "two", nil, true, []any{}}), `[1,"two",null,true,[]]`},
		{"empty struct", mustValue(map[string]any{}), `{}`},
		{"struct, keys sorted", mustValue(map[string]any{"b": 1, "a": map[string]any{"z": nil, "y": []any{false}}}), `{"a":{"y":[false],"z":null},"b":1}`},
	}
	for _, tc := range tests {
		resp := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "Data", Data: tc.data})
		msgs := b.waitMessage(t, resp.GetId())
		if got := string(msgs[len(msgs)-1].Data); got != tc.want {
			t.Errorf("%s: data: got %s; want %s", tc.name, got, tc.want)
		}
	}
}

// watchRecorder reads a WatchCount stream into memory.
type watchRecorder struct {
	done chan struct{}

	mu     sync.Mutex
	values []int64
	err    error // why the stream ended, once done is closed
}

func recordWatch(stream grpc.ServerStreamingClient[switchboardv1.WatchCountResponse]) *watchRecorder {
	w := &watchRecorder{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			resp, err := stream.Recv()
			w.mu.Lock()
			if err != nil {
				w.err = err
				w.mu.Unlock()
				return
			}
			w.values = append(w.values, resp.GetConnections())
			w.mu.Unlock()
		}
	}()
	return w
}

// got returns the values received so far.
func (w *watchRecorder) got() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.values)
}

// waitLast waits until the last value received is want.
func (w *watchRecorder) waitLast(t testing.TB, want int64) {
	t.Helper()
	eventually(t, waitTimeout, func() (bool, string) {
		v := w.got()
		return len(v) > 0 && v[len(v)-1] == want, fmt.Sprintf("WatchCount values: got %v; want the last to be %d", v, want)
	})
}

// waitEnd waits for the stream to end and returns its error.
func (w *watchRecorder) waitEnd(t testing.TB) error {
	t.Helper()
	select {
	case <-w.done:
		return w.err
	case <-time.After(waitTimeout):
		t.Fatalf("WatchCount stream still open after %v", waitTimeout)
		return nil
	}
}

// TestWatchCount checks the current value at once, then that the last
// value after a burst of connects and disconnects is the true count.
func TestWatchCount(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	first := []*browser{n.dialReading(t), n.dialReading(t)}
	n.waitCount(t, "", 2)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := n.api.WatchCount(ctx, &switchboardv1.WatchCountRequest{})
	if err != nil {
		t.Fatalf("WatchCount: got %v; want nil", err)
	}
	w := recordWatch(stream)
	w.waitLast(t, 2)
	if got := w.got(); got[0] != 2 {
		t.Fatalf("first WatchCount value: got %d; want 2", got[0])
	}

	const burst = 200
	var wg sync.WaitGroup
	browsers := make([]*browser, burst)
	errs := make([]error, burst)
	leave := make([]bool, burst)
	rng := rand.New(rand.NewPCG(3, 4))
	want := int64(1) // first[1] stays
	for i := range leave {
		leave[i] = rng.IntN(3) == 0
		if !leave[i] {
			want++
		}
	}
	dctx, dcancel := context.WithTimeout(context.Background(), waitTimeout)
	defer dcancel()
	for i := range browsers {
		wg.Go(func() {
			b, _, err := dialBrowser(dctx, n.hc, n.ws, nil)
			if err != nil {
				errs[i] = err
				return
			}
			browsers[i] = b
			if leave[i] {
				b.closeNow()
			}
		})
	}
	first[0].closeNow()
	wg.Wait()
	for i, b := range browsers {
		if errs[i] != nil {
			t.Fatalf("dial: got %v; want nil", errs[i])
		}
		t.Cleanup(b.closeNow)
	}
	n.waitCount(t, "", want)
	w.waitLast(t, want)
	t.Logf("WatchCount sent %d values for %d connects and %d disconnects", len(w.got()), burst, burst+2-int(want))

	cancel()
	if got := status.Code(w.waitEnd(t)); got != codes.Canceled {
		t.Errorf("stream end after the caller cancels: got %v; want %v", got, codes.Canceled)
	}
}

// TestWatchCountChannel follows one channel's subscribers.
func TestWatchCountChannel(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	a, b, c := n.dialReading(t), n.dialReading(t), n.dialReading(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := n.api.WatchCount(ctx, &switchboardv1.WatchCountRequest{Channel: "room"})
	if err != nil {
		t.Fatalf("WatchCount: got %v; want nil", err)
	}
	w := recordWatch(stream)
	w.waitLast(t, 0)

	steps := []struct {
		name string
		do   func()
		want int64
	}{
		{"a joins", func() { a.send(t, `{"type":"subscribe","channel":"room"}`) }, 1},
		{"c joins another channel, then b joins", func() {
			c.send(t, `{"type":"subscribe","channel":"hall"}`)
			n.waitCount(t, "hall", 1)
			b.send(t, `{"type":"subscribe","channel":"room"}`)
		}, 2},
		{"a leaves the channel", func() { a.send(t, `{"type":"unsubscribe","channel":"room"}`) }, 1},
		{"b disconnects", b.closeNow, 0},
	}
	for _, s := range steps {
		s.do()
		w.waitLast(t, s.want)
		if got := n.count(t, "room"); got != s.want {
			t.Errorf("%s: GetOnlineCount(room): got %d; want %d", s.name, got, s.want)
		}
	}
	if got, want := w.got(), []int64{0, 1, 2, 1, 0}; !slices.Equal(got, want) {
		t.Errorf("WatchCount(room) values: got %v; want %v", got, want)
	}
}
