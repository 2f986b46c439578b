package wsedge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-rt/switchboard/pkg/frame"
	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// conn is one upgraded connection: the hub's transport for it, its reader
// and its keep-alive.
//
// An idle connection holds no goroutine. Browsers are silent most of
// their lives, and a goroutine parked in the WebSocket library's read path
// keeps a stack of 8 KiB (4 KiB at best once the runtime shrinks it), more
// than everything else a connection holds. So the edge reads only while a
// browser has sent something: the poller starts a reader when bytes
// arrive, the reader handles what is there and parks the connection with
// the poller again. Where there is no poller (a TLS connection, whose
// bytes are not the frames; a system without epoll) the reader instead
// waits for bytes on a shallow stack.
//
// The reader consumes the pongs that answer the edge's pings itself, and
// enters the library only for a frame the library must handle: a message,
// a close, or a ping. So the library reads the connection only while the
// reader has handed it a frame, and never at the same time as the reader.
//
// Ending a connection is the reader's job, whoever asks: the browser (a
// close or a cut connection), the keep-alive, Handler.Close or the hub.
// They state their wish, then wake the reader: an idle connection gets a
// new one, a reader waiting for bytes wakes on an expired read deadline or
// on the closed socket. The one exception is the hub's close while the
// reader is inside the library, which goes through the library at once:
// the library serializes its own reads, and the reader then stays in the
// library until the connection ends.
type conn struct {
	h    *Handler
	ws   *websocket.Conn
	sock *socket
	hc   *hub.Client
	id   uint64 // the key in Handler.conns and the poller's events
	// release frees the limits the connection holds; end calls it.
	release func()

	closing atomic.Bool // the edge is closing the connection: drop the hub's frames
	heard   atomic.Bool // the browser sent something since the last ping

	polled atomic.Bool // the poller watches the connection

	pingMu      sync.Mutex
	pingTimer   *time.Timer
	pinged      bool // a ping went out and the timer checks its answer
	pingStopped bool

	mu            sync.Mutex
	state         readerState
	libraryCloses bool          // the hub closes through the library
	pending       *closeReason  // the close for the reader to send
	finished      bool          // end has run
	ended         chan struct{} // closed when finished, if closeFor waits
}

// readerState says where a connection's reader is.
type readerState uint8

const (
	readerNew     readerState = iota // none yet: start has not run
	readerIdle                       // none: the poller watches the connection
	readerOutside                    // a reader runs, outside the library
	readerLibrary                    // the reader is in the library's Read
	readerEnding                     // the connection is ending
)

type closeReason struct {
	code websocket.StatusCode
	text string
}

// aLongTimeAgo is a read deadline that has passed: it wakes a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// start begins serving the connection once the hub has registered it:
// keep-alive pings, and reading, by the poller if one can watch the
// connection, else by a reader of its own.
func (c *conn) start() {
	if c.h.frameRate > 0 {
		c.sock.in.limit(c.h.frameRate, c.h.frameBurst, time.Now())
	}
	c.sock.setSendBuffer(c.h.sendBuffer)
	c.pingTimer = time.AfterFunc(c.h.ping, c.ping)
	p := c.h.poller()
	polled := p != nil && c.sock.raw != nil
	c.polled.Store(polled)
	c.mu.Lock()
	// The hub may have asked for a close already, and then found no
	// reader to wake: this one carries it out.
	park := polled && c.pending == nil
	c.state = readerOutside
	if park {
		c.state = readerIdle
	}
	c.mu.Unlock()
	if park {
		if p.watch(c.sock.raw, c.id) == nil {
			return
		}
		// The connection is already gone, or epoll refuses it: it
		// gets a reader of its own, unless a wake-up gave it one.
		c.polled.Store(false)
		if !c.claim() {
			return
		}
	}
	go c.run()
}

// claim makes the caller the connection's reader if it has none.
func (c *conn) claim() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != readerIdle {
		return false
	}
	c.state = readerOutside
	return true
}

// wake starts a reader if the connection has none, to read what arrived
// or to carry out a wish to end the connection.
func (c *conn) wake() {
	if c.claim() {
		go c.run()
	}
}

