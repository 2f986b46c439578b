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

// memBus joins hubs in one process: what one node publishes, every other
// node's hub handles at once.
type memBus struct {
	mu       sync.Mutex
	handlers map[*memBroker]BrokerHandler

	messages atomic.Int64 // Publish calls
	counts   atomic.Int64 // PublishCounts calls
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

func (m *memBroker) Publish(_ context.Context, msg Message) error {
	m.bus.messages.Add(1)
	for _, h := range m.bus.others(m) {
		h.HandleMessage(msg)
	}
	return nil
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
		"Publish":       b.Publish(ctx, Message{Event: "E"}),
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
	bus := newBus()
	a := newHub(t, Config{Node: "a", Broker: bus.join(), CountInterval: interval})
	b := newHub(t, Config{Node: "b", Broker: bus.join(), CountInterval: interval})

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

	// Messages cross nodes; recipients are counted per node.
	res, err := a.Emit(t.Context(), Message{Event: "All", Data: []byte(`1`)})
	if err != nil || res.Recipients != 3 {
		t.Fatalf("Emit on a: got %d, %v; want 3, nil", res.Recipients, err)
	}
	everyone := res.ID
	res, err = b.Emit(t.Context(), Message{Event: "C", Channel: "c", Data: []byte(`2`)})
	if err != nil || res.Recipients != 1 {
		t.Fatalf("Emit to %q on b: got %d, %v; want 1, nil", "c", res.Recipients, err)
	}
	toC := res.ID
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
