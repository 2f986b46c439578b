// Package wsedge is the browsers' edge: an http.Handler that upgrades
// requests to WebSocket, hands each connection to the hub and speaks the
// frame protocol. It keeps no hub state of its own.
package wsedge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-rt/switchboard/internal/ratelimit"
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
	// MaxConns bounds the connections the edge serves at once, counting
	// upgrades in progress; past it, upgrades get 503 so that a
	// connection flood cannot exhaust the node's memory or file
	// descriptors. Default: 100,000; negative: no limit.
	MaxConns int
	// MaxConnsPerIP bounds the connections from one client address (see
	// TrustedProxies; an IPv6 address counts by its /64); past it,
	// upgrades get 429. Default: 1,000;
	// negative: no limit. Browsers behind one NAT share an address, so
	// too small a limit turns away an office or a mobile carrier.
	MaxConnsPerIP int
	// TrustedProxies lists the networks of the reverse proxies in front of
	// the edge. Only a request whose direct peer is in one of them is
	// counted by the rightmost address in X-Forwarded-For that is not;
	// any other request counts as its direct peer. Default: none, so
	// X-Forwarded-For is never believed; trusting a network that clients
	// can reach directly lets them choose their address.
	TrustedProxies []netip.Prefix
	// FrameRate is the average number of frames a second a browser may
	// send, FrameBurst how many it may send at once; a browser beyond them
	// is closed with 1008 "rate limit exceeded". Default: 20 a second with
	// bursts of 80, enough for client.js to resubscribe 64 channels at
	// once after a reconnect (keep FrameBurst above MaxSubscriptions);
	// negative FrameRate: no limit.
	FrameRate  float64
	FrameBurst int
	// OnReject, if set, is called with the Limit name each time a limit
	// refuses an upgrade or closes a connection, for metrics.
	OnReject func(limit string)
}

// Handler serves GET /ws.
type Handler struct {
	hub    *hub.Hub
	log    *slog.Logger
	accept websocket.AcceptOptions
	limit  int64
	ping   time.Duration

	maxConns   int64
	conns      atomic.Int64 // connections served, upgrades in progress included
	perIP      perIP
	trusted    []netip.Prefix
	frameRate  float64 // <= 0: no limit
	frameBurst int
	onReject   func(limit string)
	rejected   rejections

	mu     sync.Mutex
	open   map[net.Conn]struct{} // the upgraded connections being served
	closed bool                  // Close was called
	served sync.WaitGroup        // ServeHTTP calls past the upgrade
}

// New returns a Handler for cfg.
func New(cfg Config) *Handler {
	h := &Handler{
		hub:   cfg.Hub,
		log:   cfg.Logger,
		limit: cfg.ReadLimit,
		ping:  cfg.KeepAlive / 2,
		open:  make(map[net.Conn]struct{}),

		maxConns:   int64(cfg.MaxConns),
		perIP:      perIP{max: cfg.MaxConnsPerIP, n: make(map[netip.Addr]int)},
		trusted:    cfg.TrustedProxies,
		frameRate:  cfg.FrameRate,
		frameBurst: cfg.FrameBurst,
		onReject:   cfg.OnReject,
	}
	if h.maxConns == 0 {
		h.maxConns = 100_000
	}
	if h.perIP.max == 0 {
		h.perIP.max = 1_000
	}
	if h.frameRate == 0 {
		h.frameRate = 20
	}
	if h.frameBurst <= 0 {
		h.frameBurst = 80
	}
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
	closeTooBig  = websocket.StatusMessageTooBig   // 1009: frame over the read limit
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

// ServeHTTP upgrades the request and hands the connection to a goroutine of
// its own, so that net/http's goroutine, its buffers and the request are
// released as soon as the upgrade is done.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.hub.Draining() || h.isClosed() {
		http.Error(w, "draining: connect to another node", http.StatusServiceUnavailable)
		return
	}
	// Limits are checked before the upgrade, so a refusal costs one
	// small HTTP response and no WebSocket state.
	if n := h.conns.Add(1); h.maxConns > 0 && n > h.maxConns {
		h.conns.Add(-1)
		h.reject(LimitConnections)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "too many connections: connect to another node or retry later", http.StatusServiceUnavailable)
		return
	}
	ip := clientIP(r, h.trusted)
	if !h.perIP.acquire(ip) {
		h.conns.Add(-1)
		h.reject(LimitConnectionsPerIP)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "too many connections from your address", http.StatusTooManyRequests)
		return
	}
	release := func() {
		h.perIP.release(ip)
		h.conns.Add(-1)
	}
	hw := &hijackRecorder{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, &h.accept)
	if err != nil {
		release()
		h.log.Info("refused websocket upgrade", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"), "err", err)
		return
	}
	if !h.track(hw.conn) {
		ws.Close(closeAway, hub.ReasonShutdown.String())
		release()
		return
	}
	ws.SetReadLimit(h.limit)
	t := &transport{ws: ws, sock: hw.sock}
	c, err := h.hub.Register(t)
	if err != nil {
		ws.Close(closeAway, hub.ReasonShutdown.String())
		h.untrack(hw.conn)
		release()
		return
	}
	conn := hw.conn
	go func() {
		defer release()
		defer h.untrack(conn)
		h.serve(ws, t, c)
	}()
}

