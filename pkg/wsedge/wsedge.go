// Package wsedge is the browsers' edge: an http.Handler that upgrades
// requests to WebSocket, hands each connection to the hub and speaks the
// frame protocol. It keeps no hub state of its own.
package wsedge

import (
	"bufio"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-rt/switchboard/internal/lograte"
	"github.com/switchboard-rt/switchboard/internal/netaddr"
	"github.com/switchboard-rt/switchboard/pkg/frame"
	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/identity"
	"github.com/switchboard-rt/switchboard/pkg/msglog"
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
	// drops a connection that sent nothing, not even the pong, within
	// KeepAlive/2 of a ping. Default: 20s.
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
	// MaxConnsPerVisitor bounds the connections of one visitor (the
	// subject of an identity token, or an anonymous id) on this node; past
	// it, upgrades get 429. Default: 100; negative: no limit. Anonymous
	// ids are the browser's word: the limit keeps one id from costing
	// others, not anyone from taking many ids.
	MaxConnsPerVisitor int
	// Identity verifies the identity tokens browsers send as ?token=.
	// Default: none, every token is refused with 401.
	Identity *identity.Verifier
	// RequireToken refuses, with 401, upgrades without a valid identity
	// token. Default: false, anonymous browsers are welcome.
	RequireToken bool
	// TrustedProxies lists the networks of the reverse proxies in front of
	// the edge. Only a request whose direct peer is in one of them is
	// counted by the rightmost address in X-Forwarded-For that is not;
	// any other request counts as its direct peer. Default: none, so
	// X-Forwarded-For is never believed; trusting a network that clients
	// can reach directly lets them choose their address.
	TrustedProxies []netip.Prefix
	// FrameRate is the average number of frames a second a browser may
	// send, FrameBurst how many it may send at once; a browser beyond them
	// is closed with 1008 "rate limit exceeded". Every frame counts:
	// messages, each fragment of one, pings, pongs. Default: 20 a second
	// with bursts of 80, enough for client.js to resubscribe 64 channels
	// at once after a reconnect (keep FrameBurst above MaxSubscriptions);
	// negative FrameRate: no limit.
	FrameRate  float64
	FrameBurst int
	// SendBuffer is the kernel send buffer of each connection (SO_SNDBUF,
	// which Linux doubles): with the frames the hub queues, which are
	// shared, what a browser that stops reading makes the node hold.
	// Default: 64 KiB; negative: the system's, which Linux grows up to
	// net.ipv4.tcp_wmem.
	SendBuffer int
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
	perIP      perKey[netip.Addr]
	perVisitor perKey[string]
	identity   *identity.Verifier
	requireTok bool
	trusted    []netip.Prefix
	frameRate  float64 // <= 0: no limit
	frameBurst int
	sendBuffer int // <= 0: the system's
	onReject   func(limit string)
	rejected   rejections
	refusals   *lograte.Limiter // refused upgrades, at most one line a second

	mu     sync.Mutex
	open   map[uint64]*conn // the upgraded connections being served, by id
	lastID uint64
	closed bool           // Close was called
	served sync.WaitGroup // connections past the upgrade, until they end

	pollOnce sync.Once
	poll     *poller // nil without one
}

