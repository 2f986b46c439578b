package hub

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"
)

// HandleCounts records another node's counts: its connections, its
// channels' subscribers and its visitors, the changes since its report
// before or, with VisitorsFull, all of them.
func (h *Hub) HandleCounts(c Counts) {
	if c.Node == h.cfg.Node {
		return
	}
	h.remoteMu.Lock()
	changed := h.applyRemote(c)
	h.remoteMu.Unlock()
	for ch := range changed {
		h.countChanged(ch)
	}
}

// Count returns the number of open connections in the cluster, or the
// number of subscribers of channel when it is not empty.
func (h *Hub) Count(channel string) int64 {
	return h.Online(channel).Connections
}

// total is the cluster's connection and visitor counts with a version that
// grows with every change, so that of two counts read concurrently the
// newer is known.
type total struct {
	n        int64
	visitors int64
	version  uint64
}

// readTotal returns the cluster's counts.
func (h *Hub) readTotal() total {
	h.totalMu.Lock()
	defer h.totalMu.Unlock()
	return h.total
}

// joinTotal adds delta connections of visitor to the cluster's counts and
// returns the result.
func (h *Hub) joinTotal(visitor string, delta int32) total {
	h.totalMu.Lock()
	defer h.totalMu.Unlock()
	h.total.n += int64(delta)
	h.everyone.add(visitor, delta)
	h.setVisitorsLocked()
	h.total.version++
	h.trackLocal("", visitor)
	return h.total
}

// Watch calls fn with the current count of channel ("" for everyone), then
// again after every change until ctx ends, fn fails or the hub drains.
// Changes that arrive while fn runs are coalesced: the next call carries
// the latest count, so the last value seen after a burst is the true one.
// It returns fn's error, ctx's error, ErrClosed, or ErrPaused when the hub
// is or becomes paused.
func (h *Hub) Watch(ctx context.Context, channel string, fn func(count int64) error) error {
	last := int64(-1)
	return h.WatchOnline(ctx, channel, func(o Online) error {
		if o.Connections == last {
			return nil
		}
		last = o.Connections
		return fn(o.Connections)
	})
}

// WatchOnline is Watch for the connections and the distinct visitors:
// fn is called with both at once, and again after every change of
// either.
func (h *Hub) WatchOnline(ctx context.Context, channel string, fn func(Online) error) error {
	w := &watcher{notify: make(chan struct{}, 1)}
	h.watchMu.Lock()
	if err := h.refuse(); err != nil {
		h.watchMu.Unlock()
		return err
	}
	paused := h.pauseCh
	set := h.watchers[channel]
	if set == nil {
		set = make(map[*watcher]struct{})
		h.watchers[channel] = set
	}
	set[w] = struct{}{}
	h.watchMu.Unlock()
	defer func() {
		h.watchMu.Lock()
		delete(h.watchers[channel], w)
		if len(h.watchers[channel]) == 0 {
			delete(h.watchers, channel)
		}
		h.watchMu.Unlock()
	}()

	last := Online{Connections: -1}
	for {
		if o := h.Online(channel); o != last {
			if err := fn(o); err != nil {
				return err
			}
			last = o
		}
		select {
		case <-w.notify:
		case <-ctx.Done():
			return ctx.Err()
		case <-h.done:
			return ErrClosed
		case <-paused:
			return ErrPaused
		}
	}
}

type watcher struct {
	notify chan struct{}
}

// countChanged wakes the watchers of channel and, for a change of the
// global count, the loop that sends count frames to browsers.
func (h *Hub) countChanged(channel string) {
	h.watchMu.Lock()
	for w := range h.watchers[channel] {
		select {
		case w.notify <- struct{}{}:
		default:
		}
	}
	h.watchMu.Unlock()
	if channel == "" {
		h.globalDirty.Store(true)
		h.wakeCountLoop()
	}
}

// localChanged is countChanged for a change on this node, which must also
// be published to the other nodes. Changes reported by other nodes go
// through countChanged alone: publishing them back would make two nodes
// echo each other's counts forever.
func (h *Hub) localChanged(channel string) {
	if !h.localDirty.Swap(true) {
		select {
		case h.publishWake <- struct{}{}:
		default:
		}
	}
	h.countChanged(channel)
}

// publishInterval is the shortest time between two publications of this
// node's counts to the others. It is much shorter than the pace of count
// frames to browsers, which spares their bandwidth: a node that adds this
// one's counts to its own (during a hand-back, or in a cluster) is never
// more than about this much behind, however long a burst of changes lasts.
const publishInterval = 10 * time.Millisecond

// publishLoop publishes this node's counts when they change, at most every
// publishInterval, until the hub closes: through a drain too.
func (h *Hub) publishLoop() {
	defer h.loops.Done()
	t := time.NewTimer(0)
	<-t.C
	for {
		select {
		case <-h.publishWake:
		case <-h.closed:
			return
		}
		if h.localDirty.Swap(false) {
			h.publishCounts()
		}
		t.Reset(publishInterval)
		select {
		case <-t.C:
		case <-h.closed:
			return
		}
	}
}

func (h *Hub) wakeCountLoop() {
	select {
	case h.countWake <- struct{}{}:
	default:
	}
}

