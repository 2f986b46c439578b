package hub

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/frame"
	"github.com/switchboard-rt/switchboard/pkg/msglog"
)

var lastClientID atomic.Uint64

// Client is one connection registered with the hub. Its transport calls
// Subscribe and Unsubscribe as the browser asks, and Close once the
// connection is gone.
type Client struct {
	h       *Hub
	t       Transport
	id      uint64
	visitor string // the visitor's key; "": a visitor of its own

	mu        sync.Mutex
	queue     [][]byte // frames waiting for the writer
	queued    int      // bytes in queue
	count     []byte   // latest count frame not yet written, if any
	lastCount int64    // count carried by the last frame queued
	lastVis   int64    // visitors carried by the last frame queued
	countVer  uint64   // version of the newest count offered, queued or not
	// extraFrames and extraBytes raise the queue's bounds until the
	// writer next takes it (see allowMore).
	extraFrames int
	extraBytes  int
	reason      Reason // why the hub ends the connection, once it does
	closed      bool   // no more frames are taken

	// writing is set while the client is queued in the writer pool or
	// being written for, by a pool writer or by its own goroutine while the
	// transport flushes (see writer.go). Whoever clears it does so under mu
	// after finding nothing to write, so a frame is never left unwritten.
	writing atomic.Bool
	// flushTimer, armed while the transport flushes, aborts the flush when
	// it takes longer than WriteTimeout. Only a client that has been slow
	// once has one, and only the goroutine that owns the client touches it.
	flushTimer *time.Timer
	done       chan struct{} // closed once the writer has returned
	bs         budgetState   // the client's part in the node's budget (see budget.go), under mu

	subMu sync.Mutex
	subs  map[string]struct{}
	gone  bool // removed from the hub
}

// Start is what a connection asks for as it registers.
type Start struct {
	// Channels are joined at once, as Subscribe would.
	Channels []string
	// Resume asks for every message after From that the connection is a
	// recipient of, before the live ones.
	Resume bool
	From   msglog.Position
	// Visitor is the key of the person behind the connection, chosen by
	// the transport: connections with the same key count as one visitor,
	// here and on the other nodes. Keys of different kinds (a verified
	// identity, a self-asserted id) must never be equal. Default: "", a
	// visitor of its own.
	Visitor string
}

// Register adds a connection whose frames are written through t; it is
// Connect with nothing to join or resume.
func (h *Hub) Register(t Transport) (*Client, error) {
	return h.Connect(t, Start{})
}

// Connect adds a connection whose frames are written through t, joins it
// to s.Channels and starts its writer. The connection's first frame is the
// welcome, with the log's position; then comes the current count and, when
// it resumes, every message it missed; then the live ones, with no gap
// and no duplicate between the two. It fails with ErrClosed while the hub
// drains, ErrPaused while it is paused, ErrTooManySubscriptions past
// Config.MaxSubscriptions channels and an error wrapping frame.ErrInvalid
// for a channel name frame.ValidateChannel refuses.
func (h *Hub) Connect(t Transport, s Start) (*Client, error) {
	for _, ch := range s.Channels {
		if err := frame.ValidateChannel(ch); err != nil {
			return nil, err
		}
	}
	if len(s.Channels) > h.cfg.MaxSubscriptions {
		return nil, ErrTooManySubscriptions
	}
	c := &Client{
		h:         h,
		t:         t,
		id:        lastClientID.Add(1),
		visitor:   s.Visitor,
		lastCount: -1,
		done:      make(chan struct{}),
	}
	// Under emitMu, so that the welcome's position, the replay and the
	// first live message follow one another exactly.
	h.emitMu.Lock()
	cs := h.clientShard(c)
	cs.mu.Lock()
	if err := h.refuse(); err != nil {
		cs.mu.Unlock()
		h.emitMu.Unlock()
		return nil, err
	}
	cs.clients[c] = struct{}{}
	h.local.Add(1)
	// Counted under the shard lock, so that a drain, which sets draining
	// and then scans the shards, never waits on writers before this one is
	// counted.
	h.writers.Add(1)
	cs.mu.Unlock()

	var joined []string
	for _, ch := range s.Channels {
		if added, err := c.join(ch); err == nil && added {
			joined = append(joined, ch)
		}
	}
	pos := h.msgs.Position()
	recovery := frame.NoResume
	queue := make([][]byte, 2, 4) // the welcome, the count, then any replay
	if s.Resume {
		include := func(ch string) bool { return ch == "" || slices.Contains(s.Channels, ch) }
		var ok bool
		if queue, ok = h.msgs.Replay(queue, s.From, include); ok {
			recovery = frame.Recovered
			h.stats.Recovered.Add(1)
		} else {
			recovery = frame.NotRecovered
			h.stats.NotRecovered.Add(1)
		}
	}
	t0 := h.joinTotal(c.visitor, 1)
	c.mu.Lock()
	queue[0], queue[1] = frame.AppendWelcome(nil, pos.Epoch, pos.Offset, recovery), appendCount(t0)
	c.queue = queue
	for _, f := range c.queue {
		c.queued += len(f)
	}
	c.lastCount, c.lastVis, c.countVer = t0.n, t0.visitors, t0.version
	c.allowMore(len(c.queue), c.queued)
	c.mu.Unlock()
	h.emitMu.Unlock()

	h.localChanged("")
	for _, ch := range joined {
		h.localChanged(ch)
	}
	c.signal()
	return c, nil
}

