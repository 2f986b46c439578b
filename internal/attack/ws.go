package attack

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/switchboard-rt/switchboard/internal/wsframe"
)

// upgradeRequest is a WebSocket upgrade request for /ws on host, with
// extra header lines.
func upgradeRequest(host string, extra ...string) string {
	var key [16]byte
	rand.Read(key[:])
	lines := append([]string{
		"GET /ws HTTP/1.1",
		"Host: " + host,
		"Upgrade: websocket",
		"Connection: Upgrade",
		"Sec-WebSocket-Version: 13",
		"Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key[:]),
	}, extra...)
	return strings.Join(lines, "\r\n") + "\r\n\r\n"
}

// answer names a refusal or failure for a tally: the HTTP status, "cut"
// when the node closed the connection without an answer, or "error".
func answer(resp *http.Response, err error) string {
	switch {
	case err == nil:
		return strconv.Itoa(resp.StatusCode)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "cut"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "error"
}

// upgrade opens a connection and upgrades it; it returns the connection
// with its reader after a 101, and the answer otherwise.
func upgrade(ctx context.Context, t Target, dial func(net.Dialer) net.Dialer, extra ...string) (net.Conn, *bufio.Reader, string) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if t.From != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(t.From)}
	}
	if dial != nil {
		d = dial(d)
	}
	c, err := d.DialContext(ctx, "tcp", t.HTTP)
	if err != nil {
		return nil, nil, answer(nil, err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, upgradeRequest(t.HTTP, extra...)); err != nil {
		c.Close()
		return nil, nil, answer(nil, err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		return nil, nil, answer(resp, err)
	}
	c.SetDeadline(time.Time{})
	return c, br, "101"
}

// smallReceiveBuffer makes a dialer's sockets take little before the
// sender's buffers fill, as a client that stops reading on purpose does.
func smallReceiveBuffer(d net.Dialer) net.Dialer {
	d.Control = func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}
	return d
}

// SlowReaders opens WebSocket connections that never read a byte after
// the upgrade, with small receive buffers: every frame the node sends them
// stays on the node. Pair it with a Publisher sending large messages.
type SlowReaders struct {
	Conns int
}

// Run opens the connections, 64 at a time, and holds them.
func (a SlowReaders) Run(ctx context.Context, t Target, tally *Tally) error {
	var (
		mu    sync.Mutex
		conns []net.Conn
		next  = make(chan struct{}, a.Conns)
	)
	for range a.Conns {
		next <- struct{}{}
	}
	close(next)
	workers(min(64, a.Conns), func(int) {
		for range next {
			if ctx.Err() != nil {
				return
			}
			c, _, answer := upgrade(ctx, t, smallReceiveBuffer)
			tally.Add(answer, 1)
			if c != nil {
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}
	})
	hold(ctx, conns)
	return nil
}

// IdleHTTP opens keep-alive HTTP connections that each send one GET
// /healthz and then stay idle, never upgrading.
type IdleHTTP struct {
	Conns int
}

// Run opens the connections, 256 at a time, and holds them; it tallies
// the answers, "open" for the connections held at the end and "closed
// idle" for those the node closed while idle.
func (a IdleHTTP) Run(ctx context.Context, t Target, tally *Tally) error {
	next := make(chan struct{}, a.Conns)
	for range a.Conns {
		next <- struct{}{}
	}
	close(next)
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	workers(min(256, a.Conns), func(int) {
		for range next {
			if ctx.Err() != nil {
				return
			}
			c, err := t.dial(ctx, t.HTTP)
			if err != nil {
				tally.Add(answer(nil, err), 1)
				continue
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			unbind := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
			br := bufio.NewReader(c)
			_, err = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: "+t.HTTP+"\r\n\r\n")
			var resp *http.Response
			if err == nil {
				resp, err = http.ReadResponse(br, nil)
			}
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
			}
			if !unbind() {
				c.Close()
				return
			}
			tally.Add(answer(resp, err), 1)
			if err != nil || resp.StatusCode != http.StatusOK {
				c.Close()
				continue
			}
			c.SetDeadline(time.Time{})
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := br.ReadByte(); ctx.Err() == nil && err != nil {
					tally.Add("closed idle", 1)
				}
			}()
		}
	})
	mu.Lock()
	tally.Add("open", int64(len(conns)))
	mu.Unlock()
	hold(ctx, conns)
	wg.Wait()
	return nil
}

// BadOrigin sends upgrade requests whose Origin is Bytes long and
// refused, one after another on each of Workers connections at a time.
type BadOrigin struct {
	Workers int
	Bytes   int
}

// Run sends the requests until ctx ends.
func (a BadOrigin) Run(ctx context.Context, t Target, tally *Tally) error {
	origin := "Origin: https://" + strings.Repeat("a", max(1, a.Bytes-len("https://.example"))) + ".example"
	workers(a.Workers, func(int) {
		for ctx.Err() == nil {
			c, _, answer := upgrade(ctx, t, nil, origin)
			if c != nil {
				c.Close()
			}
			tally.Add(answer, 1)
		}
	})
	return nil
}

// BigHeaders opens connections that each send Bytes of request headers
// for an upgrade and never finish them, so the node holds what it has
// read until its header timeout.
type BigHeaders struct {
	Conns int
	Bytes int
}

