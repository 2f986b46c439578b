package hub

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/frame"
)

func TestRegisterSendsCountAtOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		existing int
	}{
		{name: "first client", existing: 0},
		{name: "second client", existing: 1},
		{name: "after five", existing: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Count frames from the count loop come at most once an hour, so
			// the new client's first count can only come from Register.
			h := newHub(t, Config{CountInterval: time.Hour})
			for range tt.existing {
				register(t, h)
			}
			_, ft := register(t, h)
			waitFor(t, "the first count frame", func() bool { return len(ft.counts()) > 0 })
			if got, want := ft.counts()[0], int64(tt.existing+1); got != want {
				t.Errorf("first count: got %d; want %d", got, want)
			}
			if got, want := h.Count(""), int64(tt.existing+1); got != want {
				t.Errorf("Count: got %d; want %d", got, want)
			}
		})
	}
}

// TestCountConcurrent registers 1,000 clients at once while a random part
// of them are closed by their transport, kicked by the hub, or both at once.
func TestCountConcurrent(t *testing.T) {
	t.Parallel()
	const n = 1000
	type fate int
	const (
		keep fate = iota
		selfClose
		kick
		both
	)
	h := newHub(t, Config{CountInterval: 5 * time.Millisecond})
	fates := make([]fate, n)
	fts := make([]*fakeTransport, n)
	for i := range fates {
		fates[i] = fate(rand.IntN(4))
		fts[i] = newFake()
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := h.Register(fts[i])
			if err != nil {
				t.Errorf("Register: got %v; want nil", err)
				return
			}
			switch fates[i] {
			case selfClose:
				c.Close()
			case kick:
				c.kick(ReasonHandBack)
			case both:
				var both sync.WaitGroup
				both.Go(c.Close)
				both.Go(func() { c.kick(ReasonHandBack) })
				both.Wait()
			}
		})
	}
	wg.Wait()
	want := int64(0)
	for _, f := range fates {
		if f == keep {
			want++
		}
	}
	if got := h.Count(""); got != want {
		t.Fatalf("Count after the storm: got %d; want %d", got, want)
	}
	// The clients still open eventually all hold the true count.
	for i, ft := range fts {
		if fates[i] == keep {
			waitFor(t, fmt.Sprintf("client %d to hold count %d", i, want), func() bool { return ft.lastCount() == want })
		}
	}
	if err := h.Close(); err != nil {
		t.Fatalf("Close: got %v; want nil", err)
	}
	if got := h.Count(""); got != 0 {
		t.Errorf("Count after Close: got %d; want 0", got)
	}
	// Close waited for every writer: no Close call is still to come.
	for i, ft := range fts {
		ft.check(t)
		got := ft.closeReasons()
		switch fates[i] {
		case keep:
			if want := []Reason{ReasonShutdown}; !slices.Equal(got, want) {
				t.Errorf("client %d kept open: got Close calls %v; want %v", i, got, want)
			}
		case selfClose:
			if len(got) != 0 {
				t.Errorf("client %d closed by its transport: got Close calls %v; want none", i, got)
			}
		case kick:
			if want := []Reason{ReasonHandBack}; !slices.Equal(got, want) {
				t.Errorf("client %d kicked: got Close calls %v; want %v", i, got, want)
			}
		case both:
			if len(got) > 1 || len(got) == 1 && got[0] != ReasonHandBack {
				t.Errorf("client %d closed and kicked: got Close calls %v; want none or [%v]", i, got, ReasonHandBack)
			}
		}
	}
}

func TestChannelCountsConcurrent(t *testing.T) {
	t.Parallel()
	const clients, ops = 100, 60
	channels := []string{"a", "b", "c", "d", "e"}
	h := newHub(t, Config{})
	members := make([]map[string]bool, clients) // each client's final channels
	var wg sync.WaitGroup
	for i := range clients {
		c, _ := register(t, h)
		members[i] = make(map[string]bool)
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(i), 1))
			for range ops {
				ch := channels[r.IntN(len(channels))]
				if r.IntN(2) == 0 {
					if err := c.Subscribe(ch); err != nil {
						t.Errorf("Subscribe(%q): got %v; want nil", ch, err)
					}
					members[i][ch] = true
				} else {
					c.Unsubscribe(ch)
					delete(members[i], ch)
				}
			}
		})
	}
	wg.Wait()
	for _, ch := range channels {
		want := int64(0)
		for _, m := range members {
			if m[ch] {
				want++
			}
		}
		if got := h.Count(ch); got != want {
			t.Errorf("Count(%q): got %d; want %d", ch, got, want)
		}
	}
	if got := h.Count("nobody"); got != 0 {
		t.Errorf("Count(%q): got %d; want 0", "nobody", got)
	}
	if got := h.Count(""); got != clients {
		t.Errorf("Count(\"\"): got %d; want %d", got, clients)
	}
}

