//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-rt/switchboard/internal/wsframe"
)

// payload returns n deterministic bytes that differ with seed.
func payload(n, seed int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = 'a' + byte((i*7+seed)%26)
	}
	return p
}

// serveWS runs fn on every connection accepted by coder/websocket until
// the test ends, and returns the ws:// URL and fn's results.
func serveWS(t *testing.T, fn func(ctx context.Context, c *websocket.Conn) error) (string, <-chan error) {
	t.Helper()
	results := make(chan error, 16)
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Add(1)
		defer wg.Done()
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			results <- err
			return
		}
		defer c.CloseNow()
		results <- fn(r.Context(), c)
	}))
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws", results
}

// dialTest connects to url, with a 64-byte message buffer that must grow
// and a 1 MiB limit, and closes the connection when the test ends.
func dialTest(t *testing.T, url string) *wsConn {
	t.Helper()
	d, err := newWSDialer(url, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w, err := d.dial(ctx, 64, 1<<20)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { w.close() })
	return w
}

// result waits for the server's outcome.
func result(t *testing.T, results <-chan error) error {
	t.Helper()
	select {
	case err := <-results:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not finish within 5s")
		return nil
	}
}

func TestWSReceive(t *testing.T) {
	t.Parallel()
	sizes := []int{0, 125, 126, 65535, 65536}
	parts := [][]byte{payload(6, 1), payload(200, 2), payload(70000, 3)}
	url, results := serveWS(t, func(ctx context.Context, c *websocket.Conn) error {
		for i, n := range sizes {
			if err := c.Write(ctx, websocket.MessageText, payload(n, i)); err != nil {
				return err
			}
		}
		if err := c.Write(ctx, websocket.MessageBinary, payload(300, 9)); err != nil {
			return err
		}
		// The writer sends one frame per Write and an empty final frame.
		mw, err := c.Writer(ctx, websocket.MessageText)
		if err != nil {
			return err
		}
		for _, p := range parts {
			if _, err := mw.Write(p); err != nil {
				return err
			}
		}
		if err := mw.Close(); err != nil {
			return err
		}
		return c.Write(ctx, websocket.MessageText, []byte("after"))
	})
	w := dialTest(t, url)
	want := [][]byte{}
	for i, n := range sizes {
		want = append(want, payload(n, i))
	}
	want = append(want, payload(300, 9), bytes.Join(parts, nil), []byte("after"))
	for i, p := range want {
		got, err := w.next()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, p) {
			t.Fatalf("message %d: got %d bytes, want %d intact bytes", i, len(got), len(p))
		}
	}
	if err := result(t, results); err != nil {
		t.Errorf("server: %v", err)
	}
}

func TestWSPing(t *testing.T) {
	t.Parallel()
	url, results := serveWS(t, func(ctx context.Context, c *websocket.Conn) error {
		ctx = c.CloseRead(ctx)
		for range 3 {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := c.Ping(pctx)
			cancel()
			if err != nil {
				return err
			}
		}
		return c.Write(ctx, websocket.MessageText, []byte("pinged"))
	})
	w := dialTest(t, url)
	got, err := w.next()
	if err != nil || string(got) != "pinged" {
		t.Fatalf("next = %q, %v; want pinged", got, err)
	}
	if err := result(t, results); err != nil {
		t.Errorf("server: %v", err)
	}
}

func TestWSServerClose(t *testing.T) {
	t.Parallel()
	url, results := serveWS(t, func(ctx context.Context, c *websocket.Conn) error {
		return c.Close(websocket.StatusGoingAway, "bye")
	})
	w := dialTest(t, url)
	_, err := w.next()
	var ce closeError
	if !errors.As(err, &ce) || ce.code != 1001 || ce.reason != "bye" {
		t.Fatalf("next: %v; want closeError 1001 bye", err)
	}
	// Close returns nil only when the client echoed the code.
	if err := result(t, results); err != nil {
		t.Errorf("server close handshake: %v", err)
	}
}

