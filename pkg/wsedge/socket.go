package wsedge

import (
	"bufio"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/switchboard-rt/switchboard/internal/wsframe"
)

// socket is the writing side of an upgraded connection, shared by the
// WebSocket library and the hub's writer.
//
// The library writes control frames (pings, pongs, the close frame)
// through its buffered writer, which flushes each whole frame into Write.
// The hub's frames skip the library: a server frame is unmasked and, with
// compression off, just a header and the payload, so writeText encodes a
// batch into one pooled buffer and sends it in one syscall, without the
// lock, context watch and flush the library spends on every frame. Both
// paths write under mu, so every frame reaches the socket whole, and no
// data frame follows a close frame.
type socket struct {
	conn net.Conn
	// br is the library's buffered reader, which the edge also reads
	// between messages (see idle.go); raw waits for the connection to be
	// readable, nil when the connection has no file descriptor (TLS).
	br  *bufio.Reader
	raw syscall.RawConn

	mu        sync.Mutex
	closeSent bool // the library has written a close frame
}

// Write takes a flush of the library's buffered writer: one whole control
// frame, since they are smaller than its buffer.
func (s *socket) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(p) > 0 && p[0] == wsframe.FinBit|wsframe.OpClose {
		s.closeSent = true
	}
	return s.conn.Write(p)
}

var frameBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBuffer keeps a rare huge batch from pinning its buffer in the pool.
const maxPooledBuffer = 64 << 10

// writeText sends each payload as one text message, all in one write.
// Once a close frame has gone out it sends nothing and reports false.
func (s *socket) writeText(payloads [][]byte) (sent bool, err error) {
	bp := frameBuffers.Get().(*[]byte)
	b := (*bp)[:0]
	for _, p := range payloads {
		b = wsframe.AppendHeader(b, wsframe.OpText, len(p), false)
		b = append(b, p...)
	}
	s.mu.Lock()
	if !s.closeSent {
		sent = true
		_, err = s.conn.Write(b)
	}
	s.mu.Unlock()
	if cap(b) <= maxPooledBuffer {
		*bp = b[:0]
		frameBuffers.Put(bp)
	}
	return sent, err
}

// pingFrame is an empty ping: browsers answer it with an empty pong.
var pingFrame = []byte{wsframe.FinBit | wsframe.OpPing, 0}

// writePing sends a ping, unless a close frame has gone out.
func (s *socket) writePing() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closeSent {
		return net.ErrClosed
	}
	_, err := s.conn.Write(pingFrame)
	return err
}

// expire makes a write blocked on the socket fail at once.
func (s *socket) expire() {
	s.conn.SetWriteDeadline(time.Unix(1, 0))
}

// skipPong consumes the frame at the head of the browser's stream if it is
// a pong, waiting for the rest of it; pongs are at most 131 bytes, well
// within the buffered reader. Any other frame is left in place.
func (s *socket) skipPong() (bool, error) {
	h, err := s.br.Peek(2)
	if err != nil {
		return false, err
	}
	// Browsers mask every frame; a pong with a longer payload is a
	// protocol error, which the library reports.
	if h[0] != wsframe.FinBit|wsframe.OpPong || h[1]&wsframe.MaskBit == 0 || int(h[1]&^wsframe.MaskBit) > wsframe.MaxControlPayload {
		return false, nil
	}
	n := 2 + 4 + int(h[1]&^wsframe.MaskBit)
	if _, err := s.br.Peek(n); err != nil {
		return false, err
	}
	s.br.Discard(n)
	return true, nil
}