// New returns a Handler for cfg.
func New(cfg Config) *Handler {
	h := &Handler{
		hub:   cfg.Hub,
		log:   cfg.Logger,
		limit: cfg.ReadLimit,
		ping:  cfg.KeepAlive / 2,
		open:  make(map[uint64]*conn),

		maxConns:   int64(cfg.MaxConns),
		perIP:      newPerKey[netip.Addr](cfg.MaxConnsPerIP),
		perVisitor: newPerKey[string](cfg.MaxConnsPerVisitor),
		identity:   cfg.Identity,
		requireTok: cfg.RequireToken,
		trusted:    cfg.TrustedProxies,
		frameRate:  cfg.FrameRate,
		frameBurst: cfg.FrameBurst,
		sendBuffer: cfg.SendBuffer,
		onReject:   cfg.OnReject,
	}
	if h.sendBuffer == 0 {
		h.sendBuffer = 64 << 10
	}
	if h.maxConns == 0 {
		h.maxConns = 100_000
	}
	if h.perIP.max == 0 {
		h.perIP.max = 1_000
	}
	if h.perVisitor.max == 0 {
		h.perVisitor.max = 100
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
	h.refusals = lograte.New(h.log, 0)
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
	// A bad parameter or token is refused before anything is held or
	// counted.
	start, err := h.startOf(r)
	var refused *refusal
	switch {
	case errors.As(err, &refused):
		h.reject(LimitIdentityToken)
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	case err != nil:
		h.reject(LimitInvalidParameter)
		http.Error(w, err.Error(), http.StatusBadRequest)
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
	ip := netaddr.Key(clientIP(r, h.trusted))
	if !h.perIP.acquire(ip) {
		h.conns.Add(-1)
		h.reject(LimitConnectionsPerIP)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "too many connections from your address", http.StatusTooManyRequests)
		return
	}
	if start.Visitor != "" && !h.perVisitor.acquire(start.Visitor) {
		h.perIP.release(ip)
		h.conns.Add(-1)
		h.reject(LimitConnectionsPerVisitor)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "too many connections for this visitor", http.StatusTooManyRequests)
		return
	}
	release := func() {
		if start.Visitor != "" {
			h.perVisitor.release(start.Visitor)
		}
		h.perIP.release(ip)
		h.conns.Add(-1)
	}
	hw := &hijackRecorder{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, &h.accept)
	if err != nil {
		release()
		h.refusals.Log(r.Context(), slog.LevelInfo, "refused websocket upgrades", "remote", r.RemoteAddr,
			"origin", lograte.Truncate(r.Header.Get("Origin"), 0), "err", lograte.Truncate(err.Error(), 2*lograte.MaxValue))
		return
	}
	if hw.sock == nil {
		// Accept hijacks through hw on every successful upgrade.
		ws.CloseNow()
		release()
		h.log.Error("websocket upgrade did not hijack the connection", "remote", r.RemoteAddr)
		return
	}
	ws.SetReadLimit(h.limit)
	c := &conn{h: h, ws: ws, sock: hw.sock, release: release}
	if !h.track(c) {
		ws.Close(closeAway, hub.ReasonShutdown.String())
		release()
		return
	}
	c.hc, err = h.hub.Connect(c, start)
	if err != nil {
		ws.Close(closeAway, hub.ReasonShutdown.String())
		h.untrack(c)
		release()
		return
	}
	c.start()
}

// startOf reads what the upgrade asks for (see frame.ParseConnect): the
// channels to join, the position to resume from and who the browser is:
// the subject of its identity token, else its anonymous id, else nobody
// but the connection itself. A token the edge refuses, or none when one
// is required, is a *refusal.
func (h *Handler) startOf(r *http.Request) (hub.Start, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return hub.Start{}, errors.New("invalid query string")
	}
	c, err := frame.ParseConnect(q, h.hub.MaxSubscriptions())
	if err != nil {
		return hub.Start{}, err
	}
	s := hub.Start{Channels: c.Channels, Resume: c.Resume, From: msglog.Position{Epoch: c.Epoch, Offset: c.Offset}}
	switch {
	case c.HasToken:
		sub, err := h.identity.Verify(c.Token)
		if err != nil {
			return hub.Start{}, &refusal{err.Error()}
		}
		s.Visitor = identity.TokenKey(sub)
	case h.requireTok:
		return hub.Start{}, &refusal{"an identity token is required: connect with ?token="}
	case c.Visitor != "":
		s.Visitor = identity.AnonymousKey(c.Visitor)
	}
	return s, nil
}

// refusal is why an upgrade's identity is refused (401).
type refusal struct{ reason string }

func (r *refusal) Error() string { return r.reason }

