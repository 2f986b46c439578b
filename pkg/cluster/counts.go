package cluster

import (
	"encoding/json"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// A member sends its own counts as changes (deltas) when they change and
// as a whole (a snapshot) every heartbeat; a delta applies only right
// after the message before it, so a member that missed one waits for the
// next snapshot. A member unheard for evictAfter is dropped from every
// count; one that shuts down says so and is dropped at once. A member
// name is stable across restarts: a new incarnation replaces the old at
// once, so a member that restarts is never counted twice.
const (
	heartbeat  = 500 * time.Millisecond
	evictAfter = 3 * heartbeat
)

// The kinds of counts message.
const (
	kindSnapshot = "snapshot"
	kindDelta    = "delta"
	kindLeave    = "leave"
)

// countsMsg is one member's counts message, as JSON on the counts subject.
type countsMsg struct {
	Member      string           `json:"member"`
	Incarnation string           `json:"incarnation"`
	Seq         uint64           `json:"seq"`
	Kind        string           `json:"kind"`
	Total       int64            `json:"total"`
	Channels    map[string]int64 `json:"channels,omitempty"` // a delta's: changed ones, 0 when gone
}

// exchange sends this member's counts and keeps the others'.
type exchange struct {
	m *Member

	mu      sync.Mutex
	h       hub.BrokerHandler
	seq     uint64
	mine    hub.Counts // the counts last sent
	peers   map[string]*peer
	sub     *nats.Subscription
	stop    chan struct{}
	done    sync.WaitGroup
	started bool
	closed  bool // nothing more is sent
	warned  bool // about another member with this one's name
}

// peer is another member's counts as this one knows them.
type peer struct {
	incarnation string
	seq         uint64
	counts      hub.Counts
	heard       time.Time
	stale       bool // a delta was missed: wait for a snapshot
}

func newExchange(m *Member) *exchange {
	return &exchange{m: m, peers: make(map[string]*peer), stop: make(chan struct{}), mine: hub.Counts{Channels: map[string]int64{}}}
}

// start subscribes to the counts subject and starts the heartbeat.
func (x *exchange) start(h hub.BrokerHandler) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.started {
		return nil
	}
	x.started, x.h = true, h
	sub, err := x.m.nc.Subscribe(x.m.counts, x.receive)
	if err != nil {
		return err
	}
	x.sub = sub
	x.done.Add(1)
	go x.loop()
	return nil
}

// publish sends the change from the counts last sent to c.
func (x *exchange) publish(c hub.Counts) error {
	x.mu.Lock()
	msg := countsMsg{Kind: kindDelta, Total: c.Total, Channels: map[string]int64{}}
	for ch, n := range c.Channels {
		if x.mine.Channels[ch] != n {
			msg.Channels[ch] = n
		}
	}
	for ch := range x.mine.Channels {
		if _, ok := c.Channels[ch]; !ok {
			msg.Channels[ch] = 0
		}
	}
	x.mine = hub.Counts{Total: c.Total, Channels: maps.Clone(c.Channels)}
	x.mu.Unlock()
	return x.send(msg)
}

// send stamps msg with this member and the next sequence, and publishes it.
func (x *exchange) send(msg countsMsg) error {
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return nil
	}
	x.seq++
	msg.Member, msg.Incarnation, msg.Seq = x.m.cfg.Member, x.incarnation(), x.seq
	x.mu.Unlock()
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	return x.m.nc.Publish(x.m.counts, b)
}

// incarnation names this run of the member: the hub's node name, unique
// per start. x.mu must be held.
func (x *exchange) incarnation() string {
	if n, ok := x.h.(interface{ Node() string }); ok {
		return n.Node()
	}
	return ""
}

func (x *exchange) snapshot() countsMsg {
	x.mu.Lock()
	defer x.mu.Unlock()
	return countsMsg{Kind: kindSnapshot, Total: x.mine.Total, Channels: maps.Clone(x.mine.Channels)}
}