// serve reads the browser's frames and keeps the connection alive until it
// ends, then leaves the hub.
func (h *Handler) serve(ws *websocket.Conn, t *transport, c *hub.Client) {
	stopPings := h.keepAlive(ws, c)

	reason := h.read(ws, c)
	if reason != nil {
		// Say why before leaving the hub: Client.Close cancels a write in
		// progress, and a canceled write cuts the connection before the
		// close frame could go out. Frames the hub queues meanwhile are
		// dropped, not failed.
		t.closing.Store(true)
		ws.Close(reason.code, reason.text)
	}
	c.Close()
	ws.CloseNow() // also ends a ping in progress
	stopPings()
}

// track records an upgraded connection so that Close can end it; c is nil
// if the upgrade did not go through hijackRecorder. It reports false once
// Close has been called.
func (h *Handler) track(c net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	if c != nil {
		h.open[c] = struct{}{}
	}
	h.served.Add(1)
	return true
}

func (h *Handler) untrack(c net.Conn) {
	h.mu.Lock()
	if c != nil {
		delete(h.open, c)
	}
	h.mu.Unlock()
	h.served.Done()
}

func (h *Handler) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// Close cuts every connection still open, without a close handshake,
// refuses new upgrades with 503, and waits until every connection's
// handler has returned. It is the last step of a shutdown, for browsers
// that did not finish their goodbye in time: http.Server.Shutdown and
// Close do not see hijacked connections, and a WebSocket close handshake
// with a silent peer takes up to 10 s.
func (h *Handler) Close() {
	h.mu.Lock()
	h.closed = true
	for c := range h.open {
		c.Close()
	}
	h.mu.Unlock()
	h.served.Wait()
}

// hijackRecorder keeps the connection websocket.Accept hijacks, so that
// Close can cut it whatever state the WebSocket is in.
type hijackRecorder struct {
	http.ResponseWriter
	conn net.Conn
	sock *socket
}

// connBufferSize sizes the buffers a WebSocket connection keeps for its
// whole life. Browsers send small frames and the server's frames are
// written whole, so 512 bytes serve as well as net/http's 4 KiB and save
// 7 KiB on every connection.
const connBufferSize = 512

// Hijack takes the connection from net/http with buffers of
// connBufferSize, keeping net/http's reader only in the rare case it
// already holds bytes past the request.
func (w *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return c, rw, err
	}
	w.conn = c
	w.sock = &socket{conn: c}
	r := rw.Reader
	if r.Buffered() == 0 {
		r = bufio.NewReaderSize(c, connBufferSize)
	}
	return c, bufio.NewReadWriter(r, bufio.NewWriterSize(w.sock, connBufferSize)), nil
}