func TestEmit(t *testing.T) {
	t.Parallel()
	// Clients 0, 2 and 4 are in "even", 1 and 3 in "odd", 3 also in
	// "three", and 5 in none.
	subs := [][]string{{"even"}, {"odd"}, {"even"}, {"odd", "three"}, {"even"}, nil}
	type emit struct {
		channel string
		want    []int // recipients
	}
	everyone := []int{0, 1, 2, 3, 4, 5}
	tests := []struct {
		name  string
		emits []emit
	}{
		{name: "everyone", emits: []emit{{"", everyone}}},
		{name: "one channel", emits: []emit{{"even", []int{0, 2, 4}}}},
		{name: "nobody subscribed", emits: []emit{{"empty", nil}}},
		{name: "mixed", emits: []emit{
			{"", everyone}, {"odd", []int{1, 3}}, {"three", []int{3}}, {"even", []int{0, 2, 4}},
			{"", everyone}, {"empty", nil}, {"odd", []int{1, 3}}, {"", everyone},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHub(t, Config{})
			fts := make([]*fakeTransport, len(subs))
			for i, chans := range subs {
				var c *Client
				c, fts[i] = register(t, h)
				for _, ch := range chans {
					if err := c.Subscribe(ch); err != nil {
						t.Fatalf("Subscribe(%q): got %v; want nil", ch, err)
					}
				}
			}
			want := make([][]wireFrame, len(subs))
			delivered := 0
			for i, e := range tt.emits {
				data := fmt.Sprintf(`{"i":%d}`, i)
				m := Message{Event: "E", Channel: e.channel, Data: []byte(data)}
				res, err := h.Emit(t.Context(), m)
				id, n := res.ID, res.Recipients
				if err != nil {
					t.Fatalf("Emit: got %v; want nil", err)
				}
				if n != len(e.want) {
					t.Errorf("Emit to %q: got %d recipients; want %d", e.channel, n, len(e.want))
				}
				if !strings.HasPrefix(id, h.Node()+"-") {
					t.Errorf("id: got %q; want the prefix %q", id, h.Node()+"-")
				}
				for _, r := range e.want {
					want[r] = append(want[r], wireFrame{Type: "message", ID: id, Event: "E", Channel: e.channel, Data: []byte(data)})
				}
				delivered += len(e.want)
			}
			for i, ft := range fts {
				waitFor(t, fmt.Sprintf("client %d to get %d messages", i, len(want[i])), func() bool {
					return len(ft.messages()) >= len(want[i])
				})
			}
			// Close waits for the writers, so nothing more can arrive.
			if err := h.Close(); err != nil {
				t.Fatalf("Close: got %v; want nil", err)
			}
			for i, ft := range fts {
				ft.check(t)
				got := ft.messages()
				if len(got) != len(want[i]) {
					t.Errorf("client %d: got %d messages %v; want %d", i, len(got), ft.messageIDs(), len(want[i]))
					continue
				}
				for j := range got {
					g, w := got[j], want[i][j]
					if g.ID != w.ID || g.Event != w.Event || g.Channel != w.Channel || string(g.Data) != string(w.Data) {
						t.Errorf("client %d message %d: got %+v; want %+v", i, j, g, w)
					}
				}
			}
			st := h.Stats()
			if got := st.Emitted.Load(); got != int64(len(tt.emits)) {
				t.Errorf("Stats.Emitted: got %d; want %d", got, len(tt.emits))
			}
			if got := st.Delivered.Load(); got != int64(delivered) {
				t.Errorf("Stats.Delivered: got %d; want %d", got, delivered)
			}
		})
	}
}

// TestEmitConcurrentOrder emits from several goroutines at once: every
// client sees the same order, and each emitter's messages in its order.
func TestEmitConcurrentOrder(t *testing.T) {
	t.Parallel()
	const clients, emitters, each = 8, 4, 50
	h := newHub(t, Config{})
	fts := make([]*fakeTransport, clients)
	for i := range fts {
		_, fts[i] = register(t, h)
	}
	ids := make([][]string, emitters) // per emitter, in emit order
	var wg sync.WaitGroup
	for e := range emitters {
		wg.Go(func() {
			for range each {
				res, err := h.Emit(context.Background(), Message{Event: "E"})
				id, n := res.ID, res.Recipients
				if err != nil || n != clients {
					t.Errorf("Emit: got %d, %v; want %d, nil", n, err, clients)
				}
				ids[e] = append(ids[e], id)
			}
		})
	}
	wg.Wait()
	const total = emitters * each
	for i, ft := range fts {
		waitFor(t, fmt.Sprintf("client %d to get %d messages", i, total), func() bool { return len(ft.messages()) >= total })
	}
	first := fts[0].messageIDs()
	for i, ft := range fts {
		got := ft.messageIDs()
		if len(got) != total {
			t.Fatalf("client %d: got %d messages; want %d", i, len(got), total)
		}
		if !slices.Equal(got, first) {
			t.Errorf("client %d order differs from client 0:\ngot  %v\nwant %v", i, got, first)
		}
		for e, want := range ids {
			var mine []string
			for _, id := range got {
				if slices.Contains(want, id) {
					mine = append(mine, id)
				}
			}
			if !slices.Equal(mine, want) {
				t.Errorf("client %d, emitter %d: got order %v; want %v", i, e, mine, want)
			}
		}
	}
}

