package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/switchboard-rt/switchboard/internal/freeport"
	"github.com/switchboard-rt/switchboard/pkg/client"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every wait in these tests; they normally take
// milliseconds.
const testTimeout = 15 * time.Second

func TestEmitReachesBrowser(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := startNode(t, server.Config{})
	c := dial(t, n.GRPCAddr())
	b := dialBrowser(t, ctx, n.HTTPAddr())

	type quote struct {
		Symbol string  `json:"symbol"`
		Price  float64 `json:"price"`
		Note   string  `json:"note,omitempty"`
	}
	tests := []struct {
		name string
		data any
		want string // the data browsers get, as JSON
	}{
		{"nil", nil, `null`},
		{"string", "hi \"there\" \u2028 é", `"hi \"there\" \u2028 é"`},
		{"number", 12.5, `12.5`},
		{"map", map[string]any{"text": "hi", "list": []any{1, 2.5, nil, true, "x"}, "nested": map[string]any{"a": map[string]any{}}},
			`{"list":[1,2.5,null,true,"x"],"nested":{"a":{}},"text":"hi"}`},
		{"struct with tags", quote{Symbol: "ACME", Price: 12.5}, `{"price":12.5,"symbol":"ACME"}`},
		{"raw JSON", json.RawMessage(`{"raw": [1, {"b": false}]}`), `{"raw":[1,{"b":false}]}`},
		{"structpb value", structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("pb")}}), `["pb"]`},
	}
	for _, tt := range tests {
		res, err := c.Emit(ctx, "ShowMessage", tt.data)
		if err != nil {
			t.Fatalf("%s: Emit: %v", tt.name, err)
		}
		if res.ID == "" || res.Recipients != 1 {
			t.Errorf("%s: Emit = %+v; want a non-empty ID and 1 recipient", tt.name, res)
		}
		got := b.nextMessage(ctx)
		if got.ID != res.ID || got.Event != "ShowMessage" || got.Channel != "" {
			t.Errorf("%s: browser got id %q event %q channel %q; want %q %q %q", tt.name, got.ID, got.Event, got.Channel, res.ID, "ShowMessage", "")
		}
		if !jsonEqual(t, got.Data, []byte(tt.want)) {
			t.Errorf("%s: browser got data %s; want %s", tt.name, got.Data, tt.want)
		}
	}
}

func TestEmitToChannel(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := startNode(t, server.Config{})
	c := dial(t, n.GRPCAddr())
	sub := dialBrowser(t, ctx, n.HTTPAddr())
	other := dialBrowser(t, ctx, n.HTTPAddr())
	sub.subscribe(ctx, "quotes")
	waitCount(t, ctx, c, "quotes", 1)

	res, err := c.Emit(ctx, "Quote", map[string]any{"symbol": "ACME"}, client.ToChannel("quotes"))
	if err != nil {
		t.Fatalf("Emit to channel: %v", err)
	}
	if res.Recipients != 1 {
		t.Errorf("Emit to channel: recipients = %d; want 1", res.Recipients)
	}
	all, err := c.Emit(ctx, "Ping", nil)
	if err != nil {
		t.Fatalf("Emit to everyone: %v", err)
	}
	if all.Recipients != 2 {
		t.Errorf("Emit to everyone: recipients = %d; want 2", all.Recipients)
	}

	got := sub.nextMessage(ctx)
	if got.ID != res.ID || got.Event != "Quote" || got.Channel != "quotes" || !jsonEqual(t, got.Data, []byte(`{"symbol":"ACME"}`)) {
		t.Errorf("subscriber got %+v; want the quote %s on channel quotes", got, res.ID)
	}
	if got := sub.nextMessage(ctx); got.ID != all.ID {
		t.Errorf("subscriber's second message = %q; want the broadcast %q", got.ID, all.ID)
	}
	// Messages arrive in emit order, so a non-subscriber's first message
	// being the broadcast proves the quote skipped it.
	if got := other.nextMessage(ctx); got.ID != all.ID {
		t.Errorf("non-subscriber's first message = %q (event %q); want the broadcast %q", got.ID, got.Event, all.ID)
	}
}

