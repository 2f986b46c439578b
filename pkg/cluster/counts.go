package cluster

import (
	"cmp"
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
//
// Visitors are too many to send whole every heartbeat. A member sends the
// visitors whose connections changed, as they are now, in its deltas;
// every message carries the sequence of the member's last message with
// visitors (VSeq), and each message with visitors the one before it
// (PrevV), so the others see a missed one at once. A member that missed
// one, or hears a member for the first time, asks that member for its
// whole set (request and reply, in chunks) and meanwhile keeps the
// changes that arrive, to apply those that follow the set.
const (
	heartbeat  = 500 * time.Millisecond
	evictAfter = 3 * heartbeat
	// chunkVisitors bounds the visitors of one message: about 270 bytes
	// each at most, far below NATS's 1 MB payload.
	chunkVisitors = 1000
	// retryVisitors is how long a member waits for a whole set it asked
	// for before it asks again.
	retryVisitors = 2 * heartbeat
	// maxPending bounds the changes kept while a whole set is awaited;
	// past it they are dropped and the set asked for again.
	maxPending = 1000
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
	Solo        map[string]int64 `json:"solo,omitempty"`     // always whole
	Visitors    []visitorJSON    `json:"visitors,omitempty"` // a delta's: changed ones, 0 when gone
	VSeq        uint64           `json:"vseq,omitempty"`     // the last message with visitors, this one included
	PrevV       uint64           `json:"prevv,omitempty"`    // with visitors: the one with visitors before
}

// visitorJSON is one visitor's connections in one channel.
type visitorJSON struct {
	Channel string `json:"c,omitempty"`
	Visitor string `json:"v"`
	Conns   int32  `json:"n"`
}

// visitorsReq asks a member for its whole set of visitors.
type visitorsReq struct {
	From string `json:"from"`
	ID   uint64 `json:"id"`
}

// visitorsPart is one chunk of a member's whole set of visitors.
type visitorsPart struct {
	Member      string        `json:"member"`
	Incarnation string        `json:"incarnation"`
	ID          uint64        `json:"id"`
	Part        int           `json:"part"`
	Last        bool          `json:"last"`
	VSeq        uint64        `json:"vseq"` // the set is as of this message with visitors
	Visitors    []visitorJSON `json:"visitors,omitempty"`
}

type vkey struct{ channel, visitor string }

// exchange sends this member's counts and keeps the others'.
type exchange struct {
	m *Member

	mu      sync.Mutex
	h       hub.BrokerHandler
	seq     uint64
	vseq    uint64         // the last message sent with visitors
	mine    hub.Counts     // the counts last sent
	myVis   map[vkey]int32 // this member's visitors as last sent
	peers   map[string]*peer
	lastReq uint64
	sub     *nats.Subscription
	reqSub  *nats.Subscription // requests for this member's visitors
	repSub  *nats.Subscription // the answers to this member's requests
	inbox   string
	stop    chan struct{}
	done    sync.WaitGroup
	started bool
	closed  bool                 // nothing more is sent
	warned  bool                 // about another member with this one's name
	lose    func(countsMsg) bool // tests: drops the messages it returns true for, as a lossy network would
}

// peer is another member's counts as this one knows them.
type peer struct {
	incarnation string
	seq         uint64
	counts      hub.Counts
	heard       time.Time
	stale       bool // a delta was missed: wait for a snapshot

	vseq      uint64        // the peer's visitors are known up to this message
	vstale    bool          // a message with visitors was missed: the whole set is asked for
	asked     time.Time     // when it was last asked for
	reqID     uint64        // the request whose answer is awaited
	parts     []visitorJSON // the answer's chunks so far
	nextPart  int           // the chunk expected next
	pending   []countsMsg   // messages with visitors that arrived meanwhile
	requested bool          // an answer is awaited
}

func newExchange(m *Member) *exchange {
	return &exchange{m: m, peers: make(map[string]*peer), stop: make(chan struct{}),
		mine: hub.Counts{Channels: map[string]int64{}}, myVis: make(map[vkey]int32)}
}

// visitorsSubject is where member answers requests for its visitors.
func (x *exchange) visitorsSubject(member string) string {
	return x.m.counts + ".visitors." + member
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
	if x.reqSub, err = x.m.nc.Subscribe(x.visitorsSubject(x.m.cfg.Member), x.answer); err != nil {
		return err
	}
	x.inbox = x.m.nc.NewRespInbox()
	if x.repSub, err = x.m.nc.Subscribe(x.inbox, x.receivePart); err != nil {
		return err
	}
	x.done.Add(1)
	go x.loop()
	return nil
}

// publish sends the change from the counts last sent to c, in several
// messages when many visitors changed.
func (x *exchange) publish(c hub.Counts) error {
	x.mu.Lock()
	msg := countsMsg{Kind: kindDelta, Total: c.Total, Channels: map[string]int64{}, Solo: c.Solo}
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
	x.mine = hub.Counts{Total: c.Total, Channels: c.Channels, Solo: c.Solo} // the hub hands over maps nobody changes
	vs := make([]visitorJSON, 0, len(c.Visitors))
	for _, v := range c.Visitors {
		k := vkey{v.Channel, v.Visitor}
		if v.Conns <= 0 {
			delete(x.myVis, k)
		} else {
			x.myVis[k] = v.Conns
		}
		vs = append(vs, visitorJSON{v.Channel, v.Visitor, max(v.Conns, 0)})
	}
	x.mu.Unlock()
	for first := true; first || len(vs) > 0; first = false {
		n := min(len(vs), chunkVisitors)
		msg.Visitors, vs = vs[:n:n], vs[n:]
		if err := x.send(msg); err != nil {
			return err
		}
		msg.Channels = nil // sent with the first
	}
	return nil
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
	if len(msg.Visitors) > 0 {
		msg.PrevV, x.vseq = x.vseq, x.seq
	}
	msg.VSeq = x.vseq
	lost := x.lose != nil && x.lose(msg)
	x.mu.Unlock()
	if lost {
		return nil
	}
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
	return countsMsg{Kind: kindSnapshot, Total: x.mine.Total, Channels: x.mine.Channels, Solo: x.mine.Solo}
}

// answer sends this member's whole set of visitors to a member that asks,
// in chunks.
func (x *exchange) answer(nm *nats.Msg) {
	var req visitorsReq
	if err := json.Unmarshal(nm.Data, &req); err != nil || nm.Reply == "" {
		return
	}
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return
	}
	all := make([]visitorJSON, 0, len(x.myVis))
	for k, n := range x.myVis {
		all = append(all, visitorJSON{k.channel, k.visitor, n})
	}
	part := visitorsPart{Member: x.m.cfg.Member, Incarnation: x.incarnation(), ID: req.ID, VSeq: x.vseq}
	x.mu.Unlock()
	for first := true; first || len(all) > 0; first = false {
		n := min(len(all), chunkVisitors)
		part.Visitors, all = all[:n:n], all[n:]
		part.Last = len(all) == 0
		b, err := json.Marshal(part)
		if err != nil || x.m.nc.Publish(nm.Reply, b) != nil {
			return // the asker asks again
		}
		part.Part++
	}
}

