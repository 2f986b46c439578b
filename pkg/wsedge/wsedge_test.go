package wsedge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/switchboard-rt/switchboard/pkg/hub"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const waitTimeout = 15 * time.Second

func eventually(t *testing.T, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %s", waitTimeout, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// edge is a Handler on an httptest server with its own hub.
type edge struct {
	h   *Handler
	hub *hub.Hub
	srv *httptest.Server
	url string
}

func startEdge(t *testing.T, cfg Config) *edge {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hb, err := hub.New(hub.Config{Logger: log})
	if err != nil {
		t.Fatalf("hub.New: %v", err)
	}
	cfg.Hub, cfg.Logger = hb, log
	h := New(cfg)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
		hb.Close()
	})
	return &edge{h: h, hub: hb, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http")}
}

func (e *edge) dial(t *testing.T, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if opts == nil {
		opts = &websocket.DialOptions{}
	}
	opts.HTTPClient = e.srv.Client()
	ws, _, err := websocket.Dial(ctx, e.url, opts)
	if err != nil {
		t.Fatalf("Dial: got %v; want nil", err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	return ws
}

func (e *edge) waitCount(t *testing.T, want int64) {
	t.Helper()
	eventually(t, func() (bool, string) {
		got := e.hub.Count("")
		return got == want, fmt.Sprintf("count: got %d; want %d", got, want)
	})
}

// readUntilClosed reads and drops frames until the connection ends.
func readUntilClosed(ws *websocket.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for {
		if _, _, err := ws.Read(ctx); err != nil {
			return err
		}
	}
}

func TestCloseCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    hub.Reason
		want websocket.StatusCode
	}{
		{"shutdown", hub.ReasonShutdown, websocket.StatusGoingAway},
		{"hand back", hub.ReasonHandBack, websocket.StatusServiceRestart},
		{"slow", hub.ReasonSlow, websocket.StatusTryAgainLater},
		{"unknown", hub.Reason(200), websocket.StatusGoingAway},
	}
	for _, tc := range tests {
		if got := closeCode(tc.r); got != tc.want {
			t.Errorf("%s: closeCode(%v): got %v; want %v", tc.name, tc.r, got, tc.want)
		}
	}
}

// TestReadLimit checks the boundary: a frame of ReadLimit bytes is fine,
// one more byte closes the connection with 1009 and a reason.
func TestReadLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		limit int64 // 0: the default
		size  int
		want  websocket.StatusCode // 0: stays open
	}{
		{"default limit, at it", 0, 4096, 0},
		{"default limit, one over", 0, 4097, websocket.StatusMessageTooBig},
		{"default limit, far over", 0, 1 << 20, websocket.StatusMessageTooBig},
		{"small limit, at it", 100, 100, 0},
		{"small limit, one over", 100, 101, websocket.StatusMessageTooBig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := startEdge(t, Config{ReadLimit: tc.limit})
			ws := e.dial(t, nil)
			// A valid subscribe frame padded with JSON whitespace.
			msg := `{"type":"subscribe","channel":"c"}`
			frame := msg[:len(msg)-1] + strings.Repeat(" ", tc.size-len(msg)) + "}"
			if err := ws.Write(context.Background(), websocket.MessageText, []byte(frame)); err != nil {
				t.Fatalf("Write: %v", err)
			}
			if tc.want == 0 {
				eventually(t, func() (bool, string) {
					got := e.hub.Count("c")
					return got == 1, fmt.Sprintf("subscribers of c: got %d; want 1", got)
				})
				return
			}
			err := readUntilClosed(ws)
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != tc.want || ce.Reason == "" {
				t.Fatalf("got %v; want close %d with a reason", err, tc.want)
			}
			e.waitCount(t, 0)
		})
	}
}

