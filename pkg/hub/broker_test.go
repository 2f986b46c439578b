package hub

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memBus joins hubs in one process: the counts one node publishes, every
// other node's hub handles at once.
type memBus struct {
	mu       sync.Mutex
	handlers map[*memBroker]BrokerHandler

	counts atomic.Int64 // PublishCounts calls
}

func newBus() *memBus {
	return &memBus{handlers: make(map[*memBroker]BrokerHandler)}
}

// join returns a broker for one more node.
func (b *memBus) join() *memBroker { return &memBroker{bus: b} }

func (b *memBus) others(self *memBroker) []BrokerHandler {
	b.mu.Lock()
	defer b.mu.Unlock()
	var hs []BrokerHandler
	for m, h := range b.handlers {
		if m != self {
			hs = append(hs, h)
		}
	}
	return hs
}

type memBroker struct {
	bus *memBus
}

var _ Broker = (*memBroker)(nil)

// memLog is a Sequencer shared in one process: it numbers messages and
// delivers each, in order, to every hub attached.
type memLog struct {
	mu   sync.Mutex
	hubs []*Hub
	ids  map[string]uint64
	head uint64
}

var _ Sequencer = (*memLog)(nil)

func newMemLog() *memLog { return &memLog{ids: make(map[string]uint64)} }

func (l *memLog) attach(t testing.TB, h *Hub) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := h.ResetLog("shared", l.head); err != nil {
		t.Fatal(err)
	}
	l.hubs = append(l.hubs, h)
}

func (l *memLog) Append(_ context.Context, m Message) (uint64, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if off, ok := l.ids[m.ID]; ok {
		return off, true, nil
	}
	l.head++
	m.Offset = l.head
	l.ids[m.ID] = m.Offset
	for _, h := range l.hubs {
		if err := h.Deliver(m, time.Now()); err != nil {
			return 0, false, err
		}
	}
	return m.Offset, false, nil
}

func (m *memBroker) PublishCounts(_ context.Context, c Counts) error {
	m.bus.counts.Add(1)
	c.Channels = maps.Clone(c.Channels) // as if it had crossed a wire
	for _, h := range m.bus.others(m) {
		h.HandleCounts(c)
	}
	return nil
}

func (m *memBroker) Subscribe(h BrokerHandler) error {
	m.bus.mu.Lock()
	defer m.bus.mu.Unlock()
	m.bus.handlers[m] = h
	return nil
}

func (m *memBroker) Close() error {
	m.bus.mu.Lock()
	defer m.bus.mu.Unlock()
	delete(m.bus.handlers, m)
	return nil
}

func TestLocalBroker(t *testing.T) {
	t.Parallel()
	var b Broker = Local{}
	ctx := t.Context()
	for name, err := range map[string]error{
		"PublishCounts": b.PublishCounts(ctx, Counts{Node: "n", Total: 1}),
		"Subscribe":     b.Subscribe(nil),
		"Close":         b.Close(),
	} {
		if err != nil {
			t.Errorf("%s: got %v; want nil", name, err)
		}
	}
}