// Run opens the connections, 64 at a time, and holds them; it tallies
// the answers ("cut" for a connection closed without one) and "open" for
// the connections still unanswered when ctx ends.
func (a BigHeaders) Run(ctx context.Context, t Target, tally *Tally) error {
	head := "GET /ws HTTP/1.1\r\nHost: " + t.HTTP + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	pad := []byte(strings.Repeat("X-Pad: "+strings.Repeat("p", 4000)+"\r\n", max(1, a.Bytes/4009)))
	next := make(chan struct{}, a.Conns)
	for range a.Conns {
		next <- struct{}{}
	}
	close(next)
	var (
		mu       sync.Mutex
		conns    []net.Conn
		answers  sync.WaitGroup
		answered atomic.Int64
	)
	workers(min(64, a.Conns), func(int) {
		for range next {
			if ctx.Err() != nil {
				return
			}
			c, err := t.dial(ctx, t.HTTP)
			if err != nil {
				tally.Add(answer(nil, err), 1)
				continue
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			answers.Add(1)
			go func() {
				defer answers.Done()
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if ctx.Err() == nil {
					answered.Add(1)
					tally.Add(answer(resp, err), 1)
				}
			}()
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, head); err == nil {
				c.Write(pad)
			}
		}
	})
	<-ctx.Done()
	mu.Lock()
	tally.Add("open", int64(len(conns))-answered.Load())
	mu.Unlock()
	hold(ctx, conns)
	answers.Wait()
	return nil
}

// FrameKind is what a FrameFlood sends.
type FrameKind int

// The frame floods.
const (
	// Continuation: a text frame that never ends, then empty
	// continuation frames.
	Continuation FrameKind = iota
	// Ping: empty pings, which the node must answer.
	Ping
	// Pong: empty pongs nobody asked for.
	Pong
)

func (k FrameKind) String() string {
	return [...]string{"continuation", "ping", "pong"}[k]
}

// FrameFlood upgrades Conns connections and sends empty frames of one
// kind on each as fast as the node takes them.
type FrameFlood struct {
	Conns int
	Kind  FrameKind
}

// Run floods until ctx ends or the node closes the connections; it
// tallies frames sent ("frames") and how each connection ended: its close
// code, "cut", or "open" when it outlived the attack.
func (a FrameFlood) Run(ctx context.Context, t Target, tally *Tally) error {
	op := byte(wsframe.OpContinuation)
	switch a.Kind {
	case Ping:
		op = wsframe.FinBit | wsframe.OpPing
	case Pong:
		op = wsframe.FinBit | wsframe.OpPong
	}
	// Empty masked frames: the opcode, the mask bit and a zero mask.
	const frames = 8192
	buf := make([]byte, 0, 6*frames)
	for range frames {
		buf = append(buf, op, wsframe.MaskBit, 0, 0, 0, 0)
	}
	workers(a.Conns, func(int) {
		c, br, answer := upgrade(ctx, t, nil)
		if c == nil {
			tally.Add(answer, 1)
			return
		}
		defer c.Close()
		ended := make(chan string, 1)
		go func() { ended <- closeCode(br) }()
		stop := context.AfterFunc(ctx, func() { c.SetWriteDeadline(time.Unix(1, 0)) })
		defer stop()
		if a.Kind == Continuation {
			c.Write([]byte{wsframe.OpText, wsframe.MaskBit, 0, 0, 0, 0})
		}
		for ctx.Err() == nil {
			if _, err := c.Write(buf); err != nil {
				break
			}
			tally.Add("frames", frames)
		}
		select {
		case how := <-ended:
			tally.Add(how, 1)
		case <-ctx.Done():
			tally.Add("open", 1)
		}
	})
	return nil
}

// closeCode reads a server's frames until its close frame and returns the
// close code, or "cut" when the connection ends without one.
func closeCode(br *bufio.Reader) string {
	for {
		h, err := br.Peek(2)
		if err != nil {
			return "cut"
		}
		n := int(h[1] & 0x7f)
		skip := 2
		switch n {
		case 126:
			b, err := br.Peek(4)
			if err != nil {
				return "cut"
			}
			n, skip = int(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			b, err := br.Peek(10)
			if err != nil {
				return "cut"
			}
			n, skip = int(binary.BigEndian.Uint64(b[2:])), 10
		}
		op := h[0] & 0x0f
		br.Discard(skip)
		p := make([]byte, n)
		if _, err := io.ReadFull(br, p); err != nil {
			return "cut"
		}
		if op == wsframe.OpClose && len(p) >= 2 {
			return fmt.Sprintf("%d %s", binary.BigEndian.Uint16(p), p[2:])
		}
	}
}

// Scrape fetches /metrics as fast as Workers keep-alive connections
// allow.
type Scrape struct {
	Workers int
	Gzip    bool
}

// Run scrapes until ctx ends, tallying the statuses and "bytes" read.
func (a Scrape) Run(ctx context.Context, t Target, tally *Tally) error {
	tr := &http.Transport{
		DialContext:         func(ctx context.Context, _, addr string) (net.Conn, error) { return t.dial(ctx, addr) },
		MaxIdleConnsPerHost: a.Workers,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	workers(a.Workers, func(int) {
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.HTTP+"/metrics", nil)
			if a.Gzip {
				req.Header.Set("Accept-Encoding", "gzip")
			}
			resp, err := hc.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					tally.Add(answer(nil, err), 1)
				}
				continue
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			tally.Add(strconv.Itoa(resp.StatusCode), 1)
			tally.Add("bytes", n)
		}
	})
	return nil
}