func TestWSWriteText(t *testing.T) {
	t.Parallel()
	url, results := serveWS(t, func(ctx context.Context, c *websocket.Conn) error {
		c.SetReadLimit(1 << 20)
		for {
			typ, p, err := c.Read(ctx)
			if websocket.CloseStatus(err) == websocket.StatusNormalClosure || errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if typ != websocket.MessageText {
				return fmt.Errorf("got message type %v, want text", typ)
			}
			if err := c.Write(ctx, typ, p); err != nil {
				return err
			}
		}
	})
	w := dialTest(t, url)
	for i, n := range []int{0, 1, 7, 125, 126, 65535, 65536, 100000} {
		p := payload(n, i)
		if err := w.writeText(p); err != nil {
			t.Fatalf("writeText(%d bytes): %v", n, err)
		}
		got, err := w.next()
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("echo of %d bytes: got %d bytes, %v; want them intact", n, len(got), err)
		}
	}

	// Concurrent writers must not interleave their frames.
	const writers, each = 4, 50
	p := payload(300, 5)
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				if err := w.writeText(p); err != nil {
					t.Errorf("writeText: %v", err)
					return
				}
			}
		})
	}
	for i := range writers * each {
		got, err := w.next()
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("echo %d: got %d bytes, %v; want them intact", i, len(got), err)
		}
	}
	wg.Wait()
	if err := w.writeFrame(wsframe.OpClose, []byte{0x03, 0xe8}); err != nil {
		t.Fatal(err)
	}
	if err := result(t, results); err != nil {
		t.Errorf("server: %v", err)
	}
}

func TestWSDialRejected(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "go away", http.StatusForbidden)
	}))
	defer srv.Close()
	d, err := newWSDialer("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.dial(context.Background(), 64, 1024)
	if err == nil || !strings.Contains(err.Error(), "HTTP 403") {
		t.Fatalf("dial: %v; want an error with HTTP 403", err)
	}
}

// serveRaw runs handle on every TCP connection accepted until the test
// ends, and returns the listening address.
func serveRaw(t *testing.T, handle func(nc net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer nc.Close()
				handle(nc)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// upgrade reads the upgrade request on nc and accepts it, answering
// Sec-WebSocket-Accept with accept(key).
func upgrade(nc net.Conn, accept func(key string) string) (*bufio.Reader, *http.Request, error) {
	br := bufio.NewReader(nc)
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, err
	}
	_, err = fmt.Fprintf(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		accept(req.Header.Get("Sec-WebSocket-Key")))
	return br, req, err
}

// serverFrame encodes an unmasked frame, or a masked one with mask.
func serverFrame(fin bool, opcode byte, p []byte, mask bool) []byte {
	b := []byte{opcode, 0}
	if fin {
		b[0] |= 0x80
	}
	switch {
	case len(p) < 126:
		b[1] = byte(len(p))
	case len(p) <= 0xffff:
		b[1] = 126
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	default:
		b[1] = 127
		b = binary.BigEndian.AppendUint64(b, uint64(len(p)))
	}
	if mask {
		b[1] |= 0x80
		b = append(b, 0, 0, 0, 0)
	}
	return append(b, p...)
}

// readClientFrame reads one frame from the client, checks that it is
// final and masked, and returns it unmasked.
func readClientFrame(br *bufio.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x80 == 0 || h[1]&0x80 == 0 {
		return 0, nil, fmt.Errorf("frame header %x: want final and masked", h)
	}
	n := int(h[1] & 0x7f)
	if n >= 126 {
		return 0, nil, fmt.Errorf("frame length %d: want a short frame", n)
	}
	p := make([]byte, 4+n)
	if _, err := io.ReadFull(br, p); err != nil {
		return 0, nil, err
	}
	for i := range n {
		p[4+i] ^= p[i&3]
	}
	return h[0] & 0x0f, p[4:], nil
}

// scripted dials a raw server that upgrades and writes script. Then it
// hangs up if asked to, or else returns the first frame the client sends.
func scripted(t *testing.T, script []byte, limit int, hangUp bool) (*wsConn, <-chan []byte) {
	t.Helper()
	sent := make(chan []byte, 1)
	addr := serveRaw(t, func(nc net.Conn) {
		br, _, err := upgrade(nc, acceptKey)
		if err != nil {
			return
		}
		if _, err := nc.Write(script); err != nil || hangUp {
			return
		}
		op, p, err := readClientFrame(br)
		if err == nil {
			sent <- append([]byte{op}, p...)
		}
		io.Copy(io.Discard, br)
	})
	d, err := newWSDialer("ws://"+addr+"/", "")
	if err != nil {
		t.Fatal(err)
	}
	w, err := d.dial(context.Background(), 8, limit)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { w.close() })
	return w, sent
}

