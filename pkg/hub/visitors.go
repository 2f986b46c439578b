package hub

import (
	"slices"
	"strings"
)

// Visitors are the people behind the connections: every connection carries
// a visitor key (Start.Visitor), an opaque string its transport chose, and
// the hub counts the distinct keys among the open connections, overall and
// per channel, on this node and on the others together. A connection
// without a key is a visitor of its own, counted but never listed.
//
// For every channel ("" for every connection) the hub keeps one tally per
// visitor key: the connections it holds here and on the other nodes. So a
// distinct count is the size of a map, and a visitor with tabs on two
// nodes is one entry. Other nodes' visitors arrive through HandleCounts as
// changes, or as a whole set that replaces what a node sent before; this
// node's go out the same way (LocalCounts, OnLocalCounts), as changes once
// a peer has the whole set.

// VisitorCount is one visitor's connections in one channel on one node.
type VisitorCount struct {
	// Channel is the channel; "" stands for every connection.
	Channel string
	// Visitor is the visitor's key.
	Visitor string
	// Conns is the connections the visitor holds there now; 0: none, the
	// visitor has left.
	Conns int32
}

// Online is a count of connections and of the distinct visitors behind
// them.
type Online struct {
	Connections int64
	Visitors    int64
}

// Visit is one visitor in a presence list: its key and its connections.
type Visit struct {
	Visitor     string
	Connections int64
}

// tally is one visitor's connections in one channel: on this node, and on
// the other nodes together.
type tally struct{ local, remote int32 }

// presence is the visitors of one channel.
type presence struct {
	visitors map[string]tally
	solo     int64 // connections on this node without a visitor key
}

// add changes the connections of visitor on this node by delta. A
// connection without a key changes solo.
func (p *presence) add(visitor string, delta int32) {
	if visitor == "" {
		p.solo += int64(delta)
		return
	}
	p.addTally(visitor, tally{local: delta})
}

// addTally adds d to visitor's tally, dropping a visitor left with no
// connection anywhere.
func (p *presence) addTally(visitor string, d tally) {
	t := p.visitors[visitor]
	t.local += d.local
	t.remote += d.remote
	if t.local <= 0 && t.remote <= 0 {
		delete(p.visitors, visitor)
		return
	}
	if p.visitors == nil {
		p.visitors = make(map[string]tally)
	}
	p.visitors[visitor] = t
}

func (p *presence) distinct() int64 {
	if p == nil {
		return 0
	}
	return int64(len(p.visitors)) + p.solo
}

func (p *presence) empty() bool { return len(p.visitors) == 0 && p.solo == 0 }

// local returns visitor's connections on this node.
func (p *presence) local(visitor string) int32 {
	if p == nil {
		return 0
	}
	return p.visitors[visitor].local
}

// vkey names one visitor in one channel.
type vkey struct{ channel, visitor string }

// remoteNode is what another node last reported.
type remoteNode struct {
	counts   Counts         // without Visitors
	visitors map[vkey]int32 // its visitors' connections, by channel
}

// Visitors returns the distinct visitors in the cluster, or among the
// subscribers of channel when it is not empty.
func (h *Hub) Visitors(channel string) int64 {
	return h.Online(channel).Visitors
}

// Online returns the connections and distinct visitors in the cluster, or
// among the subscribers of channel when it is not empty.
func (h *Hub) Online(channel string) Online {
	if channel == "" {
		t := h.readTotal()
		return Online{Connections: t.n, Visitors: t.visitors}
	}
	s := h.channelShard(channel)
	s.mu.RLock()
	o := Online{Connections: int64(len(s.channels[channel])), Visitors: s.presence[channel].distinct()}
	s.mu.RUnlock()
	h.remoteMu.RLock()
	for _, r := range h.remote {
		o.Connections += r.counts.Channels[channel]
		o.Visitors += r.counts.Solo[channel]
	}
	h.remoteMu.RUnlock()
	return o
}

// Presence lists the visitors of channel ("" for everyone) in the
// cluster, with the connections each holds, in the order of their keys:
// up to limit of those whose key sorts after after, and whether more
// follow. Connections without a visitor key are not listed. It costs one
// pass over the channel's visitors, under the lock their connections
// take, and a sort of those after after.
func (h *Hub) Presence(channel, after string, limit int) (page []Visit, more bool) {
	var all []Visit
	collect := func(p *presence) {
		if p == nil {
			return
		}
		for k, t := range p.visitors {
			if k > after {
				all = append(all, Visit{Visitor: k, Connections: int64(t.local) + int64(t.remote)})
			}
		}
	}
	if channel == "" {
		h.totalMu.Lock()
		collect(&h.everyone)
		h.totalMu.Unlock()
	} else {
		s := h.channelShard(channel)
		s.mu.RLock()
		collect(s.presence[channel])
		s.mu.RUnlock()
	}
	slices.SortFunc(all, func(a, b Visit) int { return strings.Compare(a.Visitor, b.Visitor) })
	if len(all) > limit {
		return all[:limit:limit], true
	}
	return all, false
}

// trackLocal records that visitor's connections in channel changed, for
// the next publication of this node's counts, when anyone listens.
func (h *Hub) trackLocal(channel, visitor string) {
	if visitor == "" || !h.tracking.Load() {
		return
	}
	h.vdirtyMu.Lock()
	h.vdirty[vkey{channel, visitor}] = struct{}{}
	h.vdirtyMu.Unlock()
}