// loop sends a snapshot every heartbeat and drops the members unheard for
// evictAfter.
func (x *exchange) loop() {
	defer x.done.Done()
	t := time.NewTicker(heartbeat / 5)
	defer t.Stop()
	last := time.Time{}
	for {
		select {
		case <-x.stop:
			return
		case now := <-t.C:
			if now.Sub(last) >= heartbeat {
				last = now
				x.send(x.snapshot()) // fails while NATS is away; the others then drop this member
			}
			x.evict(now)
		}
	}
}

func (x *exchange) evict(now time.Time) {
	var gone []string
	x.mu.Lock()
	for name, p := range x.peers {
		if now.Sub(p.heard) > evictAfter {
			delete(x.peers, name)
			gone = append(gone, name)
		}
	}
	h := x.h
	x.mu.Unlock()
	for _, name := range gone {
		x.m.log.Info("cluster: member unheard, dropped from the counts", "member", name, "silent_for", evictAfter)
		h.HandleCounts(hub.Counts{Node: name})
	}
}

// peerNames returns the names of the members heard from, sorted.
func (x *exchange) peerNames() []string {
	x.mu.Lock()
	names := slices.Collect(maps.Keys(x.peers))
	x.mu.Unlock()
	slices.Sort(names)
	return names
}

// receive takes another member's counts message.
func (x *exchange) receive(nm *nats.Msg) {
	var msg countsMsg
	if err := json.Unmarshal(nm.Data, &msg); err != nil || msg.Member == "" {
		return
	}
	x.mu.Lock()
	h := x.h
	if msg.Member == x.m.cfg.Member {
		if msg.Incarnation != x.incarnation() && !x.warned {
			x.warned = true
			x.mu.Unlock()
			x.m.log.Error("cluster: another node uses this node's member name; counts will be wrong", "member", msg.Member)
			return
		}
		x.mu.Unlock()
		return
	}
	p := x.peers[msg.Member]
	if msg.Kind == kindLeave {
		if p != nil && p.incarnation == msg.Incarnation {
			delete(x.peers, msg.Member)
			x.mu.Unlock()
			h.HandleCounts(hub.Counts{Node: msg.Member})
			return
		}
		x.mu.Unlock()
		return
	}
	if p == nil || p.incarnation != msg.Incarnation {
		p = &peer{incarnation: msg.Incarnation, stale: true, counts: hub.Counts{Node: msg.Member}}
		x.peers[msg.Member] = p
	}
	p.heard = time.Now()
	switch {
	case msg.Kind == kindSnapshot:
		p.counts = hub.Counts{Node: msg.Member, Total: msg.Total, Channels: msg.Channels}
		p.seq, p.stale = msg.Seq, false
	case msg.Kind == kindDelta && !p.stale && msg.Seq == p.seq+1:
		ch := maps.Clone(p.counts.Channels)
		if ch == nil {
			ch = map[string]int64{}
		}
		for name, n := range msg.Channels {
			if n == 0 {
				delete(ch, name)
			} else {
				ch[name] = n
			}
		}
		p.counts = hub.Counts{Node: msg.Member, Total: msg.Total, Channels: ch}
		p.seq = msg.Seq
	default:
		p.stale = true // a delta missed: the next snapshot mends it
		x.mu.Unlock()
		return
	}
	c := p.counts
	x.mu.Unlock()
	h.HandleCounts(c)
}

// leave tells the others this member goes, and stops the exchange.
func (x *exchange) leave() {
	if !x.halt() {
		return
	}
	x.send(countsMsg{Kind: kindLeave})
	x.mu.Lock()
	x.closed = true
	x.mu.Unlock()
	x.m.nc.Flush()
}

// halt stops the heartbeat and the subscription; it reports whether the
// exchange was running.
func (x *exchange) halt() bool {
	x.mu.Lock()
	running := x.started && !x.closed
	x.mu.Unlock()
	if !running {
		return false
	}
	select {
	case <-x.stop:
		return false
	default:
	}
	close(x.stop)
	x.done.Wait()
	x.sub.Unsubscribe()
	return true
}