// TestEmitManyClients fans out to more clients than a pool writer takes
// at once, some of whose transports keep frames now and then to flush them
// late: every client gets every message once, in the order of the emits.
func TestEmitManyClients(t *testing.T) {
	t.Parallel()
	const clients, emits = 10 * writerChunk, 200
	h := newHub(t, Config{})
	fts := make([]*fakeTransport, clients)
	for i := range fts {
		fts[i] = newFake()
		if i%3 == 0 {
			fts[i].keepEvery = 2 + i%5
		}
		if _, err := h.Register(fts[i]); err != nil {
			t.Fatalf("Register: %v", err)
		}
	}
	var want []string
	for i := range emits {
		res, err := h.Emit(t.Context(), Message{Event: "E"})
		id, n := res.ID, res.Recipients
		if err != nil || n != clients {
			t.Fatalf("Emit %d: got %d, %v; want %d, nil", i, n, err, clients)
		}
		want = append(want, id)
	}
	for i, ft := range fts {
		waitFor(t, fmt.Sprintf("client %d to get %d messages", i, emits), func() bool { return len(ft.messages()) >= emits })
		if got := ft.messageIDs(); !slices.Equal(got, want) {
			t.Errorf("client %d (keepEvery %d): got %d messages %v; want %v", i, ft.keepEvery, len(got), got, want)
		}
		ft.check(t)
	}
	if got := h.Stats().SlowDisconnects.Load(); got != 0 {
		t.Errorf("SlowDisconnects: got %d; want 0", got)
	}
}

// TestSlowClient stalls one client's transport: the others get every
// message at once, and the stalled one, whose queue stays within bounds, is
// dropped as slow when it overflows.
func TestSlowClient(t *testing.T) {
	t.Parallel()
	const event = "E"
	data := []byte(`{"pad":"` + strings.Repeat("x", 100) + `"}`)
	// Node names, IDs and offsets of one digit keep every frame one length.
	frameLen := len(frame.AppendMessage(nil, "n-1", 1, event, "", data))
	tests := []struct {
		name        string
		queueFrames int
		queueBytes  int
		overflowAt  int // the emit that overflows, from 1
	}{
		{name: "frame bound", queueFrames: 4, queueBytes: 1 << 20, overflowAt: 5},
		{name: "byte bound", queueFrames: 1000, queueBytes: 3*frameLen + frameLen/2, overflowAt: 4},
		{name: "single frame", queueFrames: 1, queueBytes: 1 << 20, overflowAt: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The stalled write never times out: it must be canceled when
			// the client is dropped.
			h := newHub(t, Config{Node: "n", QueueFrames: tt.queueFrames, QueueBytes: tt.queueBytes, WriteTimeout: time.Hour})
			fast, fastT := register(t, h)
			slowT := newFake()
			slowT.block = true
			slow, err := h.Register(slowT)
			if err != nil {
				t.Fatalf("Register: got %v; want nil", err)
			}
			_ = fast
			select {
			case <-slowT.stalled: // the writer is stuck writing the count
			case <-time.After(waitTimeout):
				t.Fatal("timed out waiting for the stalled Flush")
			}
			for i := 1; i <= tt.overflowAt; i++ {
				res, err := h.Emit(t.Context(), Message{Event: event, Data: data})
				n := res.Recipients
				if err != nil {
					t.Fatalf("Emit %d: got %v; want nil", i, err)
				}
				// The fast client gets each message without waiting on the
				// stalled one.
				waitFor(t, fmt.Sprintf("the fast client to get message %d", i), func() bool { return len(fastT.messages()) == i })
				frames, bytes := slow.queueLen()
				if frames > tt.queueFrames || bytes > tt.queueBytes {
					t.Fatalf("after emit %d the queue holds %d frames, %d bytes; want at most %d, %d", i, frames, bytes, tt.queueFrames, tt.queueBytes)
				}
				if i < tt.overflowAt {
					if n != 2 {
						t.Errorf("Emit %d: got %d recipients; want 2", i, n)
					}
					if got := h.Count(""); got != 2 {
						t.Errorf("Count after emit %d: got %d; want 2", i, got)
					}
					continue
				}
				// The overflowing emit drops the client at once.
				if n != 1 {
					t.Errorf("overflowing Emit: got %d recipients; want 1", n)
				}
				if got := h.Count(""); got != 1 {
					t.Errorf("Count right after the overflow: got %d; want 1", got)
				}
				if frames != 0 || bytes != 0 {
					t.Errorf("queue of the dropped client: got %d frames, %d bytes; want 0, 0", frames, bytes)
				}
			}
			waitFor(t, "the slow client's transport to be closed", func() bool { return len(slowT.closeReasons()) > 0 })
			if err := h.Close(); err != nil {
				t.Fatalf("Close: got %v; want nil", err)
			}
			if got, want := slowT.closeReasons(), []Reason{ReasonSlow}; !slices.Equal(got, want) {
				t.Errorf("slow client Close calls: got %v; want %v", got, want)
			}
			if got, want := fastT.closeReasons(), []Reason{ReasonShutdown}; !slices.Equal(got, want) {
				t.Errorf("fast client Close calls: got %v; want %v", got, want)
			}
			if got := len(slowT.messages()); got != 0 {
				t.Errorf("messages written to the stalled client: got %d; want 0", got)
			}
			if got := h.Stats().SlowDisconnects.Load(); got != 1 {
				t.Errorf("Stats.SlowDisconnects: got %d; want 1", got)
			}
			if got := h.Stats().WriteFailures.Load(); got != 0 {
				t.Errorf("Stats.WriteFailures: got %d; want 0", got)
			}
			if got := h.Stats().DroppedOverflow.Load(); got != int64(tt.overflowAt) {
				t.Errorf("Stats.DroppedOverflow: got %d; want %d", got, tt.overflowAt)
			}
			if err := slow.Subscribe("a"); !errors.Is(err, ErrClosed) {
				t.Errorf("Subscribe on the dropped client: got %v; want %v", err, ErrClosed)
			}
			slowT.check(t)
			fastT.check(t)
		})
	}
}