func TestCount(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := startNode(t, server.Config{})
	c := dial(t, n.GRPCAddr())

	if got, err := c.Count(ctx, ""); err != nil || got != 0 {
		t.Fatalf("Count before any browser = %d, %v; want 0, nil", got, err)
	}
	b1 := dialBrowser(t, ctx, n.HTTPAddr())
	dialBrowser(t, ctx, n.HTTPAddr())
	waitCount(t, ctx, c, "", 2)
	b1.subscribe(ctx, "quotes")
	waitCount(t, ctx, c, "quotes", 1)
	if got, err := c.Count(ctx, "other"); err != nil || got != 0 {
		t.Errorf("Count(other) = %d, %v; want 0, nil", got, err)
	}
	b1.c.Close(websocket.StatusNormalClosure, "")
	waitCount(t, ctx, c, "", 1)
	waitCount(t, ctx, c, "quotes", 0)
}

func TestEmitConcurrently(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := startNode(t, server.Config{})
	c := dial(t, n.GRPCAddr())
	b := dialBrowser(t, ctx, n.HTTPAddr())

	const emitters = 50
	ids := make(chan string, emitters)
	var wg sync.WaitGroup
	for i := range emitters {
		wg.Go(func() {
			res, err := c.Emit(ctx, "Tick", map[string]int{"i": i})
			if err != nil {
				t.Errorf("Emit %d: %v", i, err)
				return
			}
			ids <- res.ID
		})
	}
	wg.Wait()
	close(ids)
	sent := make(map[string]bool)
	for id := range ids {
		if sent[id] {
			t.Errorf("id %q returned twice", id)
		}
		sent[id] = true
	}
	if len(sent) != emitters {
		t.Fatalf("got %d unique ids; want %d", len(sent), emitters)
	}
	for range emitters {
		m := b.nextMessage(ctx)
		if !sent[m.ID] {
			t.Errorf("browser got unknown or repeated id %q", m.ID)
		}
		delete(sent, m.ID)
	}
}

func TestToken(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := startNode(t, server.Config{APIToken: "s3cret"})

	for _, tt := range []struct {
		name string
		opts []client.Option
	}{
		{"no token", nil},
		{"empty token", []client.Option{client.WithToken("")}},
		{"wrong token", []client.Option{client.WithToken("guess")}},
	} {
		c := dial(t, n.GRPCAddr(), tt.opts...)
		_, err := c.Emit(ctx, "ShowMessage", "hi")
		if got := status.Code(err); got != codes.Unauthenticated {
			t.Errorf("%s: Emit error = %v (code %v); want code %v", tt.name, err, got, codes.Unauthenticated)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "failed to emit: ") {
			t.Errorf("%s: Emit error = %q; want it to start with %q", tt.name, err, "failed to emit: ")
		}
		if _, err := c.Count(ctx, ""); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: Count error = %v; want code %v", tt.name, err, codes.Unauthenticated)
		}
		// Retrying cannot fix a token: Watch must give up at once.
		err = c.Watch(ctx, "", func(int64) { t.Errorf("%s: Watch called fn without a valid token", tt.name) })
		if got := status.Code(err); got != codes.Unauthenticated || ctx.Err() != nil {
			t.Errorf("%s: Watch error = %v (code %v); want code %v before the deadline", tt.name, err, got, codes.Unauthenticated)
		}
	}

	c := dial(t, n.GRPCAddr(), client.WithToken("s3cret"))
	if _, err := c.Emit(ctx, "ShowMessage", "hi"); err != nil {
		t.Errorf("Emit with the token: %v", err)
	}
	if _, err := c.Count(ctx, ""); err != nil {
		t.Errorf("Count with the token: %v", err)
	}
}

