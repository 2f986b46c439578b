package hub

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"hash/maphash"
	"log/slog"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/frame"
)

// ErrClosed is returned by Register, Emit and Watch once the hub drains or
// has closed.
var ErrClosed = errors.New("hub is closed")

// ErrTooManySubscriptions is returned by Client.Subscribe when the client
// already holds Config.MaxSubscriptions channels.
var ErrTooManySubscriptions = errors.New("too many subscriptions")

// ErrPaused is returned by Register, Emit, EmitOnce and Watch while the hub
// is paused (see Pause): another node is the active one.
var ErrPaused = errors.New("hub is paused: another node is active")

// Config tunes a Hub. The zero value is ready to use.
type Config struct {
	// Broker carries messages and counts to other nodes. Default: Local, a
	// single node.
	Broker Broker
	// Node names this node to its broker. Default: a random id.
	Node string
	// Logger receives the hub's logs. Default: slog.Default().
	Logger *slog.Logger
	// QueueFrames bounds each client's send queue in frames. A client whose
	// queue overflows is disconnected as slow. Default: 1024.
	QueueFrames int
	// QueueBytes bounds each client's send queue in bytes. Default: 4 MiB.
	// Together with QueueFrames it caps the memory one stalled browser can
	// hold.
	QueueBytes int
	// MaxQueuedBytes bounds the bytes queued to the clients that fell
	// behind (whose last write the transport could not finish at once),
	// all together, as if each held its own copy of its frames: past it,
	// those holding the most are dropped as slow, until the rest fit (see
	// budget.go). Default: 256 MiB; negative: no limit.
	MaxQueuedBytes int64
	// OnOverBudget, if set, is called each time a client is dropped for
	// MaxQueuedBytes, for metrics.
	OnOverBudget func()
	// WriteTimeout bounds one write to a client; a client that takes longer
	// is disconnected. Default: 10s.
	WriteTimeout time.Duration
	// CountInterval is the shortest time between two count frames sent to
	// browsers: count changes within it are coalesced into one frame.
	// Default: 100ms. Larger saves bandwidth during connect storms; smaller
	// shows changes sooner. A node with more than 5,000 connections waits
	// 20µs per connection instead, so that count frames never take more
	// than about a quarter of a core. A burst of changes is sent once it
	// settles (CountInterval/4 without a change), or after 10 ×
	// CountInterval if it goes on: a connect storm costs each browser a
	// few count frames, and the last one follows the storm's end closely.
	CountInterval time.Duration
	// MaxSubscriptions bounds the channels one client may subscribe to.
	// Default: 64.
	MaxSubscriptions int
	// IdempotencyKeys bounds how many recent idempotency keys EmitOnce
	// remembers. Default: 100,000 (a few MiB at most).
	IdempotencyKeys int
	// IdempotencyTTL is how long EmitOnce remembers a key. Default: 5
	// minutes. A retry later than that is delivered again.
	IdempotencyTTL time.Duration
}