func TestWriteFailure(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	_, okT := register(t, h)
	bad, badT := register(t, h)
	if err := bad.Subscribe("c"); err != nil {
		t.Fatalf("Subscribe: got %v; want nil", err)
	}
	badT.mu.Lock()
	badT.fail = errWrite
	badT.mu.Unlock()
	if _, err := h.Emit(context.Background(), Message{Channel: "c", Event: "E"}); err != nil {
		t.Fatalf("Emit: got %v; want nil", err)
	}
	waitFor(t, "the failing client to be closed", func() bool { return len(badT.closeReasons()) > 0 })
	if got := h.Count(""); got != 1 {
		t.Errorf("Count: got %d; want 1", got)
	}
	if got := h.Count("c"); got != 0 {
		t.Errorf("Count(%q): got %d; want 0", "c", got)
	}
	if got := h.Stats().WriteFailures.Load(); got != 1 {
		t.Errorf("Stats.WriteFailures: got %d; want 1", got)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("Close: got %v; want nil", err)
	}
	if got, want := badT.closeReasons(), []Reason{ReasonSlow}; !slices.Equal(got, want) {
		t.Errorf("Close calls: got %v; want %v", got, want)
	}
	badT.check(t)
	okT.check(t)
}

// TestCloseStopsStalledWrite closes a client from its transport while its
// writer is stuck: the write is canceled, the writer ends (TestMain checks
// for leaks) and the hub does not call Transport.Close.
func TestCloseStopsStalledWrite(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{WriteTimeout: time.Hour})
	ft := newFake()
	ft.block = true
	c, err := h.Register(ft)
	if err != nil {
		t.Fatalf("Register: got %v; want nil", err)
	}
	<-ft.stalled
	c.Close()
	select {
	case <-c.done:
	case <-time.After(waitTimeout):
		t.Fatal("timed out waiting for the writer to end")
	}
	if got := h.Count(""); got != 0 {
		t.Errorf("Count: got %d; want 0", got)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("Close: got %v; want nil", err)
	}
	if got := ft.closeReasons(); len(got) != 0 {
		t.Errorf("Close calls: got %v; want none", got)
	}
}

// TestCountCoalesced connects 2,000 clients in a burst: each client gets
// far fewer count frames than there were changes, and ends with the true
// count.
func TestCountCoalesced(t *testing.T) {
	t.Parallel()
	const existing, burst, workers = 10, 2000, 8
	const interval = 50 * time.Millisecond
	h := newHub(t, Config{CountInterval: interval})
	olds := make([]*fakeTransport, existing)
	for i := range olds {
		_, olds[i] = register(t, h)
	}
	for i, ft := range olds {
		waitFor(t, fmt.Sprintf("client %d to hold count %d", i, existing), func() bool { return ft.lastCount() == existing })
	}
	before := make([]int, existing)
	for i, ft := range olds {
		before[i] = len(ft.counts())
	}

	start := time.Now()
	news := make([]*fakeTransport, burst)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < burst; i += workers {
				news[i] = newFake()
				if _, err := h.Register(news[i]); err != nil {
					t.Errorf("Register: got %v; want nil", err)
				}
			}
		})
	}
	wg.Wait()
	const want = existing + burst
	if got := h.Count(""); got != want {
		t.Fatalf("Count: got %d; want %d", got, want)
	}
	all := append(slices.Clone(olds), news...)
	for i, ft := range all {
		waitFor(t, fmt.Sprintf("client %d to hold count %d", i, want), func() bool { return ft.lastCount() == want })
	}
	elapsed := time.Since(start)

	// The count loop sends at most one frame per interval, plus one for
	// the change pending when the burst began and one at Register.
	limit := int(elapsed/interval) + 3
	t.Logf("burst and settling took %v: at most %d count frames per client", elapsed, limit)
	for i, ft := range olds {
		got := len(ft.counts()) - before[i]
		if got > limit || got > burst/10 {
			t.Errorf("old client %d: got %d count frames for %d changes; want at most %d", i, got, burst, min(limit, burst/10))
		}
	}
	for i, ft := range news {
		got := len(ft.counts())
		if got > limit || got > burst/10 {
			t.Errorf("new client %d: got %d count frames; want at most %d", i, got, min(limit, burst/10))
		}
		if c := ft.counts(); !slices.IsSorted(c) {
			t.Errorf("new client %d: got counts %v during a pure connect burst; want them rising", i, c)
		}
	}
}

func TestWatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		channel string
	}{
		{name: "everyone", channel: ""},
		{name: "channel", channel: "quotes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHub(t, Config{})
			join := func() *Client {
				c, _ := register(t, h)
				if tt.channel != "" {
					if err := c.Subscribe(tt.channel); err != nil {
						t.Fatalf("Subscribe: got %v; want nil", err)
					}
				}
				return c
			}
			for range 3 {
				join()
			}
			if tt.channel != "" {
				register(t, h) // counts for everyone, not for the channel
			}

			var mu sync.Mutex
			var seen []int64
			last := func() int64 {
				mu.Lock()
				defer mu.Unlock()
				if len(seen) == 0 {
					return -1
				}
				return seen[len(seen)-1]
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() {
				done <- h.Watch(ctx, tt.channel, func(n int64) error {
					mu.Lock()
					seen = append(seen, n)
					mu.Unlock()
					return nil
				})
			}()
			waitFor(t, "the first count", func() bool { return last() >= 0 })
			mu.Lock()
			first := seen[0]
			mu.Unlock()
			if first != 3 {
				t.Errorf("first count: got %d; want 3", first)
			}

			// A burst of joins and leaves; the last value seen is the true count.
			var wg sync.WaitGroup
			for i := range 100 {
				wg.Go(func() {
					c := join()
					if i%3 == 0 {
						if tt.channel != "" && i%2 == 0 {
							c.Unsubscribe(tt.channel)
						} else {
							c.Close()
						}
					}
				})
			}
			wg.Wait()
			want := h.Count(tt.channel)
			if want != 3+100-34 {
				t.Errorf("Count(%q): got %d; want %d", tt.channel, want, 3+100-34)
			}
			waitFor(t, fmt.Sprintf("the watcher to see %d", want), func() bool { return last() == want })
			mu.Lock()
			for i := 1; i < len(seen); i++ {
				if seen[i] == seen[i-1] {
					t.Errorf("value %d repeats %d; want only changes", i, seen[i])
				}
			}
			mu.Unlock()

			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Watch: got %v; want %v", err, context.Canceled)
				}
			case <-time.After(waitTimeout):
				t.Fatal("timed out waiting for Watch to return")
			}
		})
	}
}

func TestWatchEnds(t *testing.T) {
	t.Parallel()
	errStop := errors.New("stop")
	tests := []struct {
		name string
		fn   func(n int64) error
		end  func(h *Hub)
		want error
	}{
		{
			name: "fn fails",
			fn:   func(int64) error { return errStop },
			end:  func(*Hub) {},
			want: errStop,
		},
		{
			name: "fn fails on a change",
			fn: func(n int64) error {
				if n > 0 {
					return errStop
				}
				return nil
			},
			end: func(h *Hub) {
				if _, err := h.Register(newFake()); err != nil {
					panic(err)
				}
			},
			want: errStop,
		},
		{
			name: "hub drains",
			fn:   func(int64) error { return nil },
			end: func(h *Hub) {
				if err := h.Drain(context.Background(), ReasonShutdown, 0); err != nil {
					panic(err)
				}
			},
			want: ErrClosed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHub(t, Config{})
			called := make(chan struct{}, 1)
			done := make(chan error, 1)
			go func() {
				done <- h.Watch(t.Context(), "", func(n int64) error {
					select {
					case called <- struct{}{}:
					default:
					}
					return tt.fn(n)
				})
			}()
			<-called
			tt.end(h)
			select {
			case err := <-done:
				if !errors.Is(err, tt.want) {
					t.Errorf("Watch: got %v; want %v", err, tt.want)
				}
			case <-time.After(waitTimeout):
				t.Fatal("timed out waiting for Watch to return")
			}
			h.watchMu.Lock()
			left := len(h.watchers)
			h.watchMu.Unlock()
			if left != 0 {
				t.Errorf("watcher sets left: got %d; want 0", left)
			}
		})
	}
}