func TestInvalidInput(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := startNode(t, server.Config{MaxDataBytes: 1024})
	c := dial(t, n.GRPCAddr())

	tests := []struct {
		name    string
		event   string
		data    any
		opts    []client.EmitOption
		wantErr any // an error type the error must also unwrap to, or nil
	}{
		{name: "empty event", event: "", data: "x"},
		{name: "event with a space", event: "Show Message", data: "x"},
		{name: "channel value", event: "E", data: make(chan int), wantErr: new(*json.UnsupportedTypeError)},
		{name: "func value", event: "E", data: map[string]any{"f": func() {}}, wantErr: new(*json.UnsupportedTypeError)},
		{name: "NaN", event: "E", data: math.NaN(), wantErr: new(*json.UnsupportedValueError)},
		{name: "nested infinity", event: "E", data: []any{1, map[string]float64{"x": math.Inf(1)}}, wantErr: new(*json.UnsupportedValueError)},
		{name: "NaN in a structpb value", event: "E", data: structpb.NewNumberValue(math.NaN())},
		{name: "invalid raw JSON", event: "E", data: json.RawMessage(`{"a":`)},
		{name: "oversized data", event: "E", data: strings.Repeat("x", 2048)},
		{name: "invalid channel", event: "E", data: 1, opts: []client.EmitOption{client.ToChannel("a b")}},
	}
	for _, tt := range tests {
		_, err := c.Emit(ctx, tt.event, tt.data, tt.opts...)
		if got := status.Code(err); got != codes.InvalidArgument {
			t.Errorf("%s: Emit error = %v (code %v); want code %v", tt.name, err, got, codes.InvalidArgument)
			continue
		}
		if !strings.HasPrefix(err.Error(), "failed to emit: ") {
			t.Errorf("%s: Emit error = %q; want it to start with %q", tt.name, err, "failed to emit: ")
		}
		if tt.wantErr != nil && !errors.As(err, tt.wantErr) {
			t.Errorf("%s: Emit error = %v; want it to unwrap to %T", tt.name, err, tt.wantErr)
		}
	}
	if _, err := c.Count(ctx, "a b"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Count(invalid channel) error = %v; want code %v", err, codes.InvalidArgument)
	}
	err := c.Watch(ctx, "a b", func(int64) { t.Error("Watch(invalid channel) called fn") })
	if status.Code(err) != codes.InvalidArgument || ctx.Err() != nil {
		t.Errorf("Watch(invalid channel) error = %v; want code %v before the deadline", err, codes.InvalidArgument)
	}
	// The node is unharmed.
	if _, err := c.Emit(ctx, "E", "ok"); err != nil {
		t.Errorf("Emit after invalid input: %v", err)
	}
}

func TestWatch(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := startNode(t, server.Config{})
	c := dial(t, n.GRPCAddr())

	all := startWatch(t, ctx, c, "")
	quotes := startWatch(t, ctx, c, "quotes")
	if got := all.next(t); got != 0 {
		t.Fatalf("Watch's first value = %d; want 0", got)
	}
	if got := quotes.next(t); got != 0 {
		t.Fatalf("Watch(quotes)'s first value = %d; want 0", got)
	}
	b1 := dialBrowser(t, ctx, n.HTTPAddr())
	all.waitFor(t, 1)
	b2 := dialBrowser(t, ctx, n.HTTPAddr())
	all.waitFor(t, 2)
	b2.subscribe(ctx, "quotes")
	quotes.waitFor(t, 1)
	b1.c.Close(websocket.StatusNormalClosure, "")
	all.waitFor(t, 1)
	b2.c.Close(websocket.StatusNormalClosure, "")
	all.waitFor(t, 0)
	quotes.waitFor(t, 0)

	all.stop()
	if err := all.wait(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch after its context ended = %v; want %v", err, context.Canceled)
	}
	quotes.stop()
	if err := quotes.wait(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch(quotes) after its context ended = %v; want %v", err, context.Canceled)
	}
}

func TestWatchSurvivesRestart(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	addr := freeport.Addr(t)
	a := startNode(t, server.Config{GRPCAddr: addr})
	logs := make(chan string, 100)
	c := dial(t, addr, client.WithLogger(notifyLogger(t, logs)))

	w := startWatch(t, ctx, c, "")
	if got := w.next(t); got != 0 {
		t.Fatalf("Watch's first value = %d; want 0", got)
	}
	// Show the stream is live on A before A goes.
	b := dialBrowser(t, ctx, a.HTTPAddr())
	w.waitFor(t, 1)
	b.c.Close(websocket.StatusNormalClosure, "")
	w.waitFor(t, 0)

	a.stop(t)
	waitLog(t, w, logs, "count watch interrupted; reconnecting")
	bNode := startNodeRetry(t, ctx, server.Config{GRPCAddr: addr})
	dialBrowser(t, ctx, bNode.HTTPAddr())
	w.waitFor(t, 1)
	if !w.running() {
		t.Fatalf("Watch returned during the restart: %v", w.err)
	}
	w.stop()
	if err := w.wait(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch after its context ended = %v; want %v", err, context.Canceled)
	}
}