// Subscribe adds the client to channel. Subscribing twice is harmless. It
// fails with an error wrapping frame.ErrInvalid for a name that
// frame.ValidateChannel refuses, with ErrTooManySubscriptions past
// Config.MaxSubscriptions, and with ErrClosed once the client is closed.
func (c *Client) Subscribe(channel string) error {
	if err := frame.ValidateChannel(channel); err != nil {
		return err
	}
	added, err := c.join(channel)
	if added {
		c.h.localChanged(channel)
	}
	return err
}

// SubscribeLast is Subscribe that also queues the newest last messages
// of channel still in the log, oldest first, before the live ones; last
// 0 is Subscribe.
func (c *Client) SubscribeLast(channel string, last int) error {
	if last <= 0 {
		return c.Subscribe(channel)
	}
	if err := frame.ValidateChannel(channel); err != nil {
		return err
	}
	h := c.h
	// Under emitMu, so that no message is both among the last and live.
	h.emitMu.Lock()
	added, err := c.join(channel)
	if err != nil {
		h.emitMu.Unlock()
		return err
	}
	frames := h.msgs.Last(nil, channel, last)
	c.mu.Lock()
	if !c.closed {
		n := 0
		for _, f := range frames {
			n += len(f)
		}
		c.queue = append(c.queue, frames...)
		c.queued += n
		c.h.budget.enqueued(c, n)
		c.allowMore(len(frames), n)
	}
	c.mu.Unlock()
	h.emitMu.Unlock()
	if added {
		h.localChanged(channel)
	}
	c.signal()
	return nil
}

// join adds the client to channel's members, reporting whether it was not
// one already; the caller tells the count loop.
func (c *Client) join(channel string) (added bool, err error) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if c.gone {
		return false, ErrClosed
	}
	if _, ok := c.subs[channel]; ok {
		return false, nil
	}
	if len(c.subs) >= c.h.cfg.MaxSubscriptions {
		return false, ErrTooManySubscriptions
	}
	if c.subs == nil {
		c.subs = make(map[string]struct{})
	}
	c.subs[channel] = struct{}{}
	s := c.h.channelShard(channel)
	s.mu.Lock()
	members := s.channels[channel]
	if members == nil {
		members = make(map[*Client]struct{})
		s.channels[channel] = members
		c.h.stats.Channels.Add(1)
	}
	members[c] = struct{}{}
	p := s.presence[channel]
	if p == nil {
		p = &presence{}
		s.presence[channel] = p
	}
	p.add(c.visitor, 1)
	c.h.trackLocal(channel, c.visitor)
	s.mu.Unlock()
	c.h.stats.Subscriptions.Add(1)
	return true, nil
}

// allowMore lets the queue hold frames and bytes beyond its bounds until
// the writer next takes it: room for messages replayed at once, which the
// log holds anyway. c.mu must be held.
func (c *Client) allowMore(frames, bytes int) {
	c.extraFrames += frames
	c.extraBytes += bytes
}

// Unsubscribe removes the client from channel. Unsubscribing from a channel
// the client is not in is harmless.
func (c *Client) Unsubscribe(channel string) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if _, ok := c.subs[channel]; !ok {
		return
	}
	delete(c.subs, channel)
	c.h.leaveChannel(c, channel)
}