func TestDrain(t *testing.T) {
	t.Parallel()
	const clients, selfClosed = 45, 5 // 40 live: 20 batches of 2, 19 ticks apart
	const spread = 600 * time.Millisecond
	h := newHub(t, Config{})
	fts := make([]*fakeTransport, clients)
	for i := range fts {
		var c *Client
		c, fts[i] = register(t, h)
		if err := c.Subscribe("c"); err != nil {
			t.Fatalf("Subscribe: got %v; want nil", err)
		}
		if i < selfClosed {
			c.Close()
		}
	}
	watchDone := make(chan error, 1)
	watching := make(chan struct{})
	go func() {
		watchDone <- h.Watch(t.Context(), "", func(int64) error {
			select {
			case <-watching:
			default:
				close(watching)
			}
			return nil
		})
	}()
	<-watching

	start := time.Now()
	if err := h.Drain(t.Context(), ReasonShutdown, spread); err != nil {
		t.Fatalf("Drain: got %v; want nil", err)
	}
	took := time.Since(start)

	if !h.Draining() {
		t.Errorf("Draining: got false; want true")
	}
	if _, err := h.Register(newFake()); !errors.Is(err, ErrClosed) {
		t.Errorf("Register: got %v; want %v", err, ErrClosed)
	}
	if _, err := h.Emit(t.Context(), Message{Event: "E"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Emit: got %v; want %v", err, ErrClosed)
	}
	if err := h.Watch(t.Context(), "", func(int64) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Watch: got %v; want %v", err, ErrClosed)
	}
	select {
	case err := <-watchDone:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("running Watch: got %v; want %v", err, ErrClosed)
		}
	case <-time.After(waitTimeout):
		t.Error("timed out waiting for the running Watch to end")
	}
	if got := h.Count(""); got != 0 {
		t.Errorf("Count: got %d; want 0", got)
	}
	if got := h.Count("c"); got != 0 {
		t.Errorf("Count(%q): got %d; want 0", "c", got)
	}

	// Drain waited for the writers: every Close call has been made.
	var first, last time.Time
	for i, ft := range fts {
		ft.check(t)
		got := ft.closeReasons()
		if i < selfClosed {
			if len(got) != 0 {
				t.Errorf("client %d closed by its transport: got Close calls %v; want none", i, got)
			}
			continue
		}
		if want := []Reason{ReasonShutdown}; !slices.Equal(got, want) {
			t.Errorf("client %d: got Close calls %v; want %v", i, got, want)
			continue
		}
		at := ft.closes[0].at
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	// Lower bounds only: a busy machine makes both longer, never shorter.
	if min := spread * 19 / 20; took < min {
		t.Errorf("Drain took %v; want at least %v, the spread's last step", took, min)
	}
	if got, want := last.Sub(first), spread/4; got < want {
		t.Errorf("first to last Close: got %v; want at least %v", got, want)
	}
}

// TestDisconnectHandBack hands every client back while the hub keeps
// serving: a client that arrives meanwhile stays, and Disconnect does not
// wait for it.
func TestDisconnectHandBack(t *testing.T) {
	t.Parallel()
	const clients = 10
	h := newHub(t, Config{})
	var newcomer struct {
		sync.Once
		c  *Client
		ft *fakeTransport
	}
	fts := make([]*fakeTransport, clients)
	for i := range fts {
		_, fts[i] = register(t, h)
		// The first Close comes after Disconnect listed the clients.
		fts[i].onClose = func(Reason) {
			newcomer.Do(func() {
				newcomer.ft = newFake()
				c, err := h.Register(newcomer.ft)
				if err != nil {
					t.Errorf("Register during Disconnect: got %v; want nil", err)
				}
				newcomer.c = c
			})
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if err := h.Disconnect(ctx, ReasonHandBack, 100*time.Millisecond); err != nil {
		t.Fatalf("Disconnect: got %v; want nil", err)
	}
	for i, ft := range fts {
		ft.check(t)
		if got, want := ft.closeReasons(), []Reason{ReasonHandBack}; !slices.Equal(got, want) {
			t.Errorf("client %d: got Close calls %v; want %v", i, got, want)
		}
	}
	if h.Draining() {
		t.Errorf("Draining: got true; want false")
	}
	if newcomer.c == nil {
		t.Fatal("no client registered during Disconnect")
	}
	if got := h.Count(""); got != 1 {
		t.Errorf("Count: got %d; want 1, the newcomer", got)
	}
	res, err := h.Emit(t.Context(), Message{Event: "E"})
	n := res.Recipients
	if err != nil || n != 1 {
		t.Errorf("Emit: got %d, %v; want 1, nil", n, err)
	}
	waitFor(t, "the newcomer to get the message", func() bool { return len(newcomer.ft.messages()) == 1 })
	if got := newcomer.ft.closeReasons(); len(got) != 0 {
		t.Errorf("newcomer: got Close calls %v; want none", got)
	}
}

// TestDrainStalledClient drains a hub with a client whose writes never
// complete: it is closed with the drain's reason, not as slow.
func TestDrainStalledClient(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		writeTimeout time.Duration
		drainTimeout time.Duration
		wantErr      error
	}{
		{name: "write times out", writeTimeout: 100 * time.Millisecond, drainTimeout: waitTimeout},
		{name: "drain times out", writeTimeout: time.Hour, drainTimeout: 100 * time.Millisecond, wantErr: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHub(t, Config{WriteTimeout: tt.writeTimeout})
			_, okT := register(t, h)
			stuckT := newFake()
			stuckT.block = true
			stuck, err := h.Register(stuckT)
			if err != nil {
				t.Fatalf("Register: got %v; want nil", err)
			}
			<-stuckT.stalled
			ctx, cancel := context.WithTimeout(t.Context(), tt.drainTimeout)
			defer cancel()
			if err := h.Drain(ctx, ReasonShutdown, 0); !errors.Is(err, tt.wantErr) {
				t.Errorf("Drain: got %v; want %v", err, tt.wantErr)
			}
			select {
			case <-stuck.done:
			case <-time.After(waitTimeout):
				t.Fatal("timed out waiting for the stalled writer to end")
			}
			if got, want := stuckT.closeReasons(), []Reason{ReasonShutdown}; !slices.Equal(got, want) {
				t.Errorf("stalled client: got Close calls %v; want %v", got, want)
			}
			if got, want := okT.closeReasons(), []Reason{ReasonShutdown}; !slices.Equal(got, want) {
				t.Errorf("other client: got Close calls %v; want %v", got, want)
			}
			if got := h.Stats().WriteFailures.Load(); got != 0 {
				t.Errorf("Stats.WriteFailures: got %d; want 0", got)
			}
		})
	}
}

func TestMaxSubscriptions(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{MaxSubscriptions: 3})
	c, _ := register(t, h)
	steps := []struct {
		name    string
		sub     string // subscribe to this channel
		unsub   string // or unsubscribe from this one
		wantErr error
	}{
		{name: "first", sub: "a"},
		{name: "second", sub: "b"},
		{name: "third", sub: "c"},
		{name: "fourth is refused", sub: "d", wantErr: ErrTooManySubscriptions},
		{name: "again is harmless", sub: "a"},
		{name: "leave one", unsub: "b"},
		{name: "leave one not held", unsub: "zz"},
		{name: "room again", sub: "d"},
		{name: "full again", sub: "e", wantErr: ErrTooManySubscriptions},
	}
	for _, s := range steps {
		if s.unsub != "" {
			c.Unsubscribe(s.unsub)
			continue
		}
		if err := c.Subscribe(s.sub); !errors.Is(err, s.wantErr) {
			t.Errorf("%s: Subscribe(%q): got %v; want %v", s.name, s.sub, err, s.wantErr)
		}
	}
	for ch, want := range map[string]int64{"a": 1, "b": 0, "c": 1, "d": 1, "e": 0, "zz": 0} {
		if got := h.Count(ch); got != want {
			t.Errorf("Count(%q): got %d; want %d", ch, got, want)
		}
	}
}