// track records an upgraded connection, so that Close can end it and the
// poller can find it. It reports false once Close has been called.
func (h *Handler) track(c *conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.lastID++
	c.id = h.lastID
	h.open[c.id] = c
	h.served.Add(1)
	return true
}

func (h *Handler) untrack(c *conn) {
	h.mu.Lock()
	delete(h.open, c.id)
	h.mu.Unlock()
	h.served.Done()
}

// wake starts the reader of connection id, which has input.
func (h *Handler) wake(id uint64) {
	h.mu.Lock()
	c := h.open[id]
	h.mu.Unlock()
	if c != nil {
		c.wake()
	}
}

// poller returns the handler's poller, starting it on first use; nil if
// the system has none.
func (h *Handler) poller() *poller {
	h.pollOnce.Do(func() {
		p, err := newPoller(h.wake, h.log)
		if err != nil {
			h.log.Debug("no poller for idle connections: each has a reader goroutine", "err", err)
			return
		}
		h.poll = p
	})
	return h.poll
}

func (h *Handler) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// Close cuts every connection still open, without a close handshake,
// refuses new upgrades with 503, and waits until every connection has
// ended. It is the last step of a shutdown, for browsers that did not
// finish their goodbye in time: http.Server.Shutdown and Close do not see
// hijacked connections, and a WebSocket close handshake with a silent
// peer takes up to 10 s.
func (h *Handler) Close() {
	h.mu.Lock()
	h.closed = true
	open := make([]*conn, 0, len(h.open))
	for _, c := range h.open {
		open = append(open, c)
	}
	h.mu.Unlock()
	for _, c := range open {
		c.kill()
	}
	h.served.Wait()
	h.pollOnce.Do(func() {}) // no poller starts from now on
	if h.poll != nil {
		h.poll.close()
	}
}

// hijackRecorder keeps the connection websocket.Accept hijacks, as the
// socket the edge reads, writes and cuts whatever state the WebSocket is
// in.
type hijackRecorder struct {
	http.ResponseWriter
	sock *socket
}

// The buffers a WebSocket connection keeps for its whole life, in place
// of net/http's 4 KiB each. Browsers send small frames: a larger one just
// takes more reads, and a pong (at most 131 bytes, see skipPong) must fit.
// The library writes only control frames through its writer, the hub's
// frames going straight to the socket, and a control frame from the
// server is at most 127 bytes: it must fit whole (see socket).
const (
	connReadBuffer  = 256
	connWriteBuffer = 128
)

// Compile-time checks: a control frame, 2 bytes of header (and 4 of mask
// from a browser) and up to 125 of payload, fits in the buffers.
const (
	_ = uint(connReadBuffer - (2 + 4 + 125))
	_ = uint(connWriteBuffer - (2 + 125))
)

// Hijack takes the connection from net/http with smaller buffers (see
// connReadBuffer). The library reads it through a frameCounter, bytes
// net/http read past the request, in the rare case there are any, first.
func (w *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return c, rw, err
	}
	s := &socket{conn: c}
	s.in.src = c
	if n := rw.Reader.Buffered(); n > 0 {
		p, _ := rw.Reader.Peek(n)
		s.in.pending = append([]byte(nil), p...)
	}
	s.rc = countedConn{Conn: c, in: &s.in}
	s.br = bufio.NewReaderSize(&s.rc, connReadBuffer)
	w.sock = s
	if sc, ok := c.(syscall.Conn); ok {
		w.sock.raw, _ = sc.SyscallConn()
		w.sock.sendFn = w.sock.trySend
	}
	w.sock.tcp = w.sock.raw
	if tc, ok := c.(*tls.Conn); ok {
		if sc, ok := tc.NetConn().(syscall.Conn); ok {
			w.sock.tcp, _ = sc.SyscallConn()
		}
	}
	return &s.rc, bufio.NewReadWriter(s.br, bufio.NewWriterSize(w.sock, connWriteBuffer)), nil
}

func (w *hijackRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
