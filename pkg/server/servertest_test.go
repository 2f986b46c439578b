package server

// This file holds the helpers the integration tests share: an in-process
// node on loopback, a browser made of a real WebSocket client and a gRPC
// client.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
)

// waitTimeout bounds every wait for a condition that should hold soon. It
// is generous: the tests run with -race on two busy cores.
const waitTimeout = 15 * time.Second

// eventually polls cond until it returns true, failing the test with what
// cond last said once timeout passes.
func eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %s", timeout, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testLogger returns a logger writing to the test's log until the test
// ends; later lines are dropped instead of panicking.
func testLogger(t testing.TB, level slog.Level) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

// node is one running Switchboard server with clients pointed at it.
type node struct {
	srv    *Server
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returns
	runErr error         // Run's result, once done is closed
	ws     string        // ws://host:port/ws
	http   string        // http://host:port
	hc     *http.Client
	conn   *grpc.ClientConn
	api    switchboardv1.SwitchboardServiceClient
}

type nodeOption func(*Server)

// startNode builds a node from cfg on free loopback ports, runs it until
// the test ends and waits until it is ready. before, if given, runs after
// New and before Run.
func startNode(t testing.TB, cfg Config, before ...nodeOption) *node {
	t.Helper()
	return runNode(t, newNode(t, cfg), plainClients, before...)
}

// newNode builds a node from cfg, on free loopback ports unless cfg says
// otherwise, logging to the test.
func newNode(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t, slog.LevelInfo)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: got %v; want nil", err)
	}
	return srv
}

// clients says how a test's clients reach a node: the URL schemes, the
// HTTP transport and the gRPC dial options.
type clients struct {
	ws, http string
	hc       http.RoundTripper
	grpc     []grpc.DialOption
}

var plainClients = clients{ws: "ws", http: "http"}