func TestSubscribeInvalidChannel(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	c, _ := register(t, h)
	tests := []struct {
		name    string
		channel string
	}{
		{name: "empty", channel: ""},
		{name: "too long", channel: strings.Repeat("x", frame.MaxChannelLen+1)},
		{name: "space", channel: "a b"},
		{name: "control", channel: "a\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.Subscribe(tt.channel); !errors.Is(err, frame.ErrInvalid) {
				t.Errorf("Subscribe(%q): got %v; want an error wrapping %v", tt.channel, err, frame.ErrInvalid)
			}
		})
	}
	c.subMu.Lock()
	held := len(c.subs)
	c.subMu.Unlock()
	if held != 0 {
		t.Errorf("subscriptions held: got %d; want 0", held)
	}
}

func TestSubscribeAfterClose(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		close func(h *Hub, c *Client)
	}{
		{name: "closed by transport", close: func(_ *Hub, c *Client) { c.Close() }},
		{name: "kicked", close: func(_ *Hub, c *Client) { c.kick(ReasonHandBack) }},
		{name: "hub closed", close: func(h *Hub, _ *Client) {
			if err := h.Close(); err != nil {
				panic(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHub(t, Config{})
			c, _ := register(t, h)
			if err := c.Subscribe("a"); err != nil {
				t.Fatalf("Subscribe: got %v; want nil", err)
			}
			tt.close(h, c)
			if err := c.Subscribe("b"); !errors.Is(err, ErrClosed) {
				t.Errorf("Subscribe after close: got %v; want %v", err, ErrClosed)
			}
			c.Unsubscribe("a") // harmless
			c.Close()          // harmless
			for _, ch := range []string{"a", "b"} {
				if got := h.Count(ch); got != 0 {
					t.Errorf("Count(%q): got %d; want 0", ch, got)
				}
			}
		})
	}
}

// TestSubscribeRacesClose subscribes while the client closes: whichever
// wins, no member is left behind in any channel.
func TestSubscribeRacesClose(t *testing.T) {
	t.Parallel()
	const clients = 200
	channels := []string{"a", "b", "c", "d", "e"}
	h := newHub(t, Config{})
	var wg sync.WaitGroup
	for i := range clients {
		c, _ := register(t, h)
		wg.Go(func() {
			for j := 0; ; j++ {
				err := c.Subscribe(channels[j%len(channels)])
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Subscribe: got %v; want nil or %v", err, ErrClosed)
					return
				}
				if j%7 == 0 {
					c.Unsubscribe(channels[(j+1)%len(channels)])
				}
			}
		})
		wg.Go(func() {
			for range i % 20 {
				time.Sleep(10 * time.Microsecond) // vary the interleaving
			}
			if i%2 == 0 {
				c.Close()
			} else {
				c.kick(ReasonShutdown)
			}
		})
	}
	wg.Wait()
	for _, ch := range channels {
		if got := h.Count(ch); got != 0 {
			t.Errorf("Count(%q): got %d; want 0", ch, got)
		}
	}
	for i := range h.channels {
		s := &h.channels[i]
		s.mu.RLock()
		if len(s.channels) != 0 {
			t.Errorf("shard %d: got %d channels; want none", i, len(s.channels))
		}
		s.mu.RUnlock()
	}
	if got := h.Count(""); got != 0 {
		t.Errorf("Count: got %d; want 0", got)
	}
}