// ask requests p's whole set of visitors, unless it was asked for lately.
// x.mu must be held.
func (x *exchange) ask(name string, p *peer, now time.Time) {
	if p.requested && now.Sub(p.asked) < retryVisitors {
		return
	}
	x.lastReq++
	p.requested, p.asked, p.reqID, p.parts, p.nextPart = true, now, x.lastReq, nil, 0
	b, _ := json.Marshal(visitorsReq{From: x.m.cfg.Member, ID: p.reqID})
	x.m.nc.PublishRequest(x.visitorsSubject(name), x.inbox, b) // a failure is retried
}

// receivePart takes a chunk of a whole set this member asked for; the
// last one applies the set, then the changes kept meanwhile that follow.
func (x *exchange) receivePart(nm *nats.Msg) {
	var part visitorsPart
	if err := json.Unmarshal(nm.Data, &part); err != nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	p := x.peers[part.Member]
	if p == nil || !p.vstale || p.incarnation != part.Incarnation || part.ID != p.reqID {
		return
	}
	if part.Part != p.nextPart {
		p.requested = false // a chunk lost: ask again
		x.ask(part.Member, p, time.Now())
		return
	}
	p.parts = append(p.parts, part.Visitors...)
	p.nextPart++
	if !part.Last {
		return
	}
	c := p.counts
	c.VisitorsFull, c.Visitors = true, toHub(p.parts)
	p.vseq, p.vstale, p.requested, p.parts = part.VSeq, false, false, nil
	pending := p.pending
	p.pending = nil
	x.h.HandleCounts(c)
	slices.SortFunc(pending, func(a, b countsMsg) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, msg := range pending {
		if vs := x.visitorsOf(part.Member, p, msg); vs != nil {
			c := p.counts
			c.Visitors = vs
			x.h.HandleCounts(c)
		}
	}
}

// visitorsOf returns the visitors msg carries when they follow what p is
// known to be, to be handed to the hub with p's counts, and asks for p's
// whole set when a message with visitors was missed. x.mu must be held.
func (x *exchange) visitorsOf(name string, p *peer, msg countsMsg) []hub.VisitorCount {
	switch {
	case p.vstale:
		if len(msg.Visitors) > 0 && msg.Seq > p.vseq {
			if len(p.pending) >= maxPending {
				p.pending, p.requested = nil, false
			}
			p.pending = append(p.pending, msg)
		}
		x.ask(name, p, time.Now())
	case len(msg.Visitors) > 0 && msg.Seq <= p.vseq:
		// Held already: the whole set covered it.
	case len(msg.Visitors) > 0 && msg.PrevV == p.vseq:
		p.vseq = msg.Seq
		return toHub(msg.Visitors)
	case msg.VSeq > p.vseq:
		p.vstale = true
		return x.visitorsOf(name, p, msg)
	}
	return nil
}

func toHub(vs []visitorJSON) []hub.VisitorCount {
	out := make([]hub.VisitorCount, len(vs))
	for i, v := range vs {
		out[i] = hub.VisitorCount{Channel: v.Channel, Visitor: v.Visitor, Conns: v.Conns}
	}
	return out
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
	x.mu.Lock()
	defer x.mu.Unlock()
	for name, p := range x.peers {
		switch {
		case now.Sub(p.heard) > evictAfter:
			delete(x.peers, name)
			x.m.log.Info("cluster: member unheard, dropped from the counts", "member", name, "silent_for", evictAfter)
			x.h.HandleCounts(hub.Counts{Node: name})
		case p.vstale:
			x.ask(name, p, now)
		}
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
			x.m.log.Error("cluster: another node uses this node's member name; counts will be wrong", "member", msg.Member)
		}
		x.mu.Unlock()
		return
	}
	defer x.mu.Unlock()
	p := x.peers[msg.Member]
	if msg.Kind == kindLeave {
		if p != nil && p.incarnation == msg.Incarnation {
			delete(x.peers, msg.Member)
			h.HandleCounts(hub.Counts{Node: msg.Member})
		}
		return
	}
	if p == nil || p.incarnation != msg.Incarnation {
		if p != nil {
			h.HandleCounts(hub.Counts{Node: msg.Member}) // the earlier incarnation's visitors go
		}
		p = &peer{incarnation: msg.Incarnation, stale: true, vstale: true, counts: hub.Counts{Node: msg.Member}}
		x.peers[msg.Member] = p
	}
	p.heard = time.Now()
	counted := true
	switch {
	case msg.Kind == kindSnapshot:
		p.counts = hub.Counts{Node: msg.Member, Total: msg.Total, Channels: msg.Channels, Solo: msg.Solo}
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
		p.counts = hub.Counts{Node: msg.Member, Total: msg.Total, Channels: ch, Solo: msg.Solo}
		p.seq = msg.Seq
	default:
		p.stale = true // a delta missed: the next snapshot mends it
		counted = false
	}
	// The counts and the visitors that follow them reach the hub in one
	// report.
	if vs := x.visitorsOf(msg.Member, p, msg); counted || vs != nil {
		c := p.counts
		c.Visitors = vs
		h.HandleCounts(c)
	}
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
	x.reqSub.Unsubscribe()
	x.repSub.Unsubscribe()
	return true
}