func TestWSFramesInterleaved(t *testing.T) {
	t.Parallel()
	script := bytes.Join([][]byte{
		serverFrame(false, wsframe.OpText, []byte("Hel"), false),
		serverFrame(true, wsframe.OpPing, []byte("p1"), false),
		serverFrame(false, wsframe.OpContinuation, []byte("lo, "), false),
		serverFrame(true, wsframe.OpPong, []byte("x"), false),
		serverFrame(true, wsframe.OpContinuation, []byte("world"), false),
	}, nil)
	w, sent := scripted(t, script, 1024, false)
	got, err := w.next()
	if err != nil || string(got) != "Hello, world" {
		t.Fatalf("next = %q, %v; want Hello, world", got, err)
	}
	select {
	case f := <-sent:
		if f[0] != wsframe.OpPong || string(f[1:]) != "p1" {
			t.Errorf("client answered opcode %#x %q; want a pong p1", f[0], f[1:])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong within 5s")
	}
}

func TestWSFrameErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		script []byte
		want   string
	}{
		{"masked", serverFrame(true, wsframe.OpText, []byte("hi"), true), "masked"},
		{"limit", serverFrame(true, wsframe.OpText, payload(200, 0), false), "limit of 100 bytes"},
		{"fragments over limit", append(serverFrame(false, wsframe.OpText, payload(60, 0), false),
			serverFrame(true, wsframe.OpContinuation, payload(60, 0), false)...), "limit of 100 bytes"},
		{"continuation first", serverFrame(true, wsframe.OpContinuation, []byte("x"), false), "continuation"},
		{"nested start", append(serverFrame(false, wsframe.OpText, []byte("x"), false),
			serverFrame(true, wsframe.OpText, []byte("y"), false)...), "inside a fragmented"},
		{"reserved bits", []byte{0xc1, 0}, "reserved bits"},
		{"unknown opcode", serverFrame(true, 0x3, nil, false), "unknown opcode"},
		{"long ping", serverFrame(true, wsframe.OpPing, payload(126, 0), false), "control frame"},
		{"truncated", serverFrame(true, wsframe.OpText, []byte("x"), false)[:2], "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w, _ := scripted(t, tt.script, 100, true)
			_, err := w.next()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("next: %v; want an error with %q", err, tt.want)
			}
		})
	}
}

func TestWSCloseFrame(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		payload []byte
		code    int
		reason  string
		echo    []byte
	}{
		{"normal", []byte("\x03\xe8done"), 1000, "done", []byte("\x03\xe8")},
		{"no status", nil, 1005, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w, sent := scripted(t, serverFrame(true, wsframe.OpClose, tt.payload, false), 1024, false)
			_, err := w.next()
			var ce closeError
			if !errors.As(err, &ce) || ce.code != tt.code || ce.reason != tt.reason {
				t.Fatalf("next: %v; want closeError %d %q", err, tt.code, tt.reason)
			}
			f := <-sent
			if f[0] != wsframe.OpClose || !bytes.Equal(f[1:], tt.echo) {
				t.Errorf("client answered opcode %#x %x; want close %x", f[0], f[1:], tt.echo)
			}
		})
	}
}

func TestWSBadAccept(t *testing.T) {
	t.Parallel()
	addr := serveRaw(t, func(nc net.Conn) {
		upgrade(nc, func(string) string { return base64.StdEncoding.EncodeToString(make([]byte, 20)) })
	})
	d, err := newWSDialer("ws://"+addr+"/ws", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.dial(context.Background(), 64, 1024)
	if err == nil || !strings.Contains(err.Error(), "Sec-WebSocket-Accept") {
		t.Fatalf("dial: %v; want an error about Sec-WebSocket-Accept", err)
	}
}

// TestWSRequest checks the upgrade request itself.
func TestWSRequest(t *testing.T) {
	t.Parallel()
	reqs := make(chan *http.Request, 1)
	addr := serveRaw(t, func(nc net.Conn) {
		_, req, err := upgrade(nc, acceptKey)
		if err == nil {
			reqs <- req
		}
	})
	d, err := newWSDialer("ws://"+addr+"/socket.io/?EIO=4&transport=websocket", "https://example.com")
	if err != nil {
		t.Fatal(err)
	}
	w, err := d.dial(context.Background(), 64, 1024)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer w.close()
	req := <-reqs
	key, err := base64.StdEncoding.DecodeString(req.Header.Get("Sec-WebSocket-Key"))
	switch {
	case req.Method != http.MethodGet || req.RequestURI != "/socket.io/?EIO=4&transport=websocket" || req.Host != addr:
		t.Errorf("request %s %s for %s; want GET of the path and query for %s", req.Method, req.RequestURI, req.Host, addr)
	case req.Header.Get("Origin") != "https://example.com" || req.Header.Get("Sec-WebSocket-Version") != "13":
		t.Errorf("headers %v; want the Origin and version 13", req.Header)
	case !hasToken(req.Header, "Upgrade", "websocket") || !hasToken(req.Header, "Connection", "upgrade"):
		t.Errorf("headers %v; want the upgrade headers", req.Header)
	case err != nil || len(key) != 16:
		t.Errorf("Sec-WebSocket-Key %q: want 16 bytes in base64", req.Header.Get("Sec-WebSocket-Key"))
	}
}

// TestAcceptKey uses the example of RFC 6455 section 1.3.
func TestAcceptKey(t *testing.T) {
	t.Parallel()
	if got := acceptKey("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("acceptKey = %q; want s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", got)
	}
}

func TestWSDialer(t *testing.T) {
	t.Parallel()
	d, err := newWSDialer("ws://localhost/ws", "")
	if err != nil || d.addr != "localhost:80" || !bytes.Contains(d.req, []byte("Host: localhost\r\n")) || bytes.Contains(d.req, []byte("Origin")) {
		t.Errorf("newWSDialer = %+v, %v; want localhost:80 without an Origin", d, err)
	}
	for url, want := range map[string]string{
		"wss://localhost/ws":  "wss is not supported",
		"http://localhost/ws": "scheme must be ws",
		"ws:///ws":            "no host",
	} {
		if _, err := newWSDialer(url, ""); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("newWSDialer(%q): %v; want an error with %q", url, err, want)
		}
	}
}