func TestDeliverFollowsTheHead(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	if err := h.ResetLog("shared", 41); err != nil {
		t.Fatal(err)
	}
	_, ft := register(t, h)
	if w := welcome(t, ft); w.Epoch != "shared" || w.Offset != 41 {
		t.Errorf("welcome after ResetLog: got %+v; want epoch shared at 41", w)
	}
	if err := h.Deliver(Message{ID: "x-1", Offset: 42, Event: "E"}, time.Now()); err != nil {
		t.Fatalf("Deliver(42): %v", err)
	}
	waitFor(t, "the message", func() bool { return len(ft.messages()) == 1 })
	for _, off := range []uint64{42, 44} {
		if err := h.Deliver(Message{ID: "x", Offset: off, Event: "E"}, time.Now()); !errors.Is(err, ErrNotNext) {
			t.Errorf("Deliver(%d) after 42: got %v; want ErrNotNext", off, err)
		}
	}
	if err := h.Drain(t.Context(), ReasonShutdown, 0); err != nil {
		t.Fatalf("Drain: got %v; want nil", err)
	}
	if err := h.Deliver(Message{ID: "x-2", Offset: 43, Event: "E"}, time.Now()); err != nil {
		t.Fatalf("Deliver(43) while draining: %v", err)
	}
	if off := h.Position().Offset; off != 43 {
		t.Errorf("log head after Deliver(43) while draining: got %d; want 43, the log kept whole", off)
	}
	if got, want := ft.messageIDs(), []string{"x-1"}; !slices.Equal(got, want) || ft.offsets()[0] != 42 {
		t.Errorf("messages: got %v at %v; want %v at 42, nothing after the drain", got, ft.offsets(), want)
	}
}

func TestReasonString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    Reason
		want string
	}{
		{name: "shutdown", r: ReasonShutdown, want: "server shutting down"},
		{name: "hand back", r: ReasonHandBack, want: "node handing over, reconnect"},
		{name: "slow", r: ReasonSlow, want: "send queue overflow: client too slow"},
		{name: "zero", r: 0, want: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.r.String()
			if got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
			// WebSocket close reasons hold at most 123 bytes.
			if len(got) > 123 {
				t.Errorf("len: got %d; want at most 123", len(got))
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	var c Config
	c.setDefaults()
	if _, ok := c.Broker.(Local); !ok {
		t.Errorf("Broker: got %T; want Local", c.Broker)
	}
	if c.Node == "" || c.Logger == nil {
		t.Errorf("Node, Logger: got %q, %v; want set", c.Node, c.Logger)
	}
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"QueueFrames", c.QueueFrames, 1024},
		{"QueueBytes", c.QueueBytes, 4 << 20},
		{"WriteTimeout", c.WriteTimeout, 10 * time.Second},
		{"CountInterval", c.CountInterval, 100 * time.Millisecond},
		{"MaxSubscriptions", c.MaxSubscriptions, 64},
	} {
		if f.got != f.want {
			t.Errorf("%s: got %v; want %v", f.name, f.got, f.want)
		}
	}
	var d Config
	d.setDefaults()
	if c.Node == d.Node {
		t.Errorf("two default node names: got %q twice; want them to differ", c.Node)
	}
}

// TestSetCountOrder offers counts to a client out of order: only newer
// versions replace the count it was last sent.
func TestSetCountOrder(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{CountInterval: time.Hour})
	c, ft := register(t, h)
	waitFor(t, "the first count", func() bool { return ft.lastCount() == 1 })
	c.mu.Lock()
	v := c.countVer
	c.mu.Unlock()
	steps := []struct {
		name  string
		offer total
		want  int64 // the count last queued
	}{
		{name: "same version", offer: total{n: 7, version: v}, want: 1},
		{name: "older version", offer: total{n: 8, version: v - 1}, want: 1},
		{name: "newer version", offer: total{n: 9, version: v + 2}, want: 9},
		{name: "stale after newer", offer: total{n: 10, version: v + 1}, want: 9},
		{name: "newer again", offer: total{n: 4, version: v + 4}, want: 4},
		{name: "stale again", offer: total{n: 5, version: v + 3}, want: 4},
	}
	for _, s := range steps {
		c.setCount(s.offer, nil)
		c.mu.Lock()
		got := c.lastCount
		c.mu.Unlock()
		if got != s.want {
			t.Errorf("%s: count queued: got %d; want %d", s.name, got, s.want)
		}
	}
	waitFor(t, "the newest count to be written", func() bool { return ft.lastCount() == 4 })
	for _, n := range ft.counts() {
		if n == 7 || n == 8 || n == 10 || n == 5 {
			t.Errorf("counts written: got %v; want no stale count", ft.counts())
			break
		}
	}
}

func TestStatsSubscriptions(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	a, _ := register(t, h)
	b, _ := register(t, h)
	check := func(when string, local, subs, chans int64) {
		t.Helper()
		st := h.Stats()
		if got := h.LocalCount(); got != local {
			t.Errorf("%s: LocalCount: got %d; want %d", when, got, local)
		}
		if got := st.Subscriptions.Load(); got != subs {
			t.Errorf("%s: Stats.Subscriptions: got %d; want %d", when, got, subs)
		}
		if got := st.Channels.Load(); got != chans {
			t.Errorf("%s: Stats.Channels: got %d; want %d", when, got, chans)
		}
	}
	check("at start", 2, 0, 0)
	for _, sub := range []struct {
		c  *Client
		ch string
	}{{a, "x"}, {a, "y"}, {b, "x"}, {b, "x"}} {
		if err := sub.c.Subscribe(sub.ch); err != nil {
			t.Fatalf("Subscribe(%q): got %v; want nil", sub.ch, err)
		}
	}
	check("after subscribing", 2, 3, 2)
	a.Unsubscribe("y")
	a.Unsubscribe("y")
	check("after unsubscribing", 2, 2, 1)
	a.Close()
	check("after a closed", 1, 1, 1)
	b.Close()
	check("after b closed", 0, 0, 0)
}