func (c *Config) setDefaults() {
	if c.Broker == nil {
		c.Broker = Local{}
	}
	if c.Node == "" {
		c.Node = randomID()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.QueueFrames <= 0 {
		c.QueueFrames = 1024
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = 4 << 20
	}
	if c.MaxQueuedBytes == 0 {
		c.MaxQueuedBytes = 256 << 20
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.CountInterval <= 0 {
		c.CountInterval = 100 * time.Millisecond
	}
	if c.MaxSubscriptions <= 0 {
		c.MaxSubscriptions = 64
	}
	if c.IdempotencyKeys <= 0 {
		c.IdempotencyKeys = 100_000
	}
	if c.IdempotencyTTL <= 0 {
		c.IdempotencyTTL = 5 * time.Minute
	}
}

const numShards = 32

type clientShard struct {
	mu      sync.RWMutex
	clients map[*Client]struct{}
}

type channelShard struct {
	mu       sync.RWMutex
	channels map[string]map[*Client]struct{}
}

// Hub holds the connections of one node. Create it with New; all methods are
// safe for concurrent use.
type Hub struct {
	cfg    Config
	log    *slog.Logger
	broker Broker
	seed   maphash.Seed

	clients  [numShards]clientShard
	channels [numShards]channelShard
	local    atomic.Int64 // open connections on this node

	totalMu sync.Mutex
	total   total // open connections in the cluster, versioned

	nextID   atomic.Uint64
	idPrefix string

	emitMu sync.Mutex // orders deliveries: every client sees messages in one order
	pool   writerPool
	budget budget // bytes held for clients behind, across the node

	remoteMu sync.RWMutex
	remote   map[string]Counts // other nodes' counts, by node

	watchMu  sync.Mutex
	watchers map[string]map[*watcher]struct{} // by channel; "" is everyone
	paused   atomic.Bool                      // set and cleared under watchMu
	pauseCh  chan struct{}                    // closed by Pause; Watch calls end on it

	keys keyStore // recent idempotency keys

	countWake   chan struct{} // wakes countLoop: globalDirty or localDirty is set
	globalDirty atomic.Bool   // the cluster count changed since the last count frame
	localDirty  atomic.Bool   // this node's counts changed since they were last published
	draining    atomic.Bool
	done        chan struct{} // closed by Close
	closeOnce   sync.Once
	loops       sync.WaitGroup
	writers     sync.WaitGroup

	stats Stats
}

// New returns a running hub. Call Close to stop it.
func New(cfg Config) (*Hub, error) {
	cfg.setDefaults()
	h := &Hub{
		cfg:       cfg,
		log:       cfg.Logger,
		broker:    cfg.Broker,
		seed:      maphash.MakeSeed(),
		idPrefix:  cfg.Node + "-",
		remote:    make(map[string]Counts),
		watchers:  make(map[string]map[*watcher]struct{}),
		countWake: make(chan struct{}, 1),
		done:      make(chan struct{}),
		pauseCh:   make(chan struct{}),
		pool:      newWriterPool(),
	}
	h.keys.init(cfg.IdempotencyKeys, cfg.IdempotencyTTL)
	h.budget.init(h, cfg.MaxQueuedBytes, cfg.OnOverBudget)
	for i := range h.clients {
		h.clients[i].clients = make(map[*Client]struct{})
		h.channels[i].channels = make(map[string]map[*Client]struct{})
	}
	if err := h.broker.Subscribe(h); err != nil {
		return nil, err
	}
	h.loops.Add(1)
	go h.countLoop()
	return h, nil
}

// Draining reports whether the hub has stopped taking clients and emits.
func (h *Hub) Draining() bool { return h.draining.Load() }

// Node returns the name this node uses with its broker.
func (h *Hub) Node() string { return h.cfg.Node }

// Paused reports whether the hub is paused.
func (h *Hub) Paused() bool { return h.paused.Load() }

// Pause makes the hub refuse new clients, emits and watches with ErrPaused
// and ends every Watch in progress with ErrPaused, without draining: the
// clients already registered stay (end them with HandBack) and Resume
// undoes it. A standby node pauses while its primary serves, so that one
// node at a time counts everyone.
func (h *Hub) Pause() {
	h.watchMu.Lock()
	defer h.watchMu.Unlock()
	if !h.paused.Load() {
		h.paused.Store(true)
		close(h.pauseCh)
	}
}

// Resume undoes Pause.
func (h *Hub) Resume() {
	h.watchMu.Lock()
	defer h.watchMu.Unlock()
	if h.paused.Load() {
		h.paused.Store(false)
		h.pauseCh = make(chan struct{})
	}
}

// refuse returns why the hub takes no emits or clients now, if it does not.
func (h *Hub) refuse() error {
	switch {
	case h.draining.Load():
		return ErrClosed
	case h.paused.Load():
		return ErrPaused
	}
	return nil
}

// Emit assigns m an ID, queues it to every recipient on this node and hands
// it to the broker for the other nodes. It returns the ID and the number of
// local connections it was queued to. It never blocks on a client.
func (h *Hub) Emit(ctx context.Context, m Message) (id string, recipients int, err error) {
	if err := h.refuse(); err != nil {
		return "", 0, err
	}
	m.ID = h.idPrefix + strconv.FormatUint(h.nextID.Add(1), 36)
	recipients = h.deliver(m)
	h.stats.Emitted.Add(1)
	if err := h.broker.Publish(ctx, m); err != nil {
		return m.ID, recipients, err
	}
	return m.ID, recipients, nil
}

// HandleMessage delivers a message published by another node.
func (h *Hub) HandleMessage(m Message) {
	if h.draining.Load() {
		return
	}
	h.deliver(m)
}

// HandleCounts records another node's counts.
func (h *Hub) HandleCounts(c Counts) {
	if c.Node == h.cfg.Node {
		return
	}
	h.remoteMu.Lock()
	prev := h.remote[c.Node]
	if c.Total == 0 && len(c.Channels) == 0 {
		delete(h.remote, c.Node)
	} else {
		h.remote[c.Node] = c
	}
	h.remoteMu.Unlock()
	if c.Total != prev.Total {
		h.addTotal(c.Total - prev.Total)
		h.countChanged("")
	}
	for ch := range prev.Channels {
		h.countChanged(ch)
	}
	for ch := range c.Channels {
		if _, ok := prev.Channels[ch]; !ok {
			h.countChanged(ch)
		}
	}
}

// deliver encodes m once and queues the same bytes to every local
// recipient.
func (h *Hub) deliver(m Message) int {
	f := fanout{pool: &h.pool, frame: frame.AppendMessage(nil, m.ID, m.Event, m.Channel, m.Data)}
	h.emitMu.Lock()
	if m.Channel == "" {
		for i := range h.clients {
			s := &h.clients[i]
			s.mu.RLock()
			f.queue(s.clients)
			s.mu.RUnlock()
		}
	} else {
		s := h.channelShard(m.Channel)
		s.mu.RLock()
		f.queue(s.channels[m.Channel])
		s.mu.RUnlock()
	}
	f.startWriters()
	h.emitMu.Unlock()
	h.stats.Delivered.Add(int64(f.queued))
	h.stats.DroppedClosed.Add(f.dropped)
	for _, c := range f.slow {
		h.stats.SlowDisconnects.Add(1)
		c.drop()
	}
	return f.queued
}

// fanout queues one frame to sets of clients and tallies the outcomes.
type fanout struct {
	pool    *writerPool
	frame   []byte
	queued  int
	dropped int64     // recipients already closing
	slow    []*Client // recipients whose queue overflowed, to drop outside the locks
	// idle holds recipients that need a writer, pushed to the pool a
	// chunk at a time: one lock for many clients, and writing starts
	// while the fan-out goes on.
	idle  [writerChunk]*Client
	nidle int
}

func (f *fanout) queue(clients map[*Client]struct{}) {
	for c := range clients {
		switch c.enqueue(f.frame) {
		case queued:
			f.queued++
		case idle:
			f.queued++
			f.idle[f.nidle] = c
			if f.nidle++; f.nidle == len(f.idle) {
				f.startWriters()
			}
		case skipped:
			f.dropped++
		case overflow:
			f.slow = append(f.slow, c)
		}
	}
}

// startWriters pushes the recipients that need a writer to the pool.
func (f *fanout) startWriters() {
	f.pool.push(f.idle[:f.nidle]...)
	clear(f.idle[:f.nidle])
	f.nidle = 0
}

// Count returns the number of open connections in the cluster, or the
// number of subscribers of channel when it is not empty.
func (h *Hub) Count(channel string) int64 {
	if channel == "" {
		return h.addTotal(0).n
	}
	s := h.channelShard(channel)
	s.mu.RLock()
	n := int64(len(s.channels[channel]))
	s.mu.RUnlock()
	h.remoteMu.RLock()
	for _, c := range h.remote {
		n += c.Channels[channel]
	}
	h.remoteMu.RUnlock()
	return n
}

// total is the cluster's connection count with a version that grows with
// every change, so that of two counts read concurrently the newer is known.
type total struct {
	n       int64
	version uint64
}

// addTotal adds delta to the cluster's count and returns the result; with
// delta 0 it only reads it.
func (h *Hub) addTotal(delta int64) total {
	h.totalMu.Lock()
	defer h.totalMu.Unlock()
	if delta != 0 {
		h.total.n += delta
		h.total.version++
	}
	return h.total
}

// Watch calls fn with the current count of channel ("" for everyone), then
// again after every change until ctx ends, fn fails or the hub drains.
// Changes that arrive while fn runs are coalesced: the next call carries
// the latest count, so the last value seen after a burst is the true one.
// It returns fn's error, ctx's error, ErrClosed, or ErrPaused when the hub
// is or becomes paused.
func (h *Hub) Watch(ctx context.Context, channel string, fn func(count int64) error) error {
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

	last := int64(-1)
	for {
		if n := h.Count(channel); n != last {
			if err := fn(n); err != nil {
				return err
			}
			last = n
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

// localChanged is countChanged for a change on this node, which the loop
// must also publish to the other nodes. Changes reported by other nodes go
// through countChanged alone: publishing them back would make two nodes
// echo each other's counts forever.
func (h *Hub) localChanged(channel string) {
	h.localDirty.Store(true)
	h.countChanged(channel)
	if channel != "" {
		h.wakeCountLoop()
	}
}

func (h *Hub) wakeCountLoop() {
	select {
	case h.countWake <- struct{}{}:
	default:
	}
}

// countLoop sends the global count to every browser and the local counts
// to the broker, each only when it changed: once a burst of changes has
// settled, or has gone on for countMaxDelay, and at least countInterval
// after the previous send.
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
			h.broadcastCount(h.addTotal(0))
		}
		if h.localDirty.Swap(false) {
			h.publishCounts()
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
	buf := frame.AppendCount(nil, t.n)
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
	c := Counts{Node: h.cfg.Node, Total: h.local.Load(), Channels: make(map[string]int64)}
	for i := range h.channels {
		s := &h.channels[i]
		s.mu.RLock()
		for name, members := range s.channels {
			c.Channels[name] = int64(len(members))
		}
		s.mu.RUnlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.WriteTimeout)
	defer cancel()
	if err := h.broker.PublishCounts(ctx, c); err != nil {
		h.log.Warn("failed to publish counts", "err", err)
	}
}

func (h *Hub) clientShard(c *Client) *clientShard {
	return &h.clients[c.id%numShards]
}

func (h *Hub) channelShard(name string) *channelShard {
	return &h.channels[maphash.String(h.seed, name)%numShards]
}

// Disconnect ends every local connection with reason r, spread evenly over
// spread so that clients do not all reconnect at once, and waits for their
// writers to finish or ctx to end; when ctx ends first, their writes in
// progress are canceled. The hub keeps accepting new clients, and
// Disconnect does not wait for those; use Drain to stop it.
func (h *Hub) Disconnect(ctx context.Context, r Reason, spread time.Duration) error {
	all := h.snapshot()
	rest := all
	if len(rest) > 0 && spread > 0 {
		const steps = 20
		per := (len(rest) + steps - 1) / steps
		tick := time.NewTicker(spread / steps)
		defer tick.Stop()
		for len(rest) > per {
			for _, c := range rest[:per] {
				c.kick(r)
			}
			rest = rest[per:]
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
	}
	for _, c := range rest {
		c.kick(r)
	}
	for _, c := range all {
		select {
		case <-c.done:
		case <-ctx.Done():
			for _, c := range all {
				c.cancelWrite()
			}
			return ctx.Err()
		}
	}
	return nil
}

// snapshot returns the clients registered right now.
func (h *Hub) snapshot() []*Client {
	var all []*Client
	for i := range h.clients {
		s := &h.clients[i]
		s.mu.RLock()
		for c := range s.clients {
			all = append(all, c)
		}
		s.mu.RUnlock()
	}
	return all
}

// HandBack ends every local connection with ReasonHandBack, in random
// order at jittered times spread over spread, so that the clients
// reconnect (to the active node) without a stampede, and returns how many
// it ended. When ctx ends it stops, leaving the rest connected. It does
// not wait for the connections to finish closing. Call Pause first, or
// the clients may come straight back.
func (h *Hub) HandBack(ctx context.Context, spread time.Duration) int {
	all := h.snapshot()
	mrand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	// Client i of n goes at a random time within its slot i*spread/n, in
	// at most 100 slots: the closes are jittered yet span the window.
	slots := min(len(all), 100)
	per := 1
	if slots > 0 {
		per = (len(all) + slots - 1) / slots
	}
	start := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	n := 0
	for i := 0; i < slots && n < len(all); i++ {
		if spread > 0 {
			slot := spread / time.Duration(slots)
			at := start.Add(time.Duration(i)*slot + mrand.N(slot+1))
			t.Reset(time.Until(at))
			select {
			case <-t.C:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			return n
		}
		for _, c := range all[n:min(n+per, len(all))] {
			c.kick(ReasonHandBack)
			n++
		}
	}
	return n
}

// Drain stops the hub taking new clients and emits, ends every connection
// with reason r spread over spread, ends every Watch, and waits for the
// writers to finish or ctx to end; when ctx ends first, the writes in
// progress are canceled.
func (h *Hub) Drain(ctx context.Context, r Reason, spread time.Duration) error {
	h.watchMu.Lock()
	h.draining.Store(true)
	h.watchMu.Unlock()
	h.closeOnce.Do(func() { close(h.done) })
	return h.Disconnect(ctx, r, spread)
}

// Close drains the hub at once, stops its loops, tells the other nodes this
// one counts nobody any more, and closes its broker. It waits for the
// clients' writers up to Config.WriteTimeout.
func (h *Hub) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.WriteTimeout)
	defer cancel()
	err := h.Drain(ctx, ReasonShutdown, 0)
	h.loops.Wait()
	h.publishCounts()
	if err == nil {
		// Clients kicked by an earlier Drain whose context ran out may
		// still be closing.
		err = h.waitWriters(ctx)
	}
	return errors.Join(err, h.broker.Close())
}

func (h *Hub) waitWriters(ctx context.Context) error {
	idle := make(chan struct{})
	go func() {
		h.writers.Wait()
		close(idle)
	}()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats returns the hub's counters.
func (h *Hub) Stats() *Stats { return &h.stats }

// Stats counts what the hub has done since it started.
type Stats struct {
	// Emitted counts messages emitted on this node.
	Emitted atomic.Int64
	// Delivered counts message frames queued to clients.
	Delivered atomic.Int64
	// SlowDisconnects counts clients dropped for a full send queue, or
	// for the node's budget of queued bytes.
	SlowDisconnects atomic.Int64
	// BudgetDrops counts the clients dropped for Config.MaxQueuedBytes.
	BudgetDrops atomic.Int64
	// WriteFailures counts clients dropped for a failed or timed-out write.
	WriteFailures atomic.Int64
	// DroppedOverflow counts frames thrown away because a client's queue
	// overflowed: the frame that did not fit and those it had queued.
	DroppedOverflow atomic.Int64
	// DroppedClosed counts message frames not written because their
	// client was closing: skipped by a fan-out, or left in its queue when
	// it was kicked, failed or closed.
	DroppedClosed atomic.Int64
	// Subscriptions is a gauge: the channel subscriptions held by this
	// node's clients.
	Subscriptions atomic.Int64
	// Channels is a gauge: the channels with at least one subscriber on
	// this node.
	Channels atomic.Int64
}

// LocalCount returns the number of open connections on this node alone.
func (h *Hub) LocalCount() int64 { return h.local.Load() }

var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

func randomID() string {
	var b [5]byte
	rand.Read(b[:])
	return idEncoding.EncodeToString(b[:])
}

func appendCount(n int64) []byte { return frame.AppendCount(nil, n) }