func TestWatchWaitsForNode(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	addr := freeport.Addr(t)
	logs := make(chan string, 100)
	c := dial(t, addr, client.WithLogger(notifyLogger(t, logs)))
	if _, err := c.Count(ctx, ""); status.Code(err) != codes.Unavailable {
		t.Fatalf("Count with no node = %v; want code %v", err, codes.Unavailable)
	}

	w := startWatch(t, ctx, c, "")
	waitLog(t, w, logs, "count watch interrupted; reconnecting")
	startNodeRetry(t, ctx, server.Config{GRPCAddr: addr})
	if got := w.next(t); got != 0 {
		t.Errorf("Watch's first value once the node is up = %d; want 0", got)
	}
	w.stop()
	if err := w.wait(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch after its context ended = %v; want %v", err, context.Canceled)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := startNode(t, server.Config{})
	c, err := client.Dial(n.GRPCAddr(), client.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	w := startWatch(t, ctx, c, "")
	if got := w.next(t); got != 0 {
		t.Fatalf("Watch's first value = %d; want 0", got)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := w.wait(t); err == nil || ctx.Err() != nil {
		t.Errorf("Watch after Close = %v; want an error before the deadline", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v; want nil", err)
	}
	if _, err := c.Emit(ctx, "E", nil); err == nil {
		t.Error("Emit after Close succeeded; want an error")
	}
}

func TestDialEmptyTarget(t *testing.T) {
	t.Parallel()
	if c, err := client.Dial(""); err == nil {
		c.Close()
		t.Error("Dial(\"\") succeeded; want an error")
	}
}

// node is an in-process Switchboard node on loopback.
type node struct {
	*server.Server
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startNode starts a node with cfg on 127.0.0.1:0 ports unless cfg names
// them, and stops it when the test ends.
func startNode(t *testing.T, cfg server.Config) *node {
	t.Helper()
	n, err := newNode(t, cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	return n
}

// startNodeRetry is startNode for a fixed address just freed, which the
// kernel may take a moment to give back.
func startNodeRetry(t *testing.T, ctx context.Context, cfg server.Config) *node {
	t.Helper()
	for {
		n, err := newNode(t, cfg)
		if err == nil {
			return n
		}
		if ctx.Err() != nil {
			t.Fatalf("server.New: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newNode(t *testing.T, cfg server.Config) (*node, error) {
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:0"
	}
	cfg.DrainSpread = time.Millisecond
	cfg.Logger = testLogger(t)
	srv, err := server.New(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{Server: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- srv.Run(ctx) }()
	t.Cleanup(func() { n.stop(t) })
	return n, nil
}

// stop shuts the node down and waits for Run to return.
func (n *node) stop(t *testing.T) {
	t.Helper()
	n.once.Do(func() {
		n.cancel()
		select {
		case err := <-n.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(testTimeout):
			t.Errorf("Run did not return within %v of its context ending", testTimeout)
		}
	})
}

func dial(t *testing.T, target string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.Dial(target, append([]client.Option{client.WithLogger(testLogger(t))}, opts...)...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// waitCount polls Count until it returns want.
func waitCount(t *testing.T, ctx context.Context, c *client.Client, channel string, want int64) {
	t.Helper()
	for {
		got, err := c.Count(ctx, channel)
		if err == nil && got == want {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("Count(%q) = %d, %v; want %d", channel, got, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// watch is a Watch running in its own goroutine.
type watch struct {
	values chan int64
	done   chan struct{} // closed when Watch has returned err
	err    error
	stop   context.CancelFunc
}

func startWatch(t *testing.T, ctx context.Context, c *client.Client, channel string) *watch {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	w := &watch{values: make(chan int64, 1000), done: make(chan struct{}), stop: cancel}
	go func() {
		defer close(w.done)
		w.err = c.Watch(ctx, channel, func(n int64) { w.values <- n })
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

// next returns the next value fn got.
func (w *watch) next(t *testing.T) int64 {
	t.Helper()
	select {
	case n := <-w.values:
		return n
	case <-w.done:
		t.Fatalf("Watch returned %v; want it to keep watching", w.err)
	case <-time.After(testTimeout):
		t.Fatalf("Watch reported nothing within %v", testTimeout)
	}
	return 0
}

// waitFor reads values until want; coalescing may skip the ones between.
func (w *watch) waitFor(t *testing.T, want int64) {
	t.Helper()
	deadline := time.After(testTimeout)
	last := int64(-1)
	for {
		select {
		case n := <-w.values:
			if n == last {
				t.Errorf("Watch reported %d twice in a row", n)
			}
			if n == want {
				return
			}
			last = n
		case <-w.done:
			t.Fatalf("Watch returned %v while waiting for %d", w.err, want)
		case <-deadline:
			t.Fatalf("Watch did not report %d within %v (last %d)", want, testTimeout, last)
		}
	}
}

// running reports whether Watch has not returned.
func (w *watch) running() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

// wait returns what Watch returned.
func (w *watch) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-w.done:
		return w.err
	case <-time.After(testTimeout):
		t.Fatalf("Watch did not return within %v", testTimeout)
		return nil
	}
}

// browser is a WebSocket client as a browser would be.
type browser struct {
	t *testing.T
	c *websocket.Conn
}

type wsFrame struct {
	Type        string          `json:"type"`
	Connections int64           `json:"connections"`
	ID          string          `json:"id"`
	Event       string          `json:"event"`
	Channel     string          `json:"channel"`
	Data        json.RawMessage `json:"data"`
}

// dialBrowser connects to the node's /ws and reads the first frames, which
// must be the welcome and a count; the node then counts the connection.
func dialBrowser(t *testing.T, ctx context.Context, httpAddr string) *browser {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws://"+httpAddr+"/ws", nil)
	if err != nil {
		t.Fatalf("websocket.Dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	b := &browser{t: t, c: c}
	if f := b.next(ctx); f.Type != "welcome" {
		t.Fatalf("first frame type = %q; want welcome", f.Type)
	}
	if f := b.next(ctx); f.Type != "count" {
		t.Fatalf("second frame type = %q; want count", f.Type)
	}
	return b
}

func (b *browser) next(ctx context.Context) wsFrame {
	b.t.Helper()
	typ, p, err := b.c.Read(ctx)
	if err != nil {
		b.t.Fatalf("read frame: %v", err)
	}
	var f wsFrame
	if typ != websocket.MessageText || json.Unmarshal(p, &f) != nil {
		b.t.Fatalf("got frame %s (%v); want a JSON text frame", p, typ)
	}
	return f
}

// nextMessage skips count frames and returns the next message frame.
func (b *browser) nextMessage(ctx context.Context) wsFrame {
	b.t.Helper()
	for {
		if f := b.next(ctx); f.Type == "message" {
			return f
		}
	}
}

func (b *browser) subscribe(ctx context.Context, channel string) {
	b.t.Helper()
	msg := fmt.Sprintf(`{"type":"subscribe","channel":%q}`, channel)
	if err := b.c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		b.t.Fatalf("subscribe: %v", err)
	}
}

func jsonEqual(t *testing.T, got, want []byte) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("invalid JSON %s: %v", got, err)
		return false
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("invalid JSON %s: %v", want, err)
	}
	return reflect.DeepEqual(g, w)
}

// testLogger returns a logger writing to the test's output until the test
// ends; later records (from goroutines still winding down) are dropped.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{w: t.Output()}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	w    io.Writer
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	return w.w.Write(p)
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// notifyLogger is testLogger that also sends each message to ch.
func notifyLogger(t *testing.T, ch chan<- string) *slog.Logger {
	return slog.New(notifyHandler{testLogger(t).Handler(), ch})
}

type notifyHandler struct {
	slog.Handler
	ch chan<- string
}

func (h notifyHandler) Handle(ctx context.Context, r slog.Record) error {
	select {
	case h.ch <- r.Message:
	default:
	}
	return h.Handler.Handle(ctx, r)
}

// waitLog waits for a log message from w's Watch.
func waitLog(t *testing.T, w *watch, logs <-chan string, want string) {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		select {
		case m := <-logs:
			if m == want {
				return
			}
		case <-w.done:
			t.Fatalf("Watch returned %v while waiting for log %q", w.err, want)
		case <-deadline:
			t.Fatalf("no log %q within %v", want, testTimeout)
		}
	}
}
