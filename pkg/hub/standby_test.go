package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestEmitOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHub(t, Config{})
	_, ft := register(t, h)

	first, err := h.EmitOnce(ctx, "order-42", Message{Event: "E"})
	if err != nil {
		t.Fatalf("EmitOnce: got %v; want nil", err)
	}
	if want := (Emitted{ID: "order-42", Offset: 1, Recipients: 1}); first != want {
		t.Errorf("first EmitOnce: got %+v; want %+v", first, want)
	}
	_, ft2 := register(t, h)
	again, err := h.EmitOnce(ctx, "order-42", Message{Event: "E"})
	if err != nil {
		t.Fatalf("second EmitOnce: got %v; want nil", err)
	}
	if want := (Emitted{ID: "order-42", Offset: 1, Recipients: 1, Duplicate: true}); again != want {
		t.Errorf("second EmitOnce: got %+v; want %+v", again, want)
	}
	if _, err := h.EmitOnce(ctx, "order-43", Message{Event: "E"}); err != nil {
		t.Fatalf("EmitOnce(order-43): got %v; want nil", err)
	}
	waitFor(t, "both messages", func() bool { return len(ft.messages()) == 2 })
	waitFor(t, "the second message", func() bool { return len(ft2.messages()) == 1 })
	if got, want := ft.messageIDs(), []string{"order-42", "order-43"}; !slices.Equal(got, want) {
		t.Errorf("first client's ids: got %v; want %v", got, want)
	}
	if got := h.Stats().Emitted.Load(); got != 2 {
		t.Errorf("Stats().Emitted: got %d; want 2", got)
	}
}

func TestEmitOnceConcurrent(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	_, ft := register(t, h)
	const n = 20
	var wg sync.WaitGroup
	results := make(chan Emitted, n)
	for range n {
		wg.Go(func() {
			res, err := h.EmitOnce(context.Background(), "same", Message{Event: "E"})
			if err != nil {
				t.Errorf("EmitOnce: got %v; want nil", err)
			}
			results <- res
		})
	}
	wg.Wait()
	close(results)
	fresh := 0
	for res := range results {
		if res.ID != "same" {
			t.Errorf("EmitOnce ID: got %q; want %q", res.ID, "same")
		}
		if !res.Duplicate {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("emits not marked duplicate: got %d; want 1", fresh)
	}
	waitFor(t, "the message", func() bool { return len(ft.messages()) >= 1 })
	h.Emit(context.Background(), Message{Event: "Marker"})
	waitFor(t, "the marker", func() bool { return len(ft.messages()) >= 2 })
	if got := len(ft.messages()); got != 2 {
		t.Errorf("messages delivered: got %d; want 2 (one keyed, one marker)", got)
	}
}

func TestEmitOnceForgets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		wait time.Duration
	}{
		{name: "beyond IdempotencyKeys", cfg: Config{IdempotencyKeys: 3}},
		{name: "after IdempotencyTTL", cfg: Config{IdempotencyTTL: 20 * time.Millisecond}, wait: 40 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			h := newHub(t, tt.cfg)
			for i := range 5 {
				if _, err := h.EmitOnce(ctx, fmt.Sprint("k", i), Message{Event: "E"}); err != nil {
					t.Fatalf("EmitOnce: %v", err)
				}
			}
			time.Sleep(tt.wait)
			res, err := h.EmitOnce(ctx, "k0", Message{Event: "E"})
			if err != nil || res.Duplicate {
				t.Errorf("EmitOnce(k0) again: got %+v, %v; want a fresh emit", res, err)
			}
			h.keys.mu.Lock()
			n := len(h.keys.byKey)
			h.keys.mu.Unlock()
			if n > 5 {
				t.Errorf("keys remembered: got %d; want at most 5", n)
			}
		})
	}
}

func TestPause(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHub(t, Config{})
	_, ft := register(t, h)

	watchErr := make(chan error, 1)
	go func() { watchErr <- h.Watch(ctx, "", func(int64) error { return nil }) }()
	waitFor(t, "the watcher", func() bool {
		h.watchMu.Lock()
		defer h.watchMu.Unlock()
		return len(h.watchers[""]) == 1
	})

	h.Pause()
	if !h.Paused() {
		t.Errorf("Paused after Pause: got false; want true")
	}
	select {
	case err := <-watchErr:
		if !errors.Is(err, ErrPaused) {
			t.Errorf("Watch after Pause: got %v; want %v", err, ErrPaused)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Watch still running after Pause")
	}
	if _, err := h.Register(newFake()); !errors.Is(err, ErrPaused) {
		t.Errorf("Register while paused: got %v; want %v", err, ErrPaused)
	}
	if _, err := h.Emit(ctx, Message{Event: "E"}); !errors.Is(err, ErrPaused) {
		t.Errorf("Emit while paused: got %v; want %v", err, ErrPaused)
	}
	if _, err := h.EmitOnce(ctx, "k", Message{Event: "E"}); !errors.Is(err, ErrPaused) {
		t.Errorf("EmitOnce while paused: got %v; want %v", err, ErrPaused)
	}
	if err := h.Watch(ctx, "", func(int64) error { return nil }); !errors.Is(err, ErrPaused) {
		t.Errorf("Watch while paused: got %v; want %v", err, ErrPaused)
	}
	if got := h.Count(""); got != 1 {
		t.Errorf("Count while paused: got %d; want 1 (Pause keeps clients)", got)
	}

	h.Resume()
	if _, err := h.EmitOnce(ctx, "k", Message{Event: "E"}); err != nil {
		t.Errorf("EmitOnce after Resume: got %v; want nil (a refused key is not remembered)", err)
	}
	waitFor(t, "the message after Resume", func() bool { return len(ft.messages()) == 1 })
	register(t, h)
}

func TestHandBack(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	const n = 6
	const spread = 600 * time.Millisecond
	var fakes []*fakeTransport
	for range n {
		_, ft := register(t, h)
		fakes = append(fakes, ft)
	}
	h.Pause()
	start := time.Now()
	if got := h.HandBack(context.Background(), spread); got != n {
		t.Errorf("HandBack: got %d; want %d", got, n)
	}
	if took := time.Since(start); took > spread+waitTimeout/2 {
		t.Errorf("HandBack took %v; want about %v", took, spread)
	}
	if got := h.Count(""); got != 0 {
		t.Errorf("Count after HandBack: got %d; want 0", got)
	}
	var first, last time.Time
	for _, ft := range fakes {
		waitFor(t, "the close", func() bool { return len(ft.closeReasons()) == 1 })
		ft.mu.Lock()
		c := ft.closes[0]
		ft.mu.Unlock()
		if c.reason != ReasonHandBack {
			t.Errorf("close reason: got %v; want %v", c.reason, ReasonHandBack)
		}
		if first.IsZero() || c.at.Before(first) {
			first = c.at
		}
		if c.at.After(last) {
			last = c.at
		}
	}
	// Each client goes at a random time in its own slot of spread/n, so
	// the first and the last kicks are at least (n-2)/n of spread apart;
	// the writers' closes follow them after some scheduling delay, which
	// a loaded machine stretches, so the check leaves room for it.
	if got := last.Sub(first); got < spread/3 {
		t.Errorf("closes span %v; want at least %v", got, spread/3)
	}
}

func TestHandBackStops(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	for range 10 {
		register(t, h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := h.HandBack(ctx, time.Second); got != 0 {
		t.Errorf("HandBack with an ended context: got %d; want 0", got)
	}
	if got := h.Count(""); got != 10 {
		t.Errorf("Count: got %d; want 10", got)
	}
}
