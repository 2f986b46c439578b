//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-rt/switchboard/internal/wsframe"
)

// Close codes (RFC 6455 section 7.4.1).
const (
	closeNormal   = 1000
	closeNoStatus = 1005
)

// wsGUID is appended to the handshake key to compute Sec-WebSocket-Accept
// (RFC 6455 section 1.3).
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// wsReadBufferSize is the size of the reader that first receives the
// upgrade response and then every frame.
const wsReadBufferSize = 4096

// closeError is returned by next when the server closed the connection
// with a close frame.
type closeError struct {
	code   int
	reason string
}

func (e closeError) Error() string {
	return fmt.Sprintf("websocket closed with status %d and reason %q", e.code, e.reason)
}

// closeCode returns the close code carried by err, or -1 when err is not
// a closeError.
func closeCode(err error) int {
	var ce closeError
	if errors.As(err, &ce) {
		return ce.code
	}
	return -1
}

// wsDialer opens client connections to one ws:// URL. It is safe for
// concurrent use.
type wsDialer struct {
	addr string // host:port to connect to
	req  []byte // the upgrade request up to the Sec-WebSocket-Key value
	net  net.Dialer
}

// newWSDialer prepares the upgrade request for rawURL, sending origin as
// the Origin header unless it is empty.
func newWSDialer(rawURL, origin string) (*wsDialer, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("failed to parse the WebSocket URL: %w", err)
	}
	switch u.Scheme {
	case "ws":
	case "wss":
		return nil, fmt.Errorf("failed to use %s: wss is not supported", rawURL)
	default:
		return nil, fmt.Errorf("failed to use %s: the scheme must be ws", rawURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("failed to use %s: no host", rawURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	req := fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
		u.RequestURI(), u.Host)
	if origin != "" {
		req = fmt.Appendf(req, "Origin: %s\r\n", origin)
	}
	req = append(req, "Sec-WebSocket-Key: "...)
	return &wsDialer{addr: addr, req: req, net: net.Dialer{Timeout: 10 * time.Second}}, nil
}

// dial connects and upgrades under ctx. Messages are read into a buffer
// of initially bufSize bytes that may grow up to limit bytes.
func (d *wsDialer) dial(ctx context.Context, bufSize, limit int) (*wsConn, error) {
	nc, err := d.net.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, fmt.Errorf("failed to connect: %w", err)
	}
	w := &wsConn{
		nc:    nc,
		br:    bufio.NewReaderSize(nc, wsReadBufferSize),
		msg:   make([]byte, bufSize),
		limit: limit,
		wbuf:  make([]byte, 0, 256),
	}
	release := w.bind(ctx)
	err = w.handshake(d.req)
	if err = release(err); err != nil {
		nc.Close()
		return nil, err
	}
	return w, nil
}

// wsConn is a client WebSocket connection without extensions. One
// goroutine reads with next; any goroutine may write or close.
type wsConn struct {
	nc    net.Conn
	br    *bufio.Reader
	msg   []byte                          // the last data message, reused
	limit int                             // largest data message accepted
	ctl   [wsframe.MaxControlPayload]byte // the last control frame's payload

	wmu  sync.Mutex
	wbuf []byte // the frame being written, reused under wmu
}

// bind makes reads and writes fail when ctx is done, until the returned
// function is called with the outcome of the bound work; it returns that
// outcome, or ctx's error when ctx ended the work.
func (w *wsConn) bind(ctx context.Context) func(error) error {
	if d, ok := ctx.Deadline(); ok {
		w.nc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { w.nc.SetDeadline(time.Unix(1, 0)) })
	return func(err error) error {
		if !stop() {
			if err == nil {
				err = fmt.Errorf("failed to finish in time: %w", context.Cause(ctx))
			}
			return err
		}
		if err == nil {
			if err = w.nc.SetDeadline(time.Time{}); err != nil {
				err = fmt.Errorf("failed to clear the deadline: %w", err)
			}
		}
		return err
	}
}

// handshake sends the upgrade request, whose start is req, and checks
// the response.
func (w *wsConn) handshake(req []byte) error {
	var raw [16]byte
	rand.Read(raw[:])
	key := base64.StdEncoding.EncodeToString(raw[:])
	w.wbuf = append(append(append(w.wbuf[:0], req...), key...), "\r\n\r\n"...)
	if _, err := w.nc.Write(w.wbuf); err != nil {
		return fmt.Errorf("failed to send the upgrade request: %w", err)
	}
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil {
		return fmt.Errorf("failed to read the upgrade response: %w", err)
	}
	resp.Body.Close()
	return checkUpgrade(resp, key)
}

// checkUpgrade verifies that resp accepts the upgrade requested with key.
func checkUpgrade(resp *http.Response, key string) error {
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("failed to upgrade: HTTP %s", resp.Status)
	}
	if !hasToken(resp.Header, "Upgrade", "websocket") {
		return fmt.Errorf("failed to upgrade: Upgrade header is %q", resp.Header.Get("Upgrade"))
	}
	if !hasToken(resp.Header, "Connection", "upgrade") {
		return fmt.Errorf("failed to upgrade: Connection header is %q", resp.Header.Get("Connection"))
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), acceptKey(key); got != want {
		return fmt.Errorf("failed to upgrade: Sec-WebSocket-Accept is %q, want %q", got, want)
	}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		return fmt.Errorf("failed to upgrade: unrequested extensions %q", ext)
	}
	return nil
}