// run is the reader: it serves the browser's frames until there are no
// more for now, then parks the connection with the poller, or, without a
// poller, waits for more. It ends the connection when the browser leaves
// or breaks the protocol, or when asked to.
func (c *conn) run() {
	for {
		if !c.sock.hasInput() {
			if c.polled.Load() {
				if c.park() {
					return
				}
				continue
			}
			c.sock.waitReadable() // an error is for the next read to see
		}
		// An error (the connection ended, or a wake-up) is left for the
		// library to see, unless someone asked for a close.
		pong, err := c.sock.skipPong()
		if err == nil && pong {
			c.heard.Store(true)
			continue
		}
		if r, ok := c.enterLibrary(); !ok {
			c.end(r)
			return
		}
		if err == nil {
			c.heard.Store(true)
		}
		r, more := c.readMessage()
		if !more {
			c.end(r)
			return
		}
		if !c.leaveLibrary() {
			// The hub is closing the connection through the library;
			// its close handshake ends this read.
			for {
				if _, _, err := c.ws.Read(context.Background()); err != nil {
					break
				}
			}
			c.end(nil)
			return
		}
	}
}

// park hands the connection back to the poller. It reports false if the
// reader must go on: the connection has bytes again.
func (c *conn) park() (parked bool) {
	c.mu.Lock()
	if r := c.pending; r != nil {
		c.mu.Unlock()
		c.end(r)
		return true
	}
	c.state = readerIdle
	c.mu.Unlock()
	// From here on a wake-up may start another reader.
	if c.h.poll.rearm(c.sock.raw, c.id) != nil {
		// The connection is closed, or epoll refuses it: unless a
		// wake-up started another reader, this one goes on without the
		// poller and finds out which.
		c.polled.Store(false)
		if c.claim() {
			return false
		}
	}
	return true
}

// enterLibrary moves the reader into the library, or returns the close it
// was asked to send instead.
func (c *conn) enterLibrary() (*closeReason, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending != nil {
		return c.pending, false
	}
	c.state = readerLibrary
	return nil, true
}

// leaveLibrary moves the reader out of the library. It reports false once
// the hub closes through the library: the reader must then stay in it.
func (c *conn) leaveLibrary() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.libraryCloses {
		return false
	}
	c.state = readerOutside
	return true
}

// readMessage reads one message through the library and acts on it. It
// reports false when the connection must end, with the close to send if
// the browser broke the protocol.
func (c *conn) readMessage() (*closeReason, bool) {
	h := c.h
	typ, p, err := c.readLimited()
	c.heard.Store(true)
	if errors.Is(err, errTooBig) {
		// Closing with a handshake lets the browser read the 1009 before
		// the TCP connection ends, instead of a reset over the unread
		// rest of the frame.
		h.reject(LimitFrameSize)
		return &closeReason{closeTooBig, fmt.Sprintf("frame larger than %d bytes", h.limit)}, false
	}
	if c.sock.in.exceeded() {
		// Whatever the library made of the failed read.
		h.reject(LimitFrameRate)
		return &closeReason{closePolicy, errFrameRate.Error()}, false
	}
	if err != nil {
		return nil, false // closed or failed
	}
	if typ != websocket.MessageText {
		h.reject(LimitInvalidFrame)
		return &closeReason{closePolicy, "binary frames are not supported"}, false
	}
	in, err := frame.Decode(p)
	if err != nil {
		h.reject(LimitInvalidFrame)
		return &closeReason{closePolicy, err.Error()}, false
	}
	switch in.Op {
	case frame.OpSubscribe:
		err = c.hc.SubscribeLast(in.Channel, in.Last)
	case frame.OpUnsubscribe:
		c.hc.Unsubscribe(in.Channel)
	}
	switch {
	case errors.Is(err, hub.ErrTooManySubscriptions):
		h.reject(LimitSubscriptions)
		return &closeReason{closePolicy, "too many subscriptions"}, false
	case errors.Is(err, frame.ErrInvalid):
		h.reject(LimitInvalidFrame)
		return &closeReason{closePolicy, err.Error()}, false
	case err != nil:
		return nil, false // the hub has closed the client
	}
	return nil, true
}

