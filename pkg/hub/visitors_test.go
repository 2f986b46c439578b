package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// visit registers a fake transport as visitor, joined to channels.
func visit(t testing.TB, h *Hub, visitor string, channels ...string) (*Client, *fakeTransport) {
	t.Helper()
	ft := newFake()
	c, err := h.Connect(ft, Start{Visitor: visitor, Channels: channels})
	if err != nil {
		t.Fatalf("Connect: got %v; want nil", err)
	}
	return c, ft
}

func wantOnline(t testing.TB, h *Hub, channel string, want Online) {
	t.Helper()
	waitFor(t, fmt.Sprintf("node %s to count %+v in %q (has %+v)", h.Node(), want, channel, h.Online(channel)),
		func() bool { return h.Online(channel) == want })
}

func TestVisitorsCountPeopleNotTabs(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{CountInterval: 10 * time.Millisecond})
	a1, f := visit(t, h, "a", "q")
	a2, _ := visit(t, h, "a")
	b, _ := visit(t, h, "b", "q")
	solo1, _ := visit(t, h, "", "q")
	solo2, _ := visit(t, h, "")

	wantOnline(t, h, "", Online{Connections: 5, Visitors: 4})
	wantOnline(t, h, "q", Online{Connections: 3, Visitors: 3})
	waitFor(t, "a count frame of 5 connections, 4 visitors", func() bool { return f.lastOnline() == Online{5, 4} })

	// A visitor leaves with their last connection, not before.
	a1.Close()
	wantOnline(t, h, "", Online{Connections: 4, Visitors: 4})
	wantOnline(t, h, "q", Online{Connections: 2, Visitors: 2})
	a2.Close()
	wantOnline(t, h, "", Online{Connections: 3, Visitors: 3})

	// A second tab in the channel, then unsubscribing one of them.
	b2, _ := visit(t, h, "b", "q")
	wantOnline(t, h, "q", Online{Connections: 3, Visitors: 2})
	b.Unsubscribe("q")
	wantOnline(t, h, "q", Online{Connections: 2, Visitors: 2})
	b2.Unsubscribe("q")
	wantOnline(t, h, "q", Online{Connections: 1, Visitors: 1})
	solo1.Close()
	solo2.Close()
	b.Close()
	b2.Close()
	wantOnline(t, h, "", Online{})
	wantOnline(t, h, "q", Online{})

	h.totalMu.Lock()
	left := len(h.everyone.visitors)
	h.totalMu.Unlock()
	s := h.channelShard("q")
	s.mu.RLock()
	_, kept := s.presence["q"]
	s.mu.RUnlock()
	if left != 0 || kept {
		t.Errorf("state left behind: %d visitors, channel presence kept %v; want none", left, kept)
	}
}

func TestWatchOnline(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var mu sync.Mutex
	var seen []Online
	done := make(chan error, 1)
	go func() {
		done <- h.WatchOnline(ctx, "", func(o Online) error {
			mu.Lock()
			seen = append(seen, o)
			mu.Unlock()
			return nil
		})
	}()
	last := func() Online {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			return Online{-1, -1}
		}
		return seen[len(seen)-1]
	}
	waitFor(t, "the first count", func() bool { return last() == Online{} })
	visit(t, h, "a")
	waitFor(t, "1 connection, 1 visitor", func() bool { return last() == Online{1, 1} })
	// A second tab changes the connections only; a third visitor both.
	visit(t, h, "a")
	waitFor(t, "2 connections, 1 visitor", func() bool { return last() == Online{2, 1} })
	visit(t, h, "b")
	waitFor(t, "3 connections, 2 visitors", func() bool { return last() == Online{3, 2} })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchOnline: got %v; want context.Canceled", err)
	}
}

func TestPresencePages(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	for _, v := range []string{"e", "b", "d", "a", "c", "b", "b"} {
		visit(t, h, v, "q")
	}
	visit(t, h, "") // counted, never listed
	visit(t, h, "z")

	var all []Visit
	after := ""
	for pages := 0; ; pages++ {
		page, more := h.Presence("q", after, 2)
		if len(page) > 2 {
			t.Fatalf("page %d: %d visitors; want at most 2", pages, len(page))
		}
		all = append(all, page...)
		if !more {
			break
		}
		after = page[len(page)-1].Visitor
	}
	want := []Visit{{"a", 1}, {"b", 3}, {"c", 1}, {"d", 1}, {"e", 1}}
	if !slices.Equal(all, want) {
		t.Errorf("presence of q: got %v; want %v", all, want)
	}
	if page, more := h.Presence("", "d", 10); !slices.Equal(page, []Visit{{"e", 1}, {"z", 1}}) || more {
		t.Errorf("presence of everyone after d: got %v, %v; want [e z], false", page, more)
	}
	if page, more := h.Presence("nobody", "", 10); len(page) != 0 || more {
		t.Errorf("presence of an empty channel: got %v, %v; want none", page, more)
	}
}

