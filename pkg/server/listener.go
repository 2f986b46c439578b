package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/switchboard-rt/switchboard/internal/lograte"
	"github.com/switchboard-rt/switchboard/internal/netaddr"
)

// connLimiter bounds the connections a listener holds, in all and from one
// address, at accept: a connection past a limit is closed before anything
// reads from it or starts a goroutine for it, so that clients that connect
// and stay idle cannot take the node's file descriptors. The peers in
// exempt (the trusted proxies, which carry many clients' connections)
// count only towards the total.
type connLimiter struct {
	net.Listener
	max, perIP     int // <= 0: no limit
	exempt         []netip.Prefix
	total, address string // the limit names of the two limits
	// refuse, if set, tells a refused client why before its connection
	// is closed; reason is the limit's name.
	refuse func(c net.Conn, limit string)
	// admits, if set, may refuse the peers it does not admit
	// (LimitGRPCRefusals).
	admits   func(peer netip.Addr) bool
	onReject func(limit string)
	logs     *lograte.Limiter // refusals and accept errors

	linger chan struct{} // a slot for each refused connection lingering

	mu    sync.Mutex
	n     int
	byIP  map[netip.Addr]int
	conns map[string]*limitedConn // by remote address, if track
	track bool
}

func newConnLimiter(ln net.Listener, log *slog.Logger, onReject func(string)) *connLimiter {
	return &connLimiter{
		Listener: ln,
		onReject: onReject,
		logs:     lograte.New(log, 0),
		linger:   make(chan struct{}, lingering),
		byIP:     make(map[netip.Addr]int),
		conns:    make(map[string]*limitedConn),
	}
}

// Accept returns the next connection within the limits, refusing the
// others; an accept error (such as running out of file descriptors) is
// logged, at most once a second, and returned, so that the server backs
// off and tries again.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.logs.Log(context.Background(), slog.LevelWarn, "failed to accept a connection", "addr", l.Addr().String(), "err", err)
			}
			return nil, err
		}
		if lc := l.admit(c); lc != nil {
			return lc, nil
		}
	}
}

// admit counts c and wraps it, or refuses it and returns nil.
func (l *connLimiter) admit(c net.Conn) *limitedConn {
	peer := netaddr.Of(c.RemoteAddr())
	ip := netaddr.Key(peer)
	counted := !netaddr.In(peer, l.exempt)
	l.mu.Lock()
	limit := ""
	switch {
	case l.max > 0 && l.n >= l.max:
		limit = l.total
	case counted && l.perIP > 0 && l.byIP[ip] >= l.perIP:
		limit = l.address
	case l.admits != nil && !l.admits(peer):
		limit = LimitGRPCRefusals
	}
	if limit != "" {
		l.mu.Unlock()
		if l.onReject != nil {
			l.onReject(limit)
		}
		l.logs.Log(context.Background(), slog.LevelWarn, "refused a connection: "+limitText[limit], "addr", l.Addr().String(), "remote", c.RemoteAddr().String(), "limit", limit)
		l.turnAway(c, limit)
		return nil
	}
	l.n++
	if counted {
		l.byIP[ip]++
	}
	lc := &limitedConn{Conn: c, l: l, ip: ip, counted: counted}
	if l.track {
		l.conns[c.RemoteAddr().String()] = lc
	}
	l.mu.Unlock()
	return lc
}

// lingering bounds the refused connections that linger at once (see
// turnAway).
const lingering = 64

// turnAway closes a refused connection, first telling the client why if
// the limiter can. Closed at once, a connection whose client has sent
// bytes the node did not read is reset, and a reset makes the client's
// system drop the answer unread: so, while few do, a refused connection
// lingers for up to a second, answered and its input thrown away, until
// the client closes it. Past that many, refused connections are just
// closed.
func (l *connLimiter) turnAway(c net.Conn, limit string) {
	if l.refuse == nil {
		c.Close()
		return
	}
	select {
	case l.linger <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.linger }()
		c.SetDeadline(time.Now().Add(time.Second))
		l.refuse(c, limit)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		io.Copy(io.Discard, io.LimitReader(c, 64<<10))
		c.Close()
	}()
}

// limitText says in words why a limit refused a connection.
var limitText = map[string]string{
	LimitHTTPConns:      "too many HTTP connections",
	LimitHTTPConnsPerIP: "too many HTTP connections from one address",
	LimitGRPCConns:      "too many gRPC connections",
	LimitGRPCConnsPerIP: "too many gRPC connections from one address",
	LimitGRPCRefusals:   "too many refused or unauthenticated calls from your address",
}

// lookup returns the connection whose peer is remote, if it is tracked.
func (l *connLimiter) lookup(remote string) *limitedConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns[remote]
}

// Open returns how many connections the limiter holds.
func (l *connLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

func (l *connLimiter) release(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	if c.counted {
		if l.byIP[c.ip]--; l.byIP[c.ip] <= 0 {
			delete(l.byIP, c.ip)
		}
	}
	if l.track {
		delete(l.conns, c.RemoteAddr().String())
	}
}

// handOff stops counting the connection behind c, which has left the
// listener's care: net/http calls it when a connection is hijacked, since
// the WebSocket edge counts upgraded connections by its own limits.
func handOff(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if lc, ok := c.(*limitedConn); ok {
		lc.release()
	}
}

// limitedConn is a connection a connLimiter counts until it is closed or
// handed off.
type limitedConn struct {
	net.Conn
	l       *connLimiter
	ip      netip.Addr
	counted bool        // towards the per-address limit
	closing atomic.Bool // a close is on its way (see grpcGuard.spend)
	once    sync.Once
}

func (c *limitedConn) release() { c.once.Do(func() { c.l.release(c) }) }

// Close releases the connection's place and closes it.
func (c *limitedConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// SyscallConn exposes the socket, so that the WebSocket edge can watch
// and write it without a goroutine.
func (c *limitedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("connection has no file descriptor")
	}
	return sc.SyscallConn()
}

// CloseWrite half-closes the connection, as net/http does before it
// closes a connection whose client may still be sending.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// refuseHTTP answers a plain HTTP client refused at accept: 503 when the
// listener is full, 429 when its address holds too many connections.
func refuseHTTP(c net.Conn, limit string) {
	code := http.StatusServiceUnavailable
	if limit == LimitHTTPConnsPerIP {
		code = http.StatusTooManyRequests
	}
	body := limitText[limit] + ": retry later\n"
	c.Write([]byte("HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nRetry-After: 5\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body))
}

// refuseGRPC answers a plain-text gRPC client refused at accept: its
// first call fails with RESOURCE_EXHAUSTED saying why, and a GOAWAY ends
// the connection.
func refuseGRPC(c net.Conn, limit string) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
		return
	}
	bw := bufio.NewWriter(c)
	fr := http2.NewFramer(bw, bufio.NewReader(c))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 16 << 10
	fr.WriteSettings()
	bw.Flush()
	msg := limitText[limit] + ": retry later"
	for range 16 {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
				bw.Flush()
			}
		case *http2.MetaHeadersFrame:
			var hb bytes.Buffer
			enc := hpack.NewEncoder(&hb)
			for _, hf := range [][2]string{
				{":status", "200"},
				{"content-type", "application/grpc"},
				{"grpc-status", strconv.Itoa(int(codes.ResourceExhausted))},
				{"grpc-message", msg},
			} {
				enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
			}
			id := f.Header().StreamID
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: true})
			fr.WriteGoAway(id, http2.ErrCodeEnhanceYourCalm, []byte(msg))
			bw.Flush()
			return
		}
	}
}
