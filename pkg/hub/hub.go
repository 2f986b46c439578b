package hub

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"hash/maphash"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/frame"
	"github.com/switchboard-rt/switchboard/pkg/msglog"
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
	// Broker carries counts to other nodes. Default: Local, a single node.
	Broker Broker
	// Sequencer, when set, is the message log the hub shares with other
	// nodes (see Sequencer): emits go into it, and the hub delivers what
	// its owner hands to Deliver. Default: none, the hub's own log.
	Sequencer Sequencer
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
	// HistorySize bounds the messages the log keeps for connections that
	// resume and subscribes that ask for the last ones. Default: 1000;
	// negative: none are kept (offsets are still assigned, but a
	// connection that missed a message cannot recover it).
	HistorySize int
	// HistoryTTL bounds how long the log keeps a message. Default: 5
	// minutes.
	HistoryTTL time.Duration
	// FollowTimeout is how long an emit waits for the follower (see
	// Follow) before the follower is dropped and the hub goes on alone.
	// Default: 1s. Longer rides out a slower standby; meanwhile emits wait.
	FollowTimeout time.Duration
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
	if c.FollowTimeout <= 0 {
		c.FollowTimeout = time.Second
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
	presence map[string]*presence // each channel's visitors, here and on other nodes
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

	totalMu    sync.Mutex
	total      total    // open connections and visitors in the cluster, versioned
	everyone   presence // every connection's visitors, here and on other nodes
	remoteSolo int64    // connections without a visitor key on other nodes

	tracking atomic.Bool // someone takes this node's visitor changes
	vdirtyMu sync.Mutex
	vdirty   map[vkey]struct{} // visitors changed since the last publication

	nextID   atomic.Uint64
	idPrefix string

	// emitMu orders the log: offsets, commits and deliveries, so every
	// client sees messages in one order; and a connection's start (its
	// welcome, replay and first live message) against them.
	emitMu   sync.Mutex
	msgs     *msglog.Log
	assigned uint64       // the last offset given to a message; under emitMu
	follow   *followState // the follower, if any; under emitMu
	pool     writerPool
	budget   budget // bytes held for clients behind, across the node

	remoteMu sync.RWMutex
	remote   map[string]*remoteNode // other nodes' counts and visitors, by node

	countSubsMu sync.Mutex
	countSubs   map[uint64]func(Counts) // see OnLocalCounts
	lastSub     uint64

	watchMu  sync.Mutex
	watchers map[string]map[*watcher]struct{} // by channel; "" is everyone
	paused   atomic.Bool                      // set and cleared under watchMu
	pauseCh  chan struct{}                    // closed by Pause; Watch calls end on it

	keys keyStore // recent idempotency keys

	countWake   chan struct{} // wakes countLoop: globalDirty is set
	publishWake chan struct{} // wakes publishLoop: localDirty is set
	globalDirty atomic.Bool   // the cluster count changed since the last count frame
	localDirty  atomic.Bool   // this node's counts changed since they were last published
	draining    atomic.Bool
	done        chan struct{} // closed by Drain (and so by Close)
	closeOnce   sync.Once
	// closed is closed by Close: publishLoop goes on through a drain,
	// so that each client the drain closes leaves the other nodes'
	// counts as it goes, not when the hub closes.
	closed     chan struct{}
	closedOnce sync.Once
	loops      sync.WaitGroup
	writers    sync.WaitGroup

	stats Stats
}

// New returns a running hub. Call Close to stop it.
func New(cfg Config) (*Hub, error) {
	cfg.setDefaults()
	h := &Hub{
		cfg:         cfg,
		log:         cfg.Logger,
		broker:      cfg.Broker,
		seed:        maphash.MakeSeed(),
		idPrefix:    cfg.Node + "-",
		remote:      make(map[string]*remoteNode),
		vdirty:      make(map[vkey]struct{}),
		countSubs:   make(map[uint64]func(Counts)),
		watchers:    make(map[string]map[*watcher]struct{}),
		countWake:   make(chan struct{}, 1),
		publishWake: make(chan struct{}, 1),
		done:        make(chan struct{}),
		closed:      make(chan struct{}),
		pauseCh:     make(chan struct{}),
		pool:        newWriterPool(),
		msgs:        msglog.New(msglog.Config{Size: cfg.HistorySize, TTL: cfg.HistoryTTL}),
	}
	h.keys.init(cfg.IdempotencyKeys, cfg.IdempotencyTTL)
	h.budget.init(h, cfg.MaxQueuedBytes, cfg.OnOverBudget)
	for i := range h.clients {
		h.clients[i].clients = make(map[*Client]struct{})
		h.channels[i].channels = make(map[string]map[*Client]struct{})
		h.channels[i].presence = make(map[string]*presence)
	}
	if _, alone := h.broker.(Local); !alone {
		h.tracking.Store(true)
	}
	if err := h.broker.Subscribe(h); err != nil {
		return nil, err
	}
	h.loops.Add(2)
	go h.countLoop()
	go h.publishLoop()
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
	h.emitMu.Lock()
	f, slow := h.detachLocked()
	h.emitMu.Unlock()
	dropAll(slow)
	if f != nil {
		f.Stop(ErrClosed)
	}
	h.closedOnce.Do(func() { close(h.closed) })
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
	// Recovered counts connections that resumed with nothing missed;
	// NotRecovered those whose position the log could not answer.
	Recovered    atomic.Int64
	NotRecovered atomic.Int64
	// FollowerDrops counts followers dropped for not acknowledging in
	// time.
	FollowerDrops atomic.Int64
}

// Position returns the log's epoch and the offset of the newest message
// committed.
func (h *Hub) Position() msglog.Position { return h.msgs.Position() }

// HistoryStats returns the number of messages the log holds and the bytes
// of their frames.
func (h *Hub) HistoryStats() (messages, bytes int) { return h.msgs.Stats() }

// MaxSubscriptions returns the most channels one client may join.
func (h *Hub) MaxSubscriptions() int { return h.cfg.MaxSubscriptions }

// LocalCount returns the number of open connections on this node alone.
func (h *Hub) LocalCount() int64 { return h.local.Load() }

var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

func randomID() string {
	var b [5]byte
	rand.Read(b[:])
	return idEncoding.EncodeToString(b[:])
}

func appendCount(t total) []byte { return frame.AppendCount(nil, t.n, t.visitors) }
