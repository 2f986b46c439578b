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
// lock, context watch and flush the library spends on every frame. It never
// waits for the browser, since the hub writes for many clients from a few
// goroutines: what the socket does not take at once is kept, and the hub
// has flush write it from a goroutine of the client's own. Both paths write
// under mu, kept bytes before any later frame, so every frame reaches the
// socket whole, and no data frame follows a close frame.
type socket struct {
	conn net.Conn
	// br is the library's buffered reader, which the edge also reads
	// between messages (see conn.go); raw waits for the connection to be
	// readable and sends without blocking, nil when the connection has no
	// file descriptor (TLS).
	br  *bufio.Reader
	raw syscall.RawConn

	mu        sync.Mutex // held while writing to conn
	closeSent bool       // the library has written a close frame
	// kept holds frames writeText could not send at once, if any. It has a
	// lock of its own because writeText, which must not wait, keeps its
	// whole batch without taking mu while another write holds it.
	keptMu sync.Mutex
	kept   *[]byte
	// send's state, for sendFn (trySend bound to the socket).
	sendFn  func(fd uintptr) bool
	out     []byte
	sent    int
	sendErr error
}

// Write takes a flush of the library's buffered writer: one whole control
// frame, since they are smaller than its buffer. Bytes writeText kept go
// out first.
func (s *socket) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.flushLocked(); err != nil {
		return 0, err
	}
	if len(p) > 0 && p[0] == wsframe.FinBit|wsframe.OpClose {
		s.closeSent = true
	}
	return s.conn.Write(p)
}

var frameBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBuffer keeps a rare huge batch from pinning its buffer in the pool.
const maxPooledBuffer = 64 << 10

// putBuffer returns a buffer to frameBuffers, unless it grew too large.
func putBuffer(bp *[]byte) {
	if cap(*bp) <= maxPooledBuffer {
		*bp = (*bp)[:0]
		frameBuffers.Put(bp)
	}
}

// writeText sends each payload as one text message, all in one write,
// without blocking: what the socket does not take at once is kept, and
// reported, until flush writes it. If another write holds the socket (a
// control frame, perhaps waiting on a slow peer), the whole batch is kept.
// Once a close frame has gone out it sends nothing.
func (s *socket) writeText(payloads [][]byte) (kept bool, err error) {
	bp := frameBuffers.Get().(*[]byte)
	b := (*bp)[:0]
	for _, p := range payloads {
		b = wsframe.AppendHeader(b, wsframe.OpText, len(p), false)
		b = append(b, p...)
	}
	*bp = b
	if !s.mu.TryLock() {
		s.keep(bp)
		return true, nil
	}
	defer s.mu.Unlock()
	if s.closeSent {
		putBuffer(bp)
		return false, nil
	}
	n, err := s.send(b)
	if err != nil || n == len(b) {
		putBuffer(bp)
		return false, err
	}
	*bp = b[:copy(b, b[n:])]
	s.keep(bp)
	return true, nil
}

// keep holds the frames in *bp, a pooled buffer, for flush. The hub
// calls flush before it calls writeText again, so nothing else is kept.
func (s *socket) keep(bp *[]byte) {
	s.keptMu.Lock()
	s.kept = bp
	s.keptMu.Unlock()
}

// send writes b without waiting for the socket to become writable, and
// returns how much it took. A connection without a file descriptor takes
// nothing this way: its writes all go through flush.
func (s *socket) send(b []byte) (int, error) {
	if s.raw == nil {
		return 0, nil
	}
	s.out, s.sent, s.sendErr = b, 0, nil
	err := s.raw.Write(s.sendFn)
	n := s.sent
	if err == nil {
		err = s.sendErr
	}
	s.out, s.sendErr = nil, nil
	return n, err
}

// trySend is send's callback for RawConn.Write, bound once per socket so
// that a send allocates nothing.
func (s *socket) trySend(fd uintptr) bool {
	for s.sent < len(s.out) {
		n, err := syscall.Write(int(fd), s.out[s.sent:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true
		case err != nil:
			s.sendErr = err
			return true
		}
		s.sent += n
	}
	return true
}

// flush writes what writeText kept, waiting for the socket as long as it
// takes or until expire.
func (s *socket) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushLocked()
}

// flushLocked writes the kept frames, unless a close frame has gone out;
// s.mu must be held.
func (s *socket) flushLocked() error {
	s.keptMu.Lock()
	bp := s.kept
	s.kept = nil
	s.keptMu.Unlock()
	if bp == nil {
		return nil
	}
	defer putBuffer(bp)
	if s.closeSent {
		return nil
	}
	_, err := s.conn.Write(*bp)
	return err
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
	if err := s.flushLocked(); err != nil {
		return err
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