// hasToken reports whether the comma-separated header name lists token,
// ignoring case.
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// acceptKey is the Sec-WebSocket-Accept value that answers key.
func acceptKey(key string) string {
	sum := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// frameHeader is a parsed frame header.
type frameHeader struct {
	fin    bool
	opcode byte
	length int
}

// next returns the next data message, reassembled from its frames, and
// answers the control frames before it. The bytes are valid until the
// next call. A close frame is answered and returned as a closeError.
func (w *wsConn) next() ([]byte, error) {
	n := 0
	inMessage := false
	for {
		h, err := w.readHeader()
		if err != nil {
			return nil, err
		}
		if h.opcode >= wsframe.OpClose {
			if err := w.control(h); err != nil {
				return nil, err
			}
			continue
		}
		if err := checkSequence(h.opcode, inMessage); err != nil {
			return nil, err
		}
		inMessage = true
		if h.length > w.limit-n {
			return nil, fmt.Errorf("failed to read a message: larger than the limit of %d bytes", w.limit)
		}
		if n+h.length > len(w.msg) {
			w.grow(n + h.length)
		}
		if _, err := io.ReadFull(w.br, w.msg[n:n+h.length]); err != nil {
			return nil, fmt.Errorf("failed to read a frame: %w", err)
		}
		n += h.length
		if h.fin {
			return w.msg[:n], nil
		}
	}
}

// checkSequence verifies that a data frame with opcode may follow: a
// continuation only inside a message, text or binary only outside.
func checkSequence(opcode byte, inMessage bool) error {
	switch opcode {
	case wsframe.OpContinuation:
		if !inMessage {
			return errors.New("failed to read a message: continuation frame without a start")
		}
	case wsframe.OpText, wsframe.OpBinary:
		if inMessage {
			return errors.New("failed to read a message: new message inside a fragmented one")
		}
	default:
		return fmt.Errorf("failed to read a message: unknown opcode %#x", opcode)
	}
	return nil
}

// grow enlarges the message buffer to hold at least size bytes, keeping
// its content.
func (w *wsConn) grow(size int) {
	msg := make([]byte, max(size, 2*len(w.msg)))
	copy(msg, w.msg)
	w.msg = msg
}

// readHeader reads and validates the next frame header.
func (w *wsConn) readHeader() (frameHeader, error) {
	b, err := w.br.Peek(2)
	if err != nil {
		return frameHeader{}, fmt.Errorf("failed to read a frame: %w", err)
	}
	h := frameHeader{fin: b[0]&wsframe.FinBit != 0, opcode: b[0] & 0x0f}
	switch {
	case b[0]&0x70 != 0:
		return h, errors.New("failed to read a frame: reserved bits set")
	case b[1]&wsframe.MaskBit != 0:
		return h, errors.New("failed to read a frame: the server masked it")
	}
	size := 2
	switch b[1] & 0x7f {
	case 126:
		size = 4
	case 127:
		size = 10
	}
	if size > 2 {
		if b, err = w.br.Peek(size); err != nil {
			return h, fmt.Errorf("failed to read a frame: %w", err)
		}
	}
	switch size {
	case 2:
		h.length = int(b[1] & 0x7f)
	case 4:
		h.length = int(binary.BigEndian.Uint16(b[2:]))
	default:
		n := binary.BigEndian.Uint64(b[2:])
		if n > 1<<62 {
			return h, fmt.Errorf("failed to read a frame: length %d", n)
		}
		h.length = int(n)
	}
	w.br.Discard(size)
	return h, nil
}

// control handles the control frame whose header is h: a ping is
// answered, a pong ignored, a close answered and returned as closeError.
func (w *wsConn) control(h frameHeader) error {
	if !h.fin || h.length > len(w.ctl) {
		return errors.New("failed to read a control frame: fragmented or longer than 125 bytes")
	}
	p := w.ctl[:h.length]
	if _, err := io.ReadFull(w.br, p); err != nil {
		return fmt.Errorf("failed to read a control frame: %w", err)
	}
	switch h.opcode {
	case wsframe.OpPing:
		return w.writeFrame(wsframe.OpPong, p)
	case wsframe.OpClose:
		return w.answerClose(p)
	case wsframe.OpPong:
		return nil
	}
	return fmt.Errorf("failed to read a control frame: unknown opcode %#x", h.opcode)
}

// answerClose answers the close frame with payload p, echoing its code,
// and returns it as a closeError.
func (w *wsConn) answerClose(p []byte) error {
	ce := closeError{code: closeNoStatus}
	switch {
	case len(p) == 1:
		return errors.New("failed to read a close frame: 1-byte payload")
	case len(p) >= 2:
		ce = closeError{code: int(binary.BigEndian.Uint16(p)), reason: string(p[2:])}
		p = p[:2]
	}
	if err := w.writeFrame(wsframe.OpClose, p); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("failed to answer %w: %w", ce, err)
	}
	return ce
}

// writeText sends p as one text message.
func (w *wsConn) writeText(p []byte) error {
	return w.writeFrame(wsframe.OpText, p)
}

// writeFrame sends p as one final, masked frame with opcode.
func (w *wsConn) writeFrame(opcode byte, p []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	b := wsframe.AppendHeader(w.wbuf[:0], opcode, len(p), true)
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], mrand.Uint32())
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, p...)
	maskBytes(b[start:], key)
	w.wbuf = b
	if _, err := w.nc.Write(b); err != nil {
		return fmt.Errorf("failed to write a frame: %w", err)
	}
	return nil
}

// maskBytes XORs p with the repeated masking key.
func maskBytes(p []byte, key [4]byte) {
	k := uint64(binary.LittleEndian.Uint32(key[:]))
	k |= k << 32
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, binary.LittleEndian.Uint64(p)^k)
		p = p[8:]
	}
	for i := range p {
		p[i] ^= key[i&3]
	}
}

// close closes the connection at once, without a close handshake; a
// blocked next returns an error wrapping net.ErrClosed.
func (w *wsConn) close() error {
	return w.nc.Close()
}
