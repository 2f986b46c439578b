package hub

import (
	"slices"
	"sync"
	"sync/atomic"
)

// LimitQueuedBytes names the node-wide budget of queued bytes
// (Config.MaxQueuedBytes) among the limits a transport reports.
const LimitQueuedBytes = "queued_bytes"

// budget bounds the bytes the hub holds for clients that fell behind,
// across all of them: each client's queue is bounded on its own
// (QueueBytes), but many stalled clients together could still hold the
// node's memory. A client is behind from the write its transport could
// not finish at once until a write goes out whole; meanwhile everything
// queued to it, and the batch its transport holds, count. Past the
// budget, the clients holding the most are dropped as slow (1013), until
// the rest fit.
//
// Frames are shared by their recipients, so the budget counts more than
// the memory it stands for; only clients behind count, so a fan-out that
// every client takes at once never does. The bookkeeping of each client
// is under its mu (see budgetState); the lock order is Client.mu, then
// budget.mu.
type budget struct {
	max    int64 // <= 0: no limit
	onOver func()
	h      *Hub

	used      atomic.Int64
	enforcing atomic.Bool // an enforce goroutine is running

	mu     sync.Mutex
	behind map[*Client]struct{}
}

// budgetState is one client's part in the budget, under Client.mu.
type budgetState struct {
	behind   bool
	held     int64 // what the client adds to budget.used
	inflight int64 // the bytes of the batch handed to the transport, until written
}

func (b *budget) init(h *Hub, max int64, onOver func()) {
	b.h, b.max, b.onOver = h, max, onOver
	b.behind = make(map[*Client]struct{})
}

// add changes the bytes held and starts dropping clients once they are
// over the budget.
func (b *budget) add(n int64) {
	if b.used.Add(n) > b.max && b.max > 0 && n > 0 && b.enforcing.CompareAndSwap(false, true) {
		go b.enforce()
	}
}

// enqueued counts n bytes queued to c; c.mu must be held.
func (b *budget) enqueued(c *Client, n int) {
	if c.bs.behind {
		c.bs.held += int64(n)
		b.add(int64(n))
	}
}

// took records that the transport gets a batch of the queue's bytes and
// count, the bytes of the count frame, which skips the queue; c.mu must be
// held.
func (b *budget) took(c *Client, queued, count int) {
	c.bs.inflight = int64(queued + count)
	if c.bs.behind {
		c.bs.held += int64(count)
		b.add(int64(count))
	}
}

// wrote records the outcome of the transport's write of the batch: kept
// means it holds some of it and c is behind; else all went out and c is
// behind no more. c.mu must be held.
func (b *budget) wrote(c *Client, kept bool, queued int) {
	switch {
	case kept && !c.bs.behind:
		c.bs.behind = true
		c.bs.held = c.bs.inflight + int64(queued)
		b.mu.Lock()
		b.behind[c] = struct{}{}
		b.mu.Unlock()
		b.add(c.bs.held)
	case !kept:
		c.bs.inflight = 0
		b.clear(c)
	}
}

// flushed records that the transport wrote the batch it held; c.mu must
// be held. c stays behind until a write goes out whole.
func (b *budget) flushed(c *Client) {
	if c.bs.behind {
		c.bs.held -= c.bs.inflight
		b.add(-c.bs.inflight)
	}
	c.bs.inflight = 0
}

// clear takes c out of the budget: it caught up, or it is closing and
// its queue is gone. c.mu must be held.
func (b *budget) clear(c *Client) {
	if !c.bs.behind {
		return
	}
	b.add(-c.bs.held)
	c.bs.behind, c.bs.held = false, 0
	b.mu.Lock()
	delete(b.behind, c)
	b.mu.Unlock()
}

// enforce drops the clients that hold the most until the rest fit in the
// budget.
func (b *budget) enforce() {
	defer b.enforcing.Store(false)
	type holder struct {
		c    *Client
		held int64
	}
	b.mu.Lock()
	hs := make([]holder, 0, len(b.behind))
	for c := range b.behind {
		hs = append(hs, holder{c: c})
	}
	b.mu.Unlock()
	for i := range hs {
		hs[i].c.mu.Lock()
		hs[i].held = hs[i].c.bs.held
		hs[i].c.mu.Unlock()
	}
	slices.SortFunc(hs, func(x, y holder) int {
		switch {
		case x.held > y.held:
			return -1
		case x.held < y.held:
			return 1
		}
		return 0
	})
	for _, x := range hs {
		if b.used.Load() <= b.max {
			return
		}
		x.c.mu.Lock()
		closed := x.c.closed
		x.c.mu.Unlock()
		if closed {
			continue
		}
		b.h.stats.SlowDisconnects.Add(1)
		b.h.stats.BudgetDrops.Add(1)
		if b.onOver != nil {
			b.onOver()
		}
		x.c.kick(ReasonSlow)
	}
}

// QueuedBytes returns the bytes held for clients that fell behind, as the
// budget counts them (see Config.MaxQueuedBytes).
func (h *Hub) QueuedBytes() int64 { return h.budget.used.Load() }