// discardLocked drops what the client has queued, takes it out of the
// memory budget and returns the frames dropped. c.mu must be held.
func (c *Client) discardLocked() int64 {
	n := int64(len(c.queue))
	c.queue, c.queued, c.count = nil, 0, nil
	c.h.budget.clear(c)
	return n
}

// Close removes the client from the hub and stops its writer without
// writing more; a write in progress is canceled. The transport calls it once
// its connection has ended; the hub then never calls Transport.Close.
// Calling it again is harmless.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	c.h.stats.DroppedClosed.Add(c.discardLocked())
	c.mu.Unlock()
	c.cancelWrite()
	c.signal()
	c.h.remove(c)
}

// Detach removes the client from the count and from every channel at
// once, and stops it taking frames, but lets a write in progress finish:
// the transport calls it when it decides to end the connection, before it
// says why to a peer that may take its time to answer, and calls Close
// once the connection has ended. The hub then never calls Transport.Close.
// A client the hub is already closing keeps its fate.
func (c *Client) Detach() { c.kick(0) }

func (h *Hub) leaveChannel(c *Client, channel string) {
	s := h.channelShard(channel)
	s.mu.Lock()
	members := s.channels[channel]
	if _, ok := members[c]; ok {
		delete(members, c)
		h.stats.Subscriptions.Add(-1)
		if len(members) == 0 {
			delete(s.channels, channel)
			h.stats.Channels.Add(-1)
		}
		if p := s.presence[channel]; p != nil {
			p.add(c.visitor, -1)
			if p.empty() {
				delete(s.presence, channel)
			}
		}
		h.trackLocal(channel, c.visitor)
	}
	s.mu.Unlock()
	h.localChanged(channel)
}

// remove takes c out of every registry, once.
func (h *Hub) remove(c *Client) {
	c.subMu.Lock()
	if c.gone {
		c.subMu.Unlock()
		return
	}
	c.gone = true
	for channel := range c.subs {
		h.leaveChannel(c, channel)
	}
	c.subs = nil
	c.subMu.Unlock()

	s := h.clientShard(c)
	s.mu.Lock()
	delete(s.clients, c)
	h.local.Add(-1)
	s.mu.Unlock()
	h.joinTotal(c.visitor, -1)
	h.localChanged("")
}

// kick removes c from the hub at once, so it counts no more, and has its
// writer close the connection with reason r after the write in progress;
// a slow client's write in progress is canceled instead. With no reason
// (0) the writer only stops: the transport closes the connection. A
// client already closed, by the hub or by its transport, keeps its first
// fate.
func (c *Client) kick(r Reason) {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		c.reason = r
		c.h.stats.DroppedClosed.Add(c.discardLocked())
	}
	c.mu.Unlock()
	if r == ReasonSlow {
		c.cancelWrite()
	}
	c.signal()
	c.h.remove(c)
}

// The outcomes of enqueue.
const (
	queued   = iota
	idle     // queued to a client with no writer: the caller must push it to the pool
	skipped  // the client is closing and takes nothing
	overflow // the queue was full: the client is now closing as slow and must be removed
)

// enqueue appends frame to the client's queue. When the client had no
// writer, it claims one for it and reports idle: the caller pushes it to
// the writer pool. When the queue is full, it marks the client closed as
// slow and frees the queue at once; the caller, which holds registry
// locks, must then call drop outside them.
func (c *Client) enqueue(frame []byte) int {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return skipped
	}
	if len(c.queue) >= c.h.cfg.QueueFrames+c.extraFrames || c.queued+len(frame) > c.h.cfg.QueueBytes+c.extraBytes {
		c.closed = true
		c.reason = ReasonSlow
		c.h.stats.DroppedOverflow.Add(c.discardLocked() + 1)
		c.mu.Unlock()
		return overflow
	}
	c.queue = append(c.queue, frame)
	c.queued += len(frame)
	c.h.budget.enqueued(c, len(frame))
	c.mu.Unlock()
	if c.writing.CompareAndSwap(false, true) {
		return idle
	}
	return queued
}

// drop finishes what enqueue started for an overflowing client: it cancels
// the stalled write, has a writer close the transport and removes the
// client from every registry.
func (c *Client) drop() {
	c.cancelWrite()
	c.signal()
	c.h.remove(c)
}