func TestCluster(t *testing.T) {
	t.Parallel()
	const interval = 20 * time.Millisecond
	bus, log := newBus(), newMemLog()
	a := newHub(t, Config{Node: "a", Broker: bus.join(), Sequencer: log, CountInterval: interval})
	b := newHub(t, Config{Node: "b", Broker: bus.join(), Sequencer: log, CountInterval: interval})
	log.attach(t, a)
	log.attach(t, b)

	// a: three clients, two in "c"; b: two clients, one in "c".
	join := func(h *Hub, channels ...string) (*Client, *fakeTransport) {
		c, ft := register(t, h)
		for _, ch := range channels {
			if err := c.Subscribe(ch); err != nil {
				t.Fatalf("Subscribe: got %v; want nil", err)
			}
		}
		return c, ft
	}
	_, a1 := join(a, "c")
	_, a2 := join(a, "c")
	a3c, a3 := join(a)
	_, b1 := join(b, "c")
	bOut, b2 := join(b)

	counts := []struct {
		channel string
		want    int64
	}{{"", 5}, {"c", 3}, {"other", 0}}
	for _, h := range []*Hub{a, b} {
		for _, c := range counts {
			waitFor(t, fmt.Sprintf("node %s to count %d in %q", h.Node(), c.want, c.channel), func() bool { return h.Count(c.channel) == c.want })
		}
	}
	for i, ft := range []*fakeTransport{a1, a2, a3, b1, b2} {
		waitFor(t, fmt.Sprintf("browser %d to show 5", i), func() bool { return ft.lastCount() == 5 })
	}

	// Messages cross nodes through the shared log, in one order;
	// recipients are the cluster's audience.
	res, err := a.Emit(t.Context(), Message{Event: "All", Data: []byte(`1`)})
	if err != nil || res.Recipients != 5 || res.Offset != 1 {
		t.Fatalf("Emit on a: got %+v, %v; want 5 recipients at offset 1", res, err)
	}
	everyone := res.ID
	res, err = b.EmitOnce(t.Context(), "key-c", Message{Event: "C", Channel: "c", Data: []byte(`2`)})
	if err != nil || res.Recipients != 3 || res.Offset != 2 {
		t.Fatalf("Emit to %q on b: got %+v, %v; want 3 recipients at offset 2", "c", res, err)
	}
	toC := res.ID
	if again, err := a.EmitOnce(t.Context(), "key-c", Message{Event: "C", Channel: "c"}); err != nil || !again.Duplicate || again.Offset != 2 {
		t.Errorf("the same key on the other node: got %+v, %v; want a duplicate at 2", again, err)
	}
	tests := []struct {
		name string
		ft   *fakeTransport
		want []string
	}{
		{name: "a1 in c", ft: a1, want: []string{everyone, toC}},
		{name: "a2 in c", ft: a2, want: []string{everyone, toC}},
		{name: "a3", ft: a3, want: []string{everyone}},
		{name: "b1 in c", ft: b1, want: []string{everyone, toC}},
		{name: "b2", ft: b2, want: []string{everyone}},
	}
	for _, tt := range tests {
		waitFor(t, tt.name+" to get its messages", func() bool { return len(tt.ft.messages()) >= len(tt.want) })
		if got := tt.ft.messageIDs(); !slices.Equal(got, tt.want) {
			t.Errorf("%s: got messages %v; want %v", tt.name, got, tt.want)
		}
	}

	// Counts settle without the nodes echoing each other's counts.
	settled := bus.counts.Load()
	time.Sleep(10 * interval)
	if got := bus.counts.Load(); got != settled {
		t.Errorf("PublishCounts calls while idle: got %d more; want none", got-settled)
	}

	// A change of a channel alone reaches the other node.
	if err := a3c.Subscribe("c"); err != nil {
		t.Fatalf("Subscribe: got %v; want nil", err)
	}
	waitFor(t, "b to count 4 in \"c\"", func() bool { return b.Count("c") == 4 })
	a3c.Unsubscribe("c")
	waitFor(t, "b to count 3 in \"c\"", func() bool { return b.Count("c") == 3 })

	// A change on b reaches a's watchers and browsers.
	var mu sync.Mutex
	var seen []int64
	ctx, cancel := context.WithCancel(t.Context())
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- a.Watch(ctx, "", func(n int64) error {
			mu.Lock()
			seen = append(seen, n)
			mu.Unlock()
			return nil
		})
	}()
	lastSeen := func() int64 {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			return -1
		}
		return seen[len(seen)-1]
	}
	waitFor(t, "a's watcher to see 5", func() bool { return lastSeen() == 5 })
	bOut.Close()
	waitFor(t, "a's watcher to see 4", func() bool { return lastSeen() == 4 })
	waitFor(t, "a's browser to show 4", func() bool { return a1.lastCount() == 4 })
	cancel()
	<-watchDone

	// A node that closes leaves the other's counts.
	if err := b.Close(); err != nil {
		t.Fatalf("Close b: got %v; want nil", err)
	}
	if got := a.Count(""); got != 3 {
		t.Errorf("a's Count after b closed: got %d; want 3", got)
	}
	if got := a.Count("c"); got != 2 {
		t.Errorf("a's Count(%q) after b closed: got %d; want 2", "c", got)
	}
	waitFor(t, "a's browser to show 3", func() bool { return a1.lastCount() == 3 })
}

