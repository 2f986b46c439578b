package wsedge

import (
	"bufio"
	"net"
	"slices"
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
// compression off, just a header and the payload, so writeText writes a
// batch's headers and its payloads, the hub's shared bytes, in one writev
// (see outbox), without the lock, context watch and flush the library
// spends on every frame. It never waits for the browser, since the hub
// writes for many clients from a few goroutines: what the socket does not
// take at once is kept, by reference, and the hub has flush write it from
// a goroutine of the client's own. Both paths write
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
	in  frameCounter    // what br reads, through rc
	rc  countedConn     // the connection the library gets
	tcp syscall.RawConn // the TCP socket, under TLS too; nil without a descriptor

	mu        sync.Mutex // held while writing to conn
	closeSent bool       // the library has written a close frame
	// kept holds frames writeText could not send at once, if any. It has a
	// lock of its own because writeText, which must not wait, keeps its
	// whole batch without taking mu while another write holds it.
	keptMu sync.Mutex
	kept   *outbox
	// send's state, for sendFn (trySend bound to the socket), under mu.
	sendFn  func(fd uintptr) bool
	out     *outbox
	wait    bool // wait for the socket rather than return what it refused
	sendErr error
	iov     iovecs
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

// outbox is a batch of frames on its way to the socket: each frame's
// header, with the small payloads, copied into one buffer, and the larger
// payloads by reference. The hub shares one frame among all its
// recipients and never changes it, so a batch that waits for a slow
// browser costs it its headers and a few KiB of copies, not a copy of
// what it waits for.
type outbox struct {
	head []byte      // headers and small payloads, back to back
	bufs net.Buffers // what is left to write, in order: slices of head, and payloads
}

// A payload of at most copyMax bytes is copied next to its header, as long
// as the batch's copies stay within maxCopied: small frames cost less to
// copy than to hand the kernel as iovecs of their own, and a slow browser
// still keeps at most maxCopied of copies.
const (
	copyMax   = 512
	maxCopied = 16 << 10
)

var outboxes = sync.Pool{New: func() any { return &outbox{head: make([]byte, 0, 512)} }}

// newOutbox encodes payloads as text frames.
func newOutbox(payloads [][]byte) *outbox {
	o := outboxes.Get().(*outbox)
	size, copied := 0, 0
	for _, p := range payloads {
		size += wsframe.MaxHeader
		if len(p) <= copyMax && copied+len(p) <= maxCopied {
			copied += len(p)
		}
	}
	// head never grows below, so the slices of it stay valid.
	o.head = slices.Grow(o.head[:0], size+copied)
	start := 0
	copied = 0
	for _, p := range payloads {
		o.head = wsframe.AppendHeader(o.head, wsframe.OpText, len(p), false)
		if len(p) <= copyMax && copied+len(p) <= maxCopied {
			copied += len(p)
			o.head = append(o.head, p...)
			continue
		}
		o.bufs = append(o.bufs, o.head[start:len(o.head)], p)
		start = len(o.head)
	}
	if start < len(o.head) {
		o.bufs = append(o.bufs, o.head[start:len(o.head)])
	}
	return o
}

// maxPooledHead keeps a rare huge batch from pinning its buffers in the pool.
const maxPooledHead = 64 << 10

// free drops the outbox's references and returns it to the pool.
func (o *outbox) free() {
	clear(o.bufs[:cap(o.bufs)])
	o.bufs = o.bufs[:0]
	if cap(o.head) <= maxPooledHead && cap(o.bufs) <= maxPooledHead/16 {
		o.head = o.head[:0]
		outboxes.Put(o)
	}
}

// advance drops the first n bytes written.
func (o *outbox) advance(n int) {
	i := 0
	for i < len(o.bufs) && n >= len(o.bufs[i]) {
		n -= len(o.bufs[i])
		o.bufs[i] = nil
		i++
	}
	if i < len(o.bufs) {
		o.bufs[i] = o.bufs[i][n:]
	}
	o.bufs = o.bufs[i:]
}

// writeText sends each payload as one text message, all in one write,
// without blocking: what the socket does not take at once is kept, and
// reported, until flush writes it. If another write holds the socket (a
// control frame, perhaps waiting on a slow peer), the whole batch is kept.
// Once a close frame has gone out it sends nothing. It keeps references
// to the payloads, not copies: they must not change until flush returns.
func (s *socket) writeText(payloads [][]byte) (kept bool, err error) {
	o := newOutbox(payloads)
	if !s.mu.TryLock() {
		s.keep(o)
		return true, nil
	}
	defer s.mu.Unlock()
	if s.closeSent {
		o.free()
		return false, nil
	}
	if err := s.send(o); err != nil || len(o.bufs) == 0 {
		o.free()
		return false, err
	}
	s.keep(o)
	return true, nil
}

// keep holds the outbox for flush. The hub calls flush before it calls
// writeText again, so nothing else is kept.
func (s *socket) keep(o *outbox) {
	s.keptMu.Lock()
	s.kept = o
	s.keptMu.Unlock()
}

// send writes what it can of o without waiting for the socket to become
// writable, advancing o past it. A connection without a file descriptor
// takes nothing this way: its writes all go through flush.
func (s *socket) send(o *outbox) error {
	if s.raw == nil || !haveWritev {
		return nil
	}
	return s.writeRaw(o, false)
}

// writeRaw writes o through the file descriptor, several buffers a
// syscall; with wait, until all is written, else until the socket takes
// no more.
func (s *socket) writeRaw(o *outbox, wait bool) error {
	s.out, s.sendErr, s.wait = o, nil, wait
	err := s.raw.Write(s.sendFn)
	if err == nil {
		err = s.sendErr
	}
	s.out, s.sendErr, s.wait = nil, nil, false
	return err
}

// trySend is send's callback for RawConn.Write, bound once per socket so
// that a send allocates nothing. It writes s.out, several buffers a
// syscall, until the socket takes no more; then it returns at once, or,
// with s.wait, has RawConn.Write wait for the socket to become writable.
func (s *socket) trySend(fd uintptr) bool {
	o := s.out
	for len(o.bufs) > 0 {
		n, err := s.writev(fd, o.bufs)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return !s.wait
		case err != nil:
			s.sendErr = err
			return true
		}
		o.advance(n)
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
	o := s.kept
	s.kept = nil
	s.keptMu.Unlock()
	if o == nil {
		return nil
	}
	defer o.free()
	if s.closeSent {
		return nil
	}
	if s.raw == nil || !haveWritev {
		if len(o.bufs) == 1 { // small frames, already copied together
			_, err := s.conn.Write(o.bufs[0])
			return err
		}
		// TLS copies into its records anyway: one write, one record run.
		bp := flushBuffers.Get().(*[]byte)
		b := (*bp)[:0]
		for _, p := range o.bufs {
			b = append(b, p...)
		}
		_, err := s.conn.Write(b)
		if cap(b) <= maxPooledHead {
			*bp = b[:0]
			flushBuffers.Put(bp)
		}
		return err
	}
	return s.writeRaw(o, true)
}

var flushBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

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