// TestVisitorsAcrossNodes: a visitor with tabs on two nodes counts once on
// both, and stays counted once when one node goes.
func TestVisitorsAcrossNodes(t *testing.T) {
	t.Parallel()
	bus := newBus()
	a := newHub(t, Config{Node: "a", Broker: bus.join(), CountInterval: 10 * time.Millisecond})
	b := newHub(t, Config{Node: "b", Broker: bus.join(), CountInterval: 10 * time.Millisecond})

	_, fa := visit(t, a, "alice", "q")
	visit(t, a, "bob")
	aliceB, _ := visit(t, b, "alice", "q")
	visit(t, b, "alice")
	visit(t, b, "", "q")
	for _, h := range []*Hub{a, b} {
		wantOnline(t, h, "", Online{Connections: 5, Visitors: 3})
		wantOnline(t, h, "q", Online{Connections: 3, Visitors: 2})
	}
	waitFor(t, "a's browser to show 3 visitors", func() bool { return fa.lastOnline() == Online{5, 3} })
	if page, _ := a.Presence("", "", 10); !slices.Equal(page, []Visit{{"alice", 3}, {"bob", 1}}) {
		t.Errorf("presence on a: got %v; want alice with 3 connections, bob with 1", page)
	}

	aliceB.Close()
	for _, h := range []*Hub{a, b} {
		wantOnline(t, h, "", Online{Connections: 4, Visitors: 3})
		wantOnline(t, h, "q", Online{Connections: 2, Visitors: 2})
	}

	// b vanishes: a drops its counts, and alice stays, once.
	a.HandleCounts(Counts{Node: "b"})
	wantOnline(t, a, "", Online{Connections: 2, Visitors: 2})
	wantOnline(t, a, "q", Online{Connections: 1, Visitors: 1})
}

func TestHandleCountsVisitors(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{Node: "self"})
	visit(t, h, "a", "x")

	steps := []struct {
		name   string
		counts Counts
		want   map[string]Online
	}{
		{name: "whole set", counts: Counts{Node: "p", Total: 3, Channels: map[string]int64{"x": 2}, Solo: map[string]int64{"": 1, "x": 1},
			VisitorsFull: true, Visitors: []VisitorCount{{"", "a", 1}, {"", "b", 1}, {"x", "a", 1}}},
			want: map[string]Online{"": {4, 3}, "x": {3, 2}}},
		{name: "changes", counts: Counts{Node: "p", Total: 3, Channels: map[string]int64{"x": 2}, Solo: map[string]int64{"": 1, "x": 1},
			Visitors: []VisitorCount{{"", "b", 0}, {"", "c", 1}, {"x", "a", 0}, {"x", "c", 1}}},
			want: map[string]Online{"": {4, 3}, "x": {3, 3}}},
		{name: "a whole set replaces", counts: Counts{Node: "p", Total: 1, Channels: map[string]int64{}, VisitorsFull: true,
			Visitors: []VisitorCount{{"", "a", 1}}},
			want: map[string]Online{"": {2, 1}, "x": {1, 1}}},
		{name: "another node", counts: Counts{Node: "q", Total: 2, Channels: map[string]int64{"x": 2},
			Visitors: []VisitorCount{{"", "a", 2}, {"x", "a", 1}, {"x", "d", 1}}},
			want: map[string]Online{"": {4, 1}, "x": {3, 2}}},
		{name: "first node leaves", counts: Counts{Node: "p"},
			want: map[string]Online{"": {3, 1}, "x": {3, 2}}},
		{name: "second node leaves", counts: Counts{Node: "q"},
			want: map[string]Online{"": {1, 1}, "x": {1, 1}}},
	}
	for _, s := range steps {
		h.HandleCounts(s.counts)
		for ch, want := range s.want {
			if got := h.Online(ch); got != want {
				t.Errorf("%s: Online(%q): got %+v; want %+v", s.name, ch, got, want)
			}
		}
	}
	if page, _ := h.Presence("", "", 10); !slices.Equal(page, []Visit{{"a", 1}}) {
		t.Errorf("presence at the end: got %v; want a alone, with its one connection", page)
	}
}