// TestHubReasons checks that connections the hub ends get the close code
// that tells the browser when to reconnect.
func TestHubReasons(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    hub.Reason
		want websocket.StatusCode
	}{
		{"shutdown", hub.ReasonShutdown, websocket.StatusGoingAway},
		{"hand back", hub.ReasonHandBack, websocket.StatusServiceRestart},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := startEdge(t, Config{})
			ws := e.dial(t, nil)
			e.waitCount(t, 1)
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- readUntilClosed(ws) }()
			if err := e.hub.Disconnect(ctx, tc.r, 0); err != nil {
				t.Fatalf("Disconnect: %v", err)
			}
			var ce websocket.CloseError
			if err := <-errc; !errors.As(err, &ce) || ce.Code != tc.want || ce.Reason != tc.r.String() {
				t.Errorf("got %v; want close %d %q", err, tc.want, tc.r.String())
			}
			e.waitCount(t, 0)
		})
	}
}

// TestUnansweredPings checks that a browser that stops answering pings is
// dropped within KeepAlive, and one that answers is kept.
func TestUnansweredPings(t *testing.T) {
	t.Parallel()
	const keepAlive = time.Second
	e := startEdge(t, Config{KeepAlive: keepAlive})
	var answering atomic.Bool
	answering.Store(true)
	var pings atomic.Int64
	mute := e.dial(t, &websocket.DialOptions{OnPingReceived: func(context.Context, []byte) bool {
		pings.Add(1)
		return answering.Load()
	}})
	good := e.dial(t, nil)
	muteErr, goodErr := make(chan error, 1), make(chan error, 1)
	go func() { muteErr <- readUntilClosed(mute) }()
	go func() { goodErr <- readUntilClosed(good) }()
	e.waitCount(t, 2)
	eventually(t, func() (bool, string) {
		return pings.Load() >= 2, fmt.Sprintf("pings: got %d; want 2", pings.Load())
	})
	if got := e.hub.Count(""); got != 2 {
		t.Fatalf("count while both answer: got %d; want 2", got)
	}

	answering.Store(false)
	stopped := time.Now()
	e.waitCount(t, 1)
	took := time.Since(stopped)
	t.Logf("unanswered pings dropped the browser after %v (KeepAlive %v)", took.Round(time.Millisecond), keepAlive)
	if took > keepAlive+2*time.Second {
		t.Errorf("dropped after %v; want within KeepAlive %v (+2s slack)", took, keepAlive)
	}
	select {
	case err := <-muteErr:
		if err == nil {
			t.Errorf("mute browser: got nil; want its connection ended")
		}
	case <-time.After(waitTimeout):
		t.Errorf("mute browser: connection still open")
	}
	select {
	case err := <-goodErr:
		t.Errorf("answering browser: got %v; want still connected", err)
	default:
	}
}

// TestClose checks that Close cuts every connection, even one whose close
// handshake would wait for a silent peer, and refuses new ones.
func TestClose(t *testing.T) {
	t.Parallel()
	e := startEdge(t, Config{})
	silent := e.dial(t, nil) // never reads: never answers a close frame
	reading := e.dial(t, nil)
	errc := make(chan error, 1)
	go func() { errc <- readUntilClosed(reading) }()
	e.waitCount(t, 2)

	// The hub says goodbye; the silent browser's handshake would then take
	// 5 s, which Close cuts short.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	e.hub.Drain(ctx, hub.ReasonShutdown, 0)
	start := time.Now()
	e.h.Close()
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %v; want it to cut connections at once", took)
	}
	if err := <-errc; err == nil {
		t.Errorf("reading browser: got nil; want the connection ended")
	}
	if err := readUntilClosed(silent); err == nil {
		t.Errorf("silent browser: got nil; want the connection ended")
	}
	if got := e.hub.Count(""); got != 0 {
		t.Errorf("count after Close: got %d; want 0", got)
	}

	resp, err := e.srv.Client().Get(e.srv.URL)
	if err != nil {
		t.Fatalf("GET after Close: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET after Close: got %d; want 503", resp.StatusCode)
	}
}

// TestDraining checks that a draining hub refuses upgrades with 503, so a
// proxy in front tries another node.
func TestDraining(t *testing.T) {
	t.Parallel()
	e := startEdge(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := e.hub.Drain(ctx, hub.ReasonShutdown, 0); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	_, resp, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{HTTPClient: e.srv.Client()})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("Dial while draining: got %v, %v; want 503", resp, err)
	}
}