// startNodeAt is startNode for fixed addresses just freed, which the
// kernel may take a moment to give back.
func startNodeAt(t testing.TB, cfg Config) *node {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t, slog.LevelInfo)
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		srv, err := New(cfg)
		if err == nil {
			return runNode(t, srv, plainClients)
		}
		if time.Now().After(deadline) {
			t.Fatalf("New: got %v; want nil", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runNode runs srv until the test ends and, unless it is a standby, waits
// until it is ready.
func runNode(t testing.TB, srv *Server, via clients, before ...nodeOption) *node {
	t.Helper()
	for _, fn := range before {
		fn(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{
		srv:    srv,
		cancel: cancel,
		done:   make(chan struct{}),
		ws:     via.ws + "://" + srv.HTTPAddr() + "/ws",
		http:   via.http + "://" + srv.HTTPAddr(),
		hc:     &http.Client{Transport: via.hc, Timeout: waitTimeout},
	}
	if via.hc == nil {
		n.hc.Transport = &http.Transport{}
	}
	go func() {
		n.runErr = srv.Run(ctx)
		close(n.done)
	}()
	t.Cleanup(func() {
		n.stop(t)
		n.hc.CloseIdleConnections()
	})
	n.conn = dialGRPC(t, srv.GRPCAddr(), via.grpc...)
	n.api = switchboardv1.NewSwitchboardServiceClient(n.conn)
	if srv.cfg.PrimaryAddr != "" {
		return n // a standby may well never be ready
	}
	eventually(t, waitTimeout, func() (bool, string) {
		code, err := n.get("/readyz")
		return code == http.StatusOK, fmt.Sprintf("GET /readyz: got %d, %v; want 200", code, err)
	})
	return n
}

// stop cancels the node's context and waits for Run to return.
func (n *node) stop(t testing.TB) error {
	t.Helper()
	n.cancel()
	select {
	case <-n.done:
		return n.runErr
	case <-time.After(n.srv.cfg.ShutdownTimeout + waitTimeout):
		t.Fatalf("Run did not return after cancel")
		return nil
	}
}

// get fetches path from the node's HTTP listener and returns the status.
func (n *node) get(path string) (int, error) {
	resp, err := n.hc.Get(n.http + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// count asks the node over gRPC how many browsers are online in channel.
func (n *node) count(t testing.TB, channel string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := n.api.GetOnlineCount(ctx, &switchboardv1.GetOnlineCountRequest{Channel: channel})
	if err != nil {
		t.Fatalf("GetOnlineCount(%q): got %v; want nil", channel, err)
	}
	return resp.GetConnections()
}

// waitCount waits until GetOnlineCount(channel) returns want.
func (n *node) waitCount(t testing.TB, channel string, want int64) {
	t.Helper()
	eventually(t, waitTimeout, func() (bool, string) {
		got := n.count(t, channel)
		return got == want, fmt.Sprintf("GetOnlineCount(%q): got %d; want %d", channel, got, want)
	})
}

// emit sends one EmitMessage and fails the test on an error.
func (n *node) emit(t testing.TB, req *switchboardv1.EmitMessageRequest) *switchboardv1.EmitMessageResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := n.api.EmitMessage(ctx, req)
	if err != nil {
		t.Fatalf("EmitMessage(%v): got %v; want nil", req, err)
	}
	return resp
}

// dialGRPC returns a client connection to addr closed when the test ends.
func dialGRPC(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatalf("grpc.NewClient(%s): got %v; want nil", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// bearer returns ctx carrying token as an authorization header.
func bearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// frameIn is one frame a browser received.
type frameIn struct {
	Type        string          `json:"type"`
	Connections int64           `json:"connections"`
	ID          string          `json:"id"`
	Event       string          `json:"event"`
	Channel     string          `json:"channel"`
	Data        json.RawMessage `json:"data"`
	Offset      uint64          `json:"offset"`
	Epoch       string          `json:"epoch"`
	Recovered   *bool           `json:"recovered"`
	raw         []byte
}

// browser is a real WebSocket client. Once read is called, a goroutine
// reads every frame, so that pings are answered, and records them.
type browser struct {
	ws     *websocket.Conn
	pings  atomic.Int64
	count  atomic.Int64 // connections in the last count frame; -1 before one
	counts atomic.Int64 // count frames received

	mu       sync.Mutex
	msgs     []frameIn // message frames, in order
	welcomes []frameIn // welcome frames
	bad      []string  // frames that did not parse
	err      error     // why reading ended
	done     chan struct{}
	started  bool
}

// dialBrowser connects to url without failing a test, so that it can run
// outside the test's goroutine.
func dialBrowser(ctx context.Context, hc *http.Client, url string, header http.Header) (*browser, *http.Response, error) {
	b := &browser{done: make(chan struct{})}
	b.count.Store(-1)
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient: hc,
		HTTPHeader: header,
		OnPingReceived: func(context.Context, []byte) bool {
			b.pings.Add(1)
			return true
		},
	})
	if err != nil {
		return nil, resp, err
	}
	ws.SetReadLimit(1 << 20) // browsers take any size; the server bounds data
	b.ws = ws
	return b, resp, nil
}

// dial connects a browser to the node; it is closed when the test ends.
// It does not start reading.
func (n *node) dial(t testing.TB) *browser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	b, _, err := dialBrowser(ctx, n.hc, n.ws, nil)
	if err != nil {
		t.Fatalf("websocket.Dial(%s): got %v; want nil", n.ws, err)
	}
	t.Cleanup(b.closeNow)
	return b
}

// dialReading connects a browser and starts its reader.
func (n *node) dialReading(t testing.TB) *browser {
	t.Helper()
	b := n.dial(t)
	b.read()
	return b
}

// read starts the goroutine that reads every frame until the connection
// ends.
func (b *browser) read() {
	b.mu.Lock()
	if b.started {
		b.mu.Unlock()
		return
	}
	b.started = true
	b.mu.Unlock()
	go func() {
		defer close(b.done)
		for {
			typ, p, err := b.ws.Read(context.Background())
			if err != nil {
				b.mu.Lock()
				b.err = err
				b.mu.Unlock()
				return
			}
			var f frameIn
			if err := json.Unmarshal(p, &f); typ != websocket.MessageText || err != nil {
				b.mu.Lock()
				b.bad = append(b.bad, string(p))
				b.mu.Unlock()
				continue
			}
			f.raw = p
			switch f.Type {
			case "count":
				b.count.Store(f.Connections)
				b.counts.Add(1)
			case "message":
				b.mu.Lock()
				b.msgs = append(b.msgs, f)
				b.mu.Unlock()
			case "welcome":
				b.mu.Lock()
				b.welcomes = append(b.welcomes, f)
				b.mu.Unlock()
			default:
				b.mu.Lock()
				b.bad = append(b.bad, string(p))
				b.mu.Unlock()
			}
		}
	}()
}

// closeNow drops the connection without a close handshake and waits for
// the reader, if any, to end.
func (b *browser) closeNow() {
	b.ws.CloseNow()
	b.mu.Lock()
	started := b.started
	b.mu.Unlock()
	if started {
		<-b.done
	}
}

// messages returns a copy of the message frames received so far.
func (b *browser) messages() []frameIn {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]frameIn(nil), b.msgs...)
}

// send writes one text frame.
func (b *browser) send(t testing.TB, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := b.ws.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		t.Fatalf("Write(%q): got %v; want nil", s, err)
	}
}

// waitCount waits until the browser's last count frame says want.
func (b *browser) waitCount(t testing.TB, want int64) {
	t.Helper()
	eventually(t, waitTimeout, func() (bool, string) {
		got := b.count.Load()
		return got == want, fmt.Sprintf("last count frame: got %d; want %d", got, want)
	})
}

// waitMessage waits until the browser has received a message with id and
// returns every message received up to then.
func (b *browser) waitMessage(t testing.TB, id string) []frameIn {
	t.Helper()
	var msgs []frameIn
	eventually(t, waitTimeout, func() (bool, string) {
		msgs = b.messages()
		for _, m := range msgs {
			if m.ID == id {
				return true, ""
			}
		}
		return false, fmt.Sprintf("message %q not received; got %d messages, err %v", id, len(msgs), b.readErr())
	})
	return msgs
}

// badFrames returns the frames that were not count or message frames.
func (b *browser) badFrames() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.bad...)
}

// readErr returns why reading ended, or nil while it goes on.
func (b *browser) readErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// waitClosed waits for the reader to end and returns why it ended.
func (b *browser) waitClosed(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-b.done:
		return b.readErr()
	case <-time.After(timeout):
		t.Fatalf("connection still open after %v", timeout)
		return nil
	}
}

// closeError returns the close frame in err, if any.
func closeError(err error) (websocket.CloseError, bool) {
	var ce websocket.CloseError
	ok := errors.As(err, &ce)
	return ce, ok
}