func TestHandleCounts(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{Node: "self"})
	c, _ := register(t, h)
	if err := c.Subscribe("x"); err != nil {
		t.Fatalf("Subscribe: got %v; want nil", err)
	}
	steps := []struct {
		name   string
		counts Counts
		want   map[string]int64
	}{
		{name: "first node", counts: Counts{Node: "p", Total: 4, Channels: map[string]int64{"x": 2, "y": 1}},
			want: map[string]int64{"": 5, "x": 3, "y": 1}},
		{name: "second node", counts: Counts{Node: "q", Total: 10, Channels: map[string]int64{"y": 5}},
			want: map[string]int64{"": 15, "x": 3, "y": 6}},
		{name: "first node changes", counts: Counts{Node: "p", Total: 1, Channels: map[string]int64{"x": 1}},
			want: map[string]int64{"": 12, "x": 2, "y": 5}},
		{name: "own node ignored", counts: Counts{Node: "self", Total: 100, Channels: map[string]int64{"x": 100}},
			want: map[string]int64{"": 12, "x": 2, "y": 5}},
		{name: "second node empties", counts: Counts{Node: "q"},
			want: map[string]int64{"": 2, "x": 2, "y": 0}},
	}
	for _, s := range steps {
		h.HandleCounts(s.counts)
		for ch, want := range s.want {
			if got := h.Count(ch); got != want {
				t.Errorf("%s: Count(%q): got %d; want %d", s.name, ch, got, want)
			}
		}
	}
	h.remoteMu.RLock()
	nodes := slices.Sorted(maps.Keys(h.remote))
	h.remoteMu.RUnlock()
	if want := []string{"p"}; !slices.Equal(nodes, want) {
		t.Errorf("remote nodes: got %v; want %v", nodes, want)
	}
}

func TestRemoteCounts(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	h.HandleCounts(Counts{Node: "b", Total: 2, Channels: map[string]int64{"q": 1}})
	h.HandleCounts(Counts{Node: "a", Total: 1})
	got := h.RemoteCounts()
	if len(got) != 2 || got[0].Node != "a" || got[1].Node != "b" || got[1].Channels["q"] != 1 {
		t.Fatalf("RemoteCounts: got %+v; want a then b, with b's channel", got)
	}
	got[1].Channels["q"] = 99
	if h.RemoteCounts()[1].Channels["q"] != 1 {
		t.Error("RemoteCounts shares its maps with the hub")
	}
	h.HandleCounts(Counts{Node: "a"})
	if got := h.RemoteCounts(); len(got) != 1 {
		t.Errorf("after a left: got %+v; want b alone", got)
	}
}

// TestDrainPublishesCounts: a node that drains tells the others of each
// client it closes as it closes it, so that a client that has moved to
// another node is not counted by both while the drain goes on.
func TestDrainPublishesCounts(t *testing.T) {
	t.Parallel()
	bus := newBus()
	a := newHub(t, Config{Node: "a", Broker: bus.join()})
	b := newHub(t, Config{Node: "b", Broker: bus.join()})
	const n = 20
	for range n {
		register(t, a)
	}
	waitFor(t, "b to count a's clients", func() bool { return b.Count("") == n })

	const spread = 400 * time.Millisecond
	drained := make(chan error, 1)
	start := time.Now()
	go func() { drained <- a.Drain(t.Context(), ReasonShutdown, spread) }()
	// Halfway through the drain, about half of a's clients are gone, on
	// a and at b alike.
	time.Sleep(spread / 2)
	if got := b.Count(""); got > n*3/4 {
		t.Errorf("b's count %v into a's drain over %v: got %d; want it to follow a's closes (a holds %d)", time.Since(start).Round(time.Millisecond), spread, got, a.Count(""))
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain: got %v; want nil", err)
	}
	waitFor(t, "b to count none of a's clients once a drained", func() bool { return b.Count("") == 0 })
}
