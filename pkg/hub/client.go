package hub

import (
	"context"
	"sync"
	"sync/atomic"
)

var lastClientID atomic.Uint64

// Client is one connection registered with the hub. Its transport calls
// Subscribe and Unsubscribe as the browser asks, and Close once the
// connection is gone.
type Client struct {
	h  *Hub
	t  Transport
	id uint64

	mu        sync.Mutex
	queue     [][]byte // frames waiting for the writer
	queued    int      // bytes in queue
	count     []byte   // latest count frame not yet written, if any
	lastCount int64    // count carried by the last frame queued
	reason    Reason   // why the hub ends the connection, once it does
	closed    bool     // no more frames are taken
	wake      chan struct{}

	subMu sync.Mutex
	subs  map[string]struct{}
	gone  bool // removed from the hub
}

// Register adds a connection whose frames are written through t, sends it
// the current count and starts its writer. It fails with ErrClosed while
// the hub drains.
func (h *Hub) Register(t Transport) (*Client, error) {
	c := &Client{
		h:         h,
		t:         t,
		id:        lastClientID.Add(1),
		lastCount: -1,
		wake:      make(chan struct{}, 1),
	}
	s := h.clientShard(c)
	s.mu.Lock()
	if h.draining.Load() {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.clients[c] = struct{}{}
	h.local.Add(1)
	s.mu.Unlock()

	n := h.Count("")
	c.setCount(n, nil)
	h.countChanged("")
	h.writers.Add(1)
	go c.writeLoop()
	return c, nil
}

// Subscribe adds the client to channel. Subscribing twice is harmless.
func (c *Client) Subscribe(channel string) error {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if c.gone {
		return ErrClosed
	}
	if _, ok := c.subs[channel]; ok {
		return nil
	}
	if len(c.subs) >= c.h.cfg.MaxSubscriptions {
		return ErrTooManySubscriptions
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
	}
	members[c] = struct{}{}
	s.mu.Unlock()
	c.h.countChanged(channel)
	return nil
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

// Close removes the client from the hub and stops its writer without
// writing more. The transport calls it once its connection has ended;
// calling it again is harmless.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	c.queue, c.queued, c.count = nil, 0, nil
	c.mu.Unlock()
	c.signal()
	c.h.remove(c)
}

func (h *Hub) leaveChannel(c *Client, channel string) {
	s := h.channelShard(channel)
	s.mu.Lock()
	members := s.channels[channel]
	delete(members, c)
	if len(members) == 0 {
		delete(s.channels, channel)
	}
	s.mu.Unlock()
	h.countChanged(channel)
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
	h.countChanged("")
}

// kick removes c from the hub at once, so it counts no more, and has its
// writer close the connection with reason r after the write in progress.
func (c *Client) kick(r Reason) {
	c.mu.Lock()
	if c.reason == 0 && !c.closed {
		c.reason = r
	}
	c.closed = true
	c.queue, c.queued, c.count = nil, 0, nil
	c.mu.Unlock()
	c.signal()
	c.h.remove(c)
}

// The outcomes of enqueue.
const (
	queued   = iota
	skipped  // the client is closing and takes nothing
	overflow // the queue is full: the client must be dropped as slow
)

// enqueue appends frame to the client's queue.
func (c *Client) enqueue(frame []byte) int {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return skipped
	}
	if len(c.queue) >= c.h.cfg.QueueFrames || c.queued+len(frame) > c.h.cfg.QueueBytes {
		c.mu.Unlock()
		return overflow
	}
	c.queue = append(c.queue, frame)
	c.queued += len(frame)
	c.mu.Unlock()
	c.signal()
	return queued
}

// setCount replaces any pending count frame with one carrying n. A nil
// frame is encoded here.
func (c *Client) setCount(n int64, frame []byte) {
	c.mu.Lock()
	if c.closed || n == c.lastCount {
		c.mu.Unlock()
		return
	}
	if frame == nil {
		frame = appendCount(n)
	}
	c.count = frame
	c.lastCount = n
	c.mu.Unlock()
	c.signal()
}

func (c *Client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// writeLoop is the client's writer: it takes every queued frame at once and
// writes them in one call, outside any lock.
func (c *Client) writeLoop() {
	defer c.h.writers.Done()
	var batch, spare [][]byte
	for range c.wake {
		c.mu.Lock()
		batch, c.queue = c.queue, spare[:0]
		c.queued = 0
		if c.count != nil {
			batch = append(batch, c.count)
			c.count = nil
		}
		closed, reason := c.closed, c.reason
		c.mu.Unlock()

		if len(batch) > 0 && !closed {
			ctx, cancel := context.WithTimeout(context.Background(), c.h.cfg.WriteTimeout)
			err := c.t.Write(ctx, batch)
			cancel()
			if err != nil {
				c.h.stats.WriteFailures.Add(1)
				c.mu.Lock()
				c.closed = true
				c.queue, c.queued, c.count = nil, 0, nil
				c.mu.Unlock()
				c.h.remove(c)
				c.t.Close(ReasonSlow)
				return
			}
		}
		clear(batch)
		spare = batch
		if closed {
			if reason != 0 {
				c.t.Close(reason)
			}
			return
		}
	}
}