// TestWSDialContext: a server that never answers the upgrade cannot hold
// the dial past its context.
func TestWSDialContext(t *testing.T) {
	t.Parallel()
	addr := serveRaw(t, func(nc net.Conn) { io.Copy(io.Discard, nc) })
	d, err := newWSDialer("ws://"+addr+"/ws", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	if _, err := d.dial(ctx, 64, 1024); err == nil {
		t.Fatal("dial succeeded; want an error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("dial took %v after the context was canceled", d)
	}
}

// TestWSCloseWhileReading: close ends a blocked next with net.ErrClosed,
// which ended does not count as a failure, like a normal closure.
func TestWSCloseWhileReading(t *testing.T) {
	t.Parallel()
	addr := serveRaw(t, func(nc net.Conn) {
		if br, _, err := upgrade(nc, acceptKey); err == nil {
			io.Copy(io.Discard, br)
		}
	})
	d, err := newWSDialer("ws://"+addr+"/ws", "")
	if err != nil {
		t.Fatal(err)
	}
	w, err := d.dial(context.Background(), 64, 1024)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error)
	go func() {
		_, err := w.next()
		errs <- err
	}()
	time.Sleep(20 * time.Millisecond)
	w.close()
	closedErr := <-errs
	if !errors.Is(closedErr, net.ErrClosed) {
		t.Fatalf("next after close: %v; want net.ErrClosed", closedErr)
	}
	for _, tt := range []struct {
		err    error
		failed bool
	}{
		{closedErr, false},
		{closeError{code: closeNormal}, false},
		{fmt.Errorf("failed to answer: %w", closeError{code: closeNormal}), false},
		{closeError{code: 1001, reason: "bye"}, true},
		{io.EOF, true},
	} {
		b := &bench{done: make(chan struct{})}
		b.remaining.Store(1)
		c := &conn{}
		c.ended(b, tt.err)
		if (c.err != nil) != tt.failed {
			t.Errorf("ended(%v) recorded %v; want failed %v", tt.err, c.err, tt.failed)
		}
	}
}

// TestDialRetriesReset: a connection reset during the upgrade is retried.
func TestDialRetriesReset(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	accepted := 0
	addr := serveRaw(t, func(nc net.Conn) {
		mu.Lock()
		accepted++
		first := accepted == 1
		mu.Unlock()
		if first {
			nc.(*net.TCPConn).SetLinger(0)
			return
		}
		if br, _, err := upgrade(nc, acceptKey); err == nil {
			io.Copy(io.Discard, br)
		}
	})
	d, err := newWSDialer("ws://"+addr+"/ws", "")
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{cfg: Config{DialRetries: 2, Payload: 128}.withDefaults(), dialers: [][]*wsDialer{{d}}}
	c, err := b.dial(context.Background(), 0)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.close()
	if b.retries.Load() != 1 {
		t.Errorf("%d retries; want 1", b.retries.Load())
	}
}

// loopReader repeats frames forever.
type loopReader struct {
	frames []byte
	off    int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m := copy(p[n:], r.frames[r.off:])
		n += m
		r.off = (r.off + m) % len(r.frames)
	}
	return n, nil
}

func BenchmarkReadMessage(b *testing.B) {
	msg := payload(128, 0)
	frames := bytes.Repeat(serverFrame(true, wsframe.OpText, msg, false), 64)
	w := &wsConn{
		br:    bufio.NewReaderSize(&loopReader{frames: frames}, wsReadBufferSize),
		msg:   make([]byte, 640),
		limit: 128 + 64<<10,
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		p, err := w.next()
		if err != nil || len(p) != len(msg) {
			b.Fatalf("next = %d bytes, %v", len(p), err)
		}
	}
}