// TestOnLocalCountsVisitors: a peer gets the whole set at once, then only
// what changed.
func TestOnLocalCountsVisitors(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{Node: "self"})
	visit(t, h, "a", "x")
	visit(t, h, "")
	if h.tracking.Load() {
		t.Fatal("a single node with nobody listening tracks visitor changes; want not")
	}
	var mu sync.Mutex
	var got []Counts
	stop := h.OnLocalCounts(func(c Counts) {
		mu.Lock()
		got = append(got, c)
		mu.Unlock()
	})
	// The peer's own view, built only from what it was sent.
	peer := newHub(t, Config{Node: "peer"})
	applied, wholeAfterFirst := 0, 0
	apply := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range got {
			if applied++; applied > 1 && c.VisitorsFull {
				wholeAfterFirst++
			}
			peer.HandleCounts(c)
		}
		got = nil
	}
	mu.Lock()
	first := got[0]
	mu.Unlock()
	if !first.VisitorsFull || len(first.Visitors) != 2 || first.Solo[""] != 1 {
		t.Fatalf("first counts: got %+v; want the whole set: a overall and in x, one solo", first)
	}
	apply()
	wantOnline(t, peer, "", Online{2, 2})

	b, _ := visit(t, h, "b", "x")
	visit(t, h, "a")
	waitFor(t, "the changes", func() bool {
		apply()
		return peer.Online("") == Online{4, 3} && peer.Online("x") == Online{2, 2}
	})
	b.Close()
	waitFor(t, "b to leave", func() bool {
		apply()
		return peer.Online("") == Online{3, 2} && peer.Online("x") == Online{1, 1}
	})
	apply()
	if wholeAfterFirst > 0 {
		t.Errorf("%d of the %d counts after the first were a whole set; want changes only", wholeAfterFirst, applied-1)
	}
	stop()
	if h.tracking.Load() {
		t.Error("tracking visitor changes after the last listener stopped; want not")
	}
}

// TestVisitorConnectStorm: 10,000 connections of 2,000 visitors, opened
// and half closed from many goroutines at once, end on exact counts.
func TestVisitorConnectStorm(t *testing.T) {
	t.Parallel()
	bus := newBus()
	a := newHub(t, Config{Node: "a", Broker: bus.join()})
	b := newHub(t, Config{Node: "b", Broker: bus.join()})
	const conns, visitors, workers = 10_000, 2_000, 8
	clients := make([]*Client, conns)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < conns; i += workers {
				h := a
				if i%3 == 0 {
					h = b
				}
				c, err := h.Connect(newFake(), Start{Visitor: fmt.Sprint("v", i%visitors), Channels: []string{"q"}})
				if err != nil {
					t.Errorf("Connect: got %v; want nil", err)
					return
				}
				clients[i] = c
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, h := range []*Hub{a, b} {
		wantOnline(t, h, "", Online{conns, visitors})
		wantOnline(t, h, "q", Online{conns, visitors})
	}
	// Close every connection of the odd visitors.
	for w := range workers {
		wg.Go(func() {
			for i := w; i < conns; i += workers {
				if i%visitors%2 == 1 {
					clients[i].Close()
				}
			}
		})
	}
	wg.Wait()
	for _, h := range []*Hub{a, b} {
		wantOnline(t, h, "", Online{conns / 2, visitors / 2})
		wantOnline(t, h, "q", Online{conns / 2, visitors / 2})
	}
}

// BenchmarkVisitorMemory measures the hub's live heap per connection for
// 10,000 connections, without visitor keys and from 2,000 visitors, each
// subscribed to one channel: go test -run '^$' -bench VisitorMemory ./pkg/hub/
func BenchmarkVisitorMemory(b *testing.B) {
	for _, visitors := range []int{0, 2000} {
		b.Run(fmt.Sprint("visitors=", visitors), func(b *testing.B) {
			const conns = 10_000
			keys := make([]string, conns)
			for i := range keys {
				if visitors > 0 {
					keys[i] = fmt.Sprintf("a:%022d", i%visitors) // as long as client.js's ids
				}
			}
			var perConn float64
			for range b.N {
				h, err := New(Config{Logger: discardLogger()})
				if err != nil {
					b.Fatal(err)
				}
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				clients := make([]*Client, conns)
				for i := range clients {
					if clients[i], err = h.Connect(sink{}, Start{Visitor: keys[i], Channels: []string{"q"}}); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perConn = float64(after.HeapAlloc-before.HeapAlloc) / conns
				for _, c := range clients {
					c.Close()
				}
				h.Close()
			}
			b.ReportMetric(perConn, "B/conn")
		})
	}
}

// sink is a Transport that takes every frame at once.
type sink struct{}

func (sink) Write([][]byte) (bool, error) { return false, nil }
func (sink) Flush() error                 { return nil }
func (sink) Abort()                       {}
func (sink) Close(Reason)                 {}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// BenchmarkPresence lists the first page of 100 among 10,000 visitors.
func BenchmarkPresence(b *testing.B) {
	h, err := New(Config{Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	for i := range 10_000 {
		if _, err := h.Connect(sink{}, Start{Visitor: fmt.Sprintf("a:%022d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		if page, _ := h.Presence("", "", 100); len(page) != 100 {
			b.Fatalf("page of %d; want 100", len(page))
		}
	}
}