// errTooBig reports a message over the read limit.
var errTooBig = errors.New("message too big")

// readLimited reads one message of at most h.limit bytes, reporting
// errTooBig for a larger one, before the library would: the library's own
// limit (the same, see ServeHTTP) would close the connection with a reason
// that names one byte more. That limit still bounds the reads the library
// makes for itself.
func (c *conn) readLimited() (websocket.MessageType, []byte, error) {
	typ, r, err := c.ws.Reader(context.Background())
	if err != nil {
		return 0, nil, err
	}
	p, err := io.ReadAll(io.LimitReader(r, c.h.limit+1))
	if err == nil && int64(len(p)) > c.h.limit {
		err = errTooBig
	}
	return typ, p, err
}

// end closes the connection, telling the browser why if r is set, takes
// it out of the hub and the handler, and releases whoever waits for it.
// The reader calls it, once.
func (c *conn) end(r *closeReason) {
	c.mu.Lock()
	c.state = readerEnding
	if c.pending != nil {
		c.sock.conn.SetReadDeadline(time.Time{})
	}
	c.mu.Unlock()
	if r != nil {
		// The connection leaves the count and every fan-out now, however
		// long the browser takes to answer the close frame, if it ever
		// does. Detach, unlike Client.Close, lets a write in progress
		// finish: a canceled write would cut the connection before the
		// close frame could go out. Frames in flight are dropped, not
		// failed.
		c.closing.Store(true)
		c.hc.Detach()
		c.ws.Close(r.code, r.text)
	}
	c.hc.Close()
	c.ws.CloseNow()
	c.stopPings()
	c.h.untrack(c)
	c.release()

	c.mu.Lock()
	c.finished = true
	ended := c.ended
	c.mu.Unlock()
	if ended != nil {
		close(ended)
	}
}

// kill cuts the connection without a close handshake.
func (c *conn) kill() {
	c.sock.conn.Close()
	c.wake()
}

// closeFor ends the connection for the hub, telling the browser why, and
// returns once the connection has ended (see conn).
func (c *conn) closeFor(code websocket.StatusCode, text string) {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return
	}
	if c.state == readerLibrary {
		c.libraryCloses = true
		c.mu.Unlock()
		c.ws.Close(code, text)
		return
	}
	if c.state != readerEnding {
		c.pending = &closeReason{code, text}
		// Under mu, so that end clears it only after it is set.
		c.sock.conn.SetReadDeadline(aLongTimeAgo)
	}
	ended := make(chan struct{})
	c.ended = ended
	c.mu.Unlock()
	c.wake()
	<-ended
}

// ping runs every h.ping: it drops the connection if the browser sent
// nothing, not even a pong, since the last ping, and else pings again.
func (c *conn) ping() {
	c.pingMu.Lock()
	defer c.pingMu.Unlock()
	if c.pingStopped {
		return
	}
	if heard := c.heard.Swap(false); c.pinged && !heard {
		c.hc.Close()
		c.kill()
		return
	}
	c.pinged = true
	if c.sock.writePing() != nil {
		return // the connection is ending
	}
	c.pingTimer.Reset(c.h.ping)
}

// stopPings prevents any further ping.
func (c *conn) stopPings() {
	c.pingMu.Lock()
	defer c.pingMu.Unlock()
	c.pingStopped = true
	c.pingTimer.Stop()
}

// Write sends frames as text messages, all in one syscall, keeping what
// the socket does not take at once (see socket).
func (c *conn) Write(frames [][]byte) (kept bool, err error) {
	if c.closing.Load() {
		return false, nil
	}
	return c.sock.writeText(frames)
}

// Flush writes the frames Write kept.
func (c *conn) Flush() error { return c.sock.flush() }

// Abort makes a write blocked on the socket, and every later one, fail.
func (c *conn) Abort() { c.sock.expire() }

// Close ends the connection for the hub.
func (c *conn) Close(r hub.Reason) { c.closeFor(closeCode(r), r.String()) }