// visitorChanges returns this node's visitors whose connections changed
// since the last call, as they are now.
func (h *Hub) visitorChanges() []VisitorCount {
	h.vdirtyMu.Lock()
	dirty := h.vdirty
	if len(dirty) == 0 {
		h.vdirtyMu.Unlock()
		return nil
	}
	h.vdirty = make(map[vkey]struct{}, min(len(dirty), 1024))
	h.vdirtyMu.Unlock()
	out := make([]VisitorCount, 0, len(dirty))
	for k := range dirty {
		out = append(out, VisitorCount{Channel: k.channel, Visitor: k.visitor, Conns: h.localConns(k)})
	}
	return out
}

// localConns returns the connections visitor k holds on this node.
func (h *Hub) localConns(k vkey) int32 {
	if k.channel == "" {
		h.totalMu.Lock()
		defer h.totalMu.Unlock()
		return h.everyone.local(k.visitor)
	}
	s := h.channelShard(k.channel)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.presence[k.channel].local(k.visitor)
}

// localVisitors returns every visitor on this node, in every channel.
func (h *Hub) localVisitors() []VisitorCount {
	var out []VisitorCount
	h.totalMu.Lock()
	for k, t := range h.everyone.visitors {
		if t.local > 0 {
			out = append(out, VisitorCount{Visitor: k, Conns: t.local})
		}
	}
	h.totalMu.Unlock()
	for i := range h.channels {
		s := &h.channels[i]
		s.mu.RLock()
		for ch, p := range s.presence {
			for k, t := range p.visitors {
				if t.local > 0 {
					out = append(out, VisitorCount{Channel: ch, Visitor: k, Conns: t.local})
				}
			}
		}
		s.mu.RUnlock()
	}
	return out
}

// applyRemote records node's report c, which replaces what it sent
// before (its visitors: changes, or the whole set with VisitorsFull), and
// returns the channels whose counts changed ("" among them for the
// overall count). h.remoteMu must be held.
func (h *Hub) applyRemote(c Counts) (changed map[string]struct{}) {
	changed = make(map[string]struct{})
	r := h.remote[c.Node]
	var prev Counts
	if r != nil {
		prev = r.counts
	}
	// A report of nothing at all removes the node. One that carries
	// visitors does not: its counts may lag them for a moment.
	gone := c.Total == 0 && len(c.Channels) == 0 && len(c.Solo) == 0 && len(c.Visitors) == 0
	deltas := make(map[vkey]int32)
	switch {
	case gone:
		if r != nil {
			for k, n := range r.visitors {
				deltas[k] = -n
			}
			delete(h.remote, c.Node)
		}
		c = Counts{Node: c.Node}
	default:
		if r == nil {
			r = &remoteNode{visitors: make(map[vkey]int32)}
			h.remote[c.Node] = r
		}
		if c.VisitorsFull {
			next := make(map[vkey]int32, len(c.Visitors))
			for _, v := range c.Visitors {
				if v.Conns > 0 {
					next[vkey{v.Channel, v.Visitor}] = v.Conns
				}
			}
			for k, n := range r.visitors {
				if next[k] != n {
					deltas[k] = next[k] - n
				}
			}
			for k, n := range next {
				if _, ok := r.visitors[k]; !ok {
					deltas[k] = n
				}
			}
			r.visitors = next
		} else {
			for _, v := range c.Visitors {
				k := vkey{v.Channel, v.Visitor}
				n := max(v.Conns, 0)
				if d := n - r.visitors[k]; d != 0 {
					deltas[k] += d
				}
				if n == 0 {
					delete(r.visitors, k)
				} else {
					r.visitors[k] = n
				}
			}
		}
		r.counts = Counts{Node: c.Node, Total: c.Total, Channels: c.Channels, Solo: c.Solo}
	}

	// Every connection: the total, the solo connections and the visitors,
	// one step under totalMu.
	h.totalMu.Lock()
	before := h.total
	h.total.n += c.Total - prev.Total
	h.remoteSolo += c.Solo[""] - prev.Solo[""]
	for k, d := range deltas {
		if k.channel == "" {
			h.everyone.addTally(k.visitor, tally{remote: d})
		}
	}
	h.setVisitorsLocked()
	if h.total != before {
		h.total.version++
		changed[""] = struct{}{}
	}
	h.totalMu.Unlock()

	markChanged(changed, prev.Channels, c.Channels)
	markChanged(changed, prev.Solo, c.Solo)
	for k, d := range deltas {
		if k.channel == "" {
			continue
		}
		changed[k.channel] = struct{}{}
		s := h.channelShard(k.channel)
		s.mu.Lock()
		p := s.presence[k.channel]
		if p == nil {
			p = &presence{}
			s.presence[k.channel] = p
		}
		p.addTally(k.visitor, tally{remote: d})
		if p.empty() {
			delete(s.presence, k.channel)
		}
		s.mu.Unlock()
	}
	return changed
}

// markChanged adds to changed the channels whose figure differs between
// before and after; "" is left to the overall count, which says itself
// whether it changed.
func markChanged(changed map[string]struct{}, before, after map[string]int64) {
	for ch, n := range before {
		if ch != "" && after[ch] != n {
			changed[ch] = struct{}{}
		}
	}
	for ch, n := range after {
		if ch != "" && before[ch] != n {
			changed[ch] = struct{}{}
		}
	}
}

// setVisitorsLocked recomputes the overall distinct count. h.totalMu must
// be held.
func (h *Hub) setVisitorsLocked() {
	h.total.visitors = h.everyone.distinct() + h.remoteSolo
}