// setCount replaces any pending count frame with one carrying t, unless
// the client was already offered a newer count: counts read concurrently
// may arrive out of order, and a browser must never be sent an older count
// after a newer one. A nil frame is encoded here.
func (c *Client) setCount(t total, frame []byte) {
	c.mu.Lock()
	if c.closed || t.version <= c.countVer {
		c.mu.Unlock()
		return
	}
	c.countVer = t.version
	if t.n == c.lastCount && t.visitors == c.lastVis {
		c.mu.Unlock()
		return
	}
	if frame == nil {
		frame = appendCount(t)
	}
	c.count = frame
	c.lastCount, c.lastVis = t.n, t.visitors
	c.mu.Unlock()
	c.signal()
}

// cancelWrite aborts the write in progress, if any, and every later one;
// it is called only once the client is closed.
func (c *Client) cancelWrite() {
	c.t.Abort()
}

// signal makes sure a writer will take what was just queued, or close the
// client: it queues the client in the writer pool unless a writer already
// has it.
func (c *Client) signal() {
	if c.writing.CompareAndSwap(false, true) {
		c.h.pool.push(c)
	}
}

// write is a pool writer's turn with the client: it takes every queued
// frame and hands them to the transport in one call, outside any lock. If
// the transport keeps some, a goroutine of the client's own waits for them
// to be flushed; if frames were queued meanwhile, the client goes back to
// the pool. Once the client is closed, write closes the transport, unless
// the transport closed the client itself, and tells the hub the client is
// finished. It returns batch, emptied, for the writer's next client.
func (c *Client) write(batch [][]byte) [][]byte {
	c.mu.Lock()
	if c.closed {
		reason := c.reason
		c.mu.Unlock()
		if reason != 0 {
			go c.finish(reason)
		} else {
			c.end()
		}
		return batch
	}
	batch, c.queue = c.queue, batch[:0]
	c.h.budget.took(c, c.queued, len(c.count))
	c.queued, c.extraFrames, c.extraBytes = 0, 0, 0
	if c.count != nil {
		batch = append(batch, c.count)
		c.count = nil
	}
	if len(batch) == 0 {
		c.writing.Store(false)
		c.mu.Unlock()
		return batch
	}
	c.mu.Unlock()

	kept, err := c.t.Write(batch)
	clear(batch)
	switch {
	case err != nil:
		go c.fail()
	case kept:
		c.mu.Lock()
		c.h.budget.wrote(c, true, c.queued)
		c.mu.Unlock()
		go c.flush()
	default:
		c.mu.Lock()
		c.h.budget.wrote(c, false, 0)
		more := len(c.queue) > 0 || c.count != nil || c.closed
		if !more {
			c.writing.Store(false)
		}
		c.mu.Unlock()
		if more {
			c.h.pool.push(c)
		}
	}
	return batch[:0]
}

// flush waits, on the client's own goroutine, for the transport to write
// the frames it kept, then hands the client back to the pool.
func (c *Client) flush() {
	if c.flushTimer == nil {
		c.flushTimer = time.AfterFunc(c.h.cfg.WriteTimeout, c.t.Abort)
	} else {
		c.flushTimer.Reset(c.h.cfg.WriteTimeout)
	}
	err := c.t.Flush()
	if !c.flushTimer.Stop() || err != nil {
		c.fail()
		return
	}
	c.mu.Lock()
	c.h.budget.flushed(c)
	c.mu.Unlock()
	c.h.pool.push(c)
}

// finish closes the transport with reason and ends the client.
func (c *Client) finish(r Reason) {
	c.t.Close(r)
	c.end()
}

// end tells the hub the client is finished; it runs once, on the writer
// that saw the client closed.
func (c *Client) end() {
	close(c.done)
	c.h.writers.Done()
}

// fail ends the client after a failed write. If the hub or the transport had
// already closed it, the write failed because of that, and its fate stands.
func (c *Client) fail() {
	c.mu.Lock()
	failed := !c.closed
	if failed {
		c.closed = true
		c.reason = ReasonSlow
		c.h.stats.DroppedClosed.Add(c.discardLocked())
	}
	// Again if it was closed: a write that kept frames may have counted
	// it as behind since.
	c.h.budget.clear(c)
	reason := c.reason
	c.mu.Unlock()
	if failed {
		c.h.stats.WriteFailures.Add(1)
		c.h.remove(c)
	}
	if reason != 0 {
		c.t.Close(reason)
	}
	c.end()
}
