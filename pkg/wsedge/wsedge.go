// Package wsedge is the browsers' edge: an http.Handler that upgrades
// requests to WebSocket, hands each connection to the hub and speaks the
// frame protocol. It keeps no hub state of its own.
package wsedge

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-rt/switchboard/pkg/frame"
	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// Config tunes a Handler. Only Hub is required.
type Config struct {
	// Hub receives the connections.
	Hub *hub.Hub
	// Logger receives the edge's logs. Default: slog.Default().
	Logger *slog.Logger
	// AllowedOrigins lists the browser origins allowed to connect besides
	// the request's own host: host patterns ("example.com",
	// "*.example.com") or origins with a scheme ("https://example.com"),
	// matched with path.Match. "*" allows any origin and with it cross-site
	// WebSocket hijacking: use it only for public, read-only data. Default:
	// same host only.
	AllowedOrigins []string
	// ReadLimit is the largest frame, in bytes, a browser may send; a larger
	// one closes the connection with 1009. Default: 4096.
	ReadLimit int64
	// KeepAlive is the longest a connection whose network vanished (no
	// close, no FIN) keeps counting: the edge pings every KeepAlive/2 and
	// drops a connection whose pong takes longer than KeepAlive/2.
	// Default: 20s.
	KeepAlive time.Duration
}

// Handler serves GET /ws.
type Handler struct {
	hub    *hub.Hub
	log    *slog.Logger
	accept websocket.AcceptOptions
	limit  int64
	ping   time.Duration
}

// New returns a Handler for cfg.
func New(cfg Config) *Handler {
	h := &Handler{hub: cfg.Hub, log: cfg.Logger, limit: cfg.ReadLimit, ping: cfg.KeepAlive / 2}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.limit <= 0 {
		h.limit = 4096
	}
	if h.ping <= 0 {
		h.ping = 10 * time.Second
	}
	if slices.Contains(cfg.AllowedOrigins, "*") {
		h.accept.InsecureSkipVerify = true
	} else {
		h.accept.OriginPatterns = cfg.AllowedOrigins
	}
	return h
}

// The close codes the edge sends, from RFC 6455 section 7.4.1.
const (
	closePolicy  = websocket.StatusPolicyViolation // 1008: bad frame
	closeRestart = websocket.StatusServiceRestart  // 1012: reconnect now
	closeAway    = websocket.StatusGoingAway       // 1001: server leaving
	closeAgain   = websocket.StatusTryAgainLater   // 1013: reconnect later
)

// closeCode maps a hub reason to a WebSocket close code.
func closeCode(r hub.Reason) websocket.StatusCode {
	switch r {
	case hub.ReasonHandBack:
		return closeRestart
	case hub.ReasonSlow:
		return closeAgain
	default:
		return closeAway
	}
}

// ServeHTTP upgrades the request and serves the connection until it ends.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.hub.Draining() {
		http.Error(w, "draining: connect to another node", http.StatusServiceUnavailable)
		return
	}
	ws, err := websocket.Accept(w, r, &h.accept)
	if err != nil {
		h.log.Debug("refused websocket upgrade", "remote", r.RemoteAddr, "err", err)
		return
	}
	ws.SetReadLimit(h.limit)
	t := &transport{ws: ws}
	c, err := h.hub.Register(t)
	if err != nil {
		ws.Close(closeAway, "server shutting down")
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.keepAlive(ctx, ws, c)

	reason := h.read(ctx, ws, c)
	c.Close()
	if reason != nil {
		ws.Close(reason.code, reason.text)
	}
	ws.CloseNow()
}

type closeReason struct {
	code websocket.StatusCode
	text string
}

// read serves the browser's frames until the connection ends. It returns the
// close to send, if the browser broke the protocol.
func (h *Handler) read(ctx context.Context, ws *websocket.Conn, c *hub.Client) *closeReason {
	for {
		typ, p, err := ws.Read(ctx)
		if err != nil {
			return nil // closed, failed, or over the read limit (closed with 1009)
		}
		if typ != websocket.MessageText {
			return &closeReason{closePolicy, "binary frames are not supported"}
		}
		in, err := frame.Decode(p)
		if err != nil {
			return &closeReason{closePolicy, err.Error()}
		}
		switch in.Op {
		case frame.OpSubscribe:
			err = c.Subscribe(in.Channel)
		case frame.OpUnsubscribe:
			c.Unsubscribe(in.Channel)
		}
		switch {
		case errors.Is(err, hub.ErrTooManySubscriptions):
			return &closeReason{closePolicy, "too many subscriptions"}
		case err != nil:
			return nil
		}
	}
}

// keepAlive pings the browser every h.ping and drops the connection when a
// pong does not come back within h.ping.
func (h *Handler) keepAlive(ctx context.Context, ws *websocket.Conn, c *hub.Client) {
	t := time.NewTicker(h.ping)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, h.ping)
		err := ws.Ping(pctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				c.Close()
				ws.CloseNow()
			}
			return
		}
	}
}

// transport adapts a WebSocket connection to hub.Transport.
type transport struct {
	ws *websocket.Conn
}

func (t *transport) Write(ctx context.Context, frames [][]byte) error {
	for _, f := range frames {
		if err := t.ws.Write(ctx, websocket.MessageText, f); err != nil {
			return err
		}
	}
	return nil
}

func (t *transport) Close(r hub.Reason) {
	t.ws.Close(closeCode(r), r.String())
}