func (w *hijackRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type closeReason struct {
	code websocket.StatusCode
	text string
}

// read serves the browser's frames until the connection ends. It returns the
// close to send, if the browser broke the protocol.
//
// Reads take a context that never ends: the connection's end stops them,
// and the library then keeps no cancellation hook on a context for the
// whole time an idle connection waits to read.
func (h *Handler) read(ws *websocket.Conn, c *hub.Client) *closeReason {
	ctx := context.Background()
	var bucket ratelimit.Bucket
	if h.frameRate > 0 {
		bucket = ratelimit.NewBucket(h.frameRate, h.frameBurst, time.Now())
	}
	for {
		typ, p, err := ws.Read(ctx)
		if errors.Is(err, websocket.ErrMessageTooBig) {
			// The library has sent its 1009 already; closing with a
			// handshake lets the browser read it before the TCP
			// connection ends, instead of a reset over the unread rest
			// of the frame.
			h.reject(LimitFrameSize)
			return &closeReason{closeTooBig, fmt.Sprintf("frame larger than %d bytes", h.limit)}
		}
		if err != nil {
			return nil // closed or failed
		}
		if h.frameRate > 0 && !bucket.Allow(time.Now()) {
			h.reject(LimitFrameRate)
			return &closeReason{closePolicy, "rate limit exceeded"}
		}
		if typ != websocket.MessageText {
			h.reject(LimitInvalidFrame)
			return &closeReason{closePolicy, "binary frames are not supported"}
		}
		in, err := frame.Decode(p)
		if err != nil {
			h.reject(LimitInvalidFrame)
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
			h.reject(LimitSubscriptions)
			return &closeReason{closePolicy, "too many subscriptions"}
		case errors.Is(err, frame.ErrInvalid):
			h.reject(LimitInvalidFrame)
			return &closeReason{closePolicy, err.Error()}
		case err != nil:
			return nil // the hub has closed the client
		}
	}
}

// keepAlive pings the browser every h.ping and drops the connection when a
// pong does not come back within h.ping. It keeps no goroutine between
// pings: a timer starts one for each ping. The returned stop prevents any
// further ping and waits for one in progress, which the connection's end
// cuts short.
func (h *Handler) keepAlive(ws *websocket.Conn, c *hub.Client) (stop func()) {
	var (
		mu      sync.Mutex
		stopped bool
		pinging sync.WaitGroup
		timer   *time.Timer
	)
	timer = time.AfterFunc(h.ping, func() {
		mu.Lock()
		if stopped {
			mu.Unlock()
			return
		}
		pinging.Add(1)
		mu.Unlock()
		defer pinging.Done()

		ctx, cancel := context.WithTimeout(context.Background(), h.ping)
		err := ws.Ping(ctx)
		cancel()
		mu.Lock()
		defer mu.Unlock()
		switch {
		case stopped:
		case err != nil:
			c.Close()
			ws.CloseNow()
		default:
			timer.Reset(h.ping)
		}
	})
	return func() {
		mu.Lock()
		stopped = true
		timer.Stop()
		mu.Unlock()
		pinging.Wait()
	}
}

// transport adapts a WebSocket connection to hub.Transport.
type transport struct {
	ws      *websocket.Conn
	sock    *socket     // nil if the upgrade did not go through hijackRecorder
	closing atomic.Bool // the edge is closing the connection itself
	watched context.Context
}

// Write sends frames as text messages, all in one syscall (see socket).
// ctx ends the write: the first time Write sees a context, the transport
// arranges for its end to fail a write blocked on the socket (the hub
// passes the same context every time).
func (t *transport) Write(ctx context.Context, frames [][]byte) error {
	if t.closing.Load() {
		return nil
	}
	if t.sock == nil {
		for _, f := range frames {
			if err := t.ws.Write(ctx, websocket.MessageText, f); err != nil {
				return err
			}
		}
		return nil
	}
	if ctx != t.watched {
		t.watched = ctx
		context.AfterFunc(ctx, t.sock.expire)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := t.sock.writeText(frames)
	return err
}

func (t *transport) Close(r hub.Reason) {
	t.ws.Close(closeCode(r), r.String())
}