// countLoop sends the global count to every browser when it changed: once
// a burst of changes has settled, or has gone on for countMaxDelay, and at
// least countInterval after the previous send.
func (h *Hub) countLoop() {
	defer h.loops.Done()
	t := time.NewTimer(0)
	<-t.C
	quiet := h.cfg.CountInterval / 4
	for {
		select {
		case <-h.countWake:
		case <-h.done:
			return
		}
		deadline := time.Now().Add(h.countMaxDelay())
		for settling := true; settling; {
			t.Reset(min(quiet, time.Until(deadline)))
			select {
			case <-h.countWake:
				// Another change: wait for quiet again, unless the
				// burst has lasted long enough.
				settling = time.Now().Before(deadline)
				t.Stop() // and no stale tick after it (Go 1.23 timers)
			case <-t.C:
				settling = false
			case <-h.done:
				return
			}
		}
		if h.globalDirty.Swap(false) {
			h.broadcastCount(h.readTotal())
		}
		t.Reset(h.countInterval())
		select {
		case <-t.C:
		case <-h.done:
			return
		}
	}
}

// countMaxDelay is the longest a burst of count changes waits to be sent.
func (h *Hub) countMaxDelay() time.Duration {
	return max(10*h.cfg.CountInterval, h.countInterval())
}

// countCostPerClient is about what one count frame costs the node to write
// (a syscall on the client's socket). Between two count broadcasts the
// hub waits at least that much per local client, so that during a connect
// storm of many browsers count frames take at most about a quarter of one
// core's time, however many browsers there are.
const countCostPerClient = 20 * time.Microsecond

// countInterval is the pause after a count broadcast: CountInterval, or
// longer on a node with so many clients that a broadcast is expensive
// (100 ms up to 5,000 clients, 200 ms at 10,000, 2 s at 100,000).
func (h *Hub) countInterval() time.Duration {
	return max(h.cfg.CountInterval, time.Duration(h.local.Load())*countCostPerClient)
}

func (h *Hub) broadcastCount(t total) {
	buf := appendCount(t)
	for i := range h.clients {
		s := &h.clients[i]
		s.mu.RLock()
		for c := range s.clients {
			c.setCount(t, buf)
		}
		s.mu.RUnlock()
	}
}

func (h *Hub) publishCounts() {
	if !h.tracking.Load() {
		return // nobody to tell: no broker, no peer
	}
	// Under countSubsMu, so that a new subscriber's whole set and the
	// changes that follow it are in order.
	h.countSubsMu.Lock()
	c := h.LocalCounts()
	c.Visitors = h.visitorChanges()
	for _, fn := range h.countSubs {
		fn(c)
	}
	h.countSubsMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.WriteTimeout)
	defer cancel()
	if err := h.broker.PublishCounts(ctx, c); err != nil {
		h.log.Warn("failed to publish counts", "err", err)
	}
}

// LocalCounts returns this node's own counts: its connections, the
// subscribers of each of its channels and the connections without a
// visitor key (Solo); not its visitors.
func (h *Hub) LocalCounts() Counts {
	c := Counts{Node: h.cfg.Node, Total: h.local.Load(), Channels: make(map[string]int64), Solo: make(map[string]int64)}
	h.totalMu.Lock()
	if n := h.everyone.solo; n > 0 {
		c.Solo[""] = n
	}
	h.totalMu.Unlock()
	for i := range h.channels {
		s := &h.channels[i]
		s.mu.RLock()
		for name, members := range s.channels {
			c.Channels[name] = int64(len(members))
		}
		for ch, p := range s.presence {
			if p.solo > 0 {
				c.Solo[ch] = p.solo
			}
		}
		s.mu.RUnlock()
	}
	return c
}

// RemoteCounts returns the counts other nodes last reported, one per node
// (a cluster's other members, or a pair's other node), sorted by node.
func (h *Hub) RemoteCounts() []Counts {
	h.remoteMu.RLock()
	out := make([]Counts, 0, len(h.remote))
	for _, r := range h.remote {
		c := r.counts
		c.Channels, c.Solo = maps.Clone(c.Channels), maps.Clone(c.Solo)
		out = append(out, c)
	}
	h.remoteMu.RUnlock()
	slices.SortFunc(out, func(a, b Counts) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// OnLocalCounts calls fn with this node's counts at once, every visitor
// included (VisitorsFull), and then each time the count loop publishes
// them, with the visitors changed since, until stop is called: for a peer
// that adds them to its own (see HandleCounts). fn must not block, nor
// change the Counts' maps and slices, which other listeners share.
func (h *Hub) OnLocalCounts(fn func(Counts)) (stop func()) {
	h.countSubsMu.Lock()
	h.lastSub++
	id := h.lastSub
	h.countSubs[id] = fn
	h.tracking.Store(true) // before the whole set is read: no change falls between
	c := h.LocalCounts()
	c.Visitors, c.VisitorsFull = h.localVisitors(), true
	fn(c)
	h.countSubsMu.Unlock()
	return func() {
		h.countSubsMu.Lock()
		delete(h.countSubs, id)
		if _, alone := h.broker.(Local); alone && len(h.countSubs) == 0 {
			h.tracking.Store(false)
			h.vdirtyMu.Lock()
			clear(h.vdirty)
			h.vdirtyMu.Unlock()
		}
		h.countSubsMu.Unlock()
	}
}
