package hub

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// stalled registers a client whose transport stops taking frames at its
// first write (the count frame), and waits until its flush blocks.
func stalled(t *testing.T, h *Hub) (*Client, *fakeTransport) {
	t.Helper()
	ft := newFake()
	ft.block = true
	c, err := h.Register(ft)
	if err != nil {
		t.Fatalf("Register: got %v; want nil", err)
	}
	select {
	case <-ft.stalled:
	case <-time.After(waitTimeout):
		t.Fatal("timed out waiting for the stalled Flush")
	}
	return c, ft
}

// TestBudget: clients that stop reading keep what is queued to them; past
// MaxQueuedBytes, those holding the most are dropped as slow, and the
// rest, and the clients that read, keep everything.
func TestBudget(t *testing.T) {
	t.Parallel()
	data := []byte(`"` + strings.Repeat("x", 10<<10) + `"`)
	const budgetBytes = 500 << 10
	var over atomic.Int64
	h := newHub(t, Config{
		QueueBytes:     4 << 20, // no client overflows on its own
		MaxQueuedBytes: budgetBytes,
		WriteTimeout:   time.Hour,
		OnOverBudget:   func() { over.Add(1) },
	})
	_, reader := register(t, h)
	emit := func(n int) {
		for range n {
			if _, err := h.Emit(t.Context(), Message{Event: "E", Data: data}); err != nil {
				t.Fatalf("Emit: %v", err)
			}
		}
	}

	// Two clients stop reading early and fall 25 messages behind, three
	// more join late and fall 15 behind: 950 KiB in all, past the budget.
	// Dropping the two early ones leaves 450 KiB, within it.
	var early, late []*fakeTransport
	for range 2 {
		_, ft := stalled(t, h)
		early = append(early, ft)
	}
	emit(10)
	for range 3 {
		c, ft := stalled(t, h)
		late = append(late, ft)
		defer c.Close() // ends its stalled flush
	}
	emit(15)

	for i, ft := range early {
		waitFor(t, fmt.Sprintf("early client %d to be dropped", i), func() bool {
			return slices.Equal(ft.closeReasons(), []Reason{ReasonSlow})
		})
	}
	waitFor(t, "the reader to get every message", func() bool { return len(reader.messages()) == 25 })
	for i, ft := range late {
		if got := ft.closeReasons(); len(got) != 0 {
			t.Errorf("late client %d: closed with %v; want it kept, within the budget", i, got)
		}
	}
	if got := h.QueuedBytes(); got > budgetBytes {
		t.Errorf("QueuedBytes: got %d; want at most %d", got, budgetBytes)
	}
	if got := h.Count(""); got != 4 {
		t.Errorf("Count: got %d; want 4 (the reader and the late three)", got)
	}
	st := h.Stats()
	if got := st.BudgetDrops.Load(); got != 2 {
		t.Errorf("Stats.BudgetDrops: got %d; want 2", got)
	}
	if got := st.SlowDisconnects.Load(); got != 2 {
		t.Errorf("Stats.SlowDisconnects: got %d; want 2", got)
	}
	if got := over.Load(); got != 2 {
		t.Errorf("OnOverBudget calls: got %d; want 2", got)
	}
}

// TestBudgetCountsOnlyClientsBehind: a fan-out that every client takes at
// once holds nothing against the budget, however many clients share it.
func TestBudgetCountsOnlyClientsBehind(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{MaxQueuedBytes: 1 << 10})
	var fts []*fakeTransport
	for range 100 {
		_, ft := register(t, h)
		fts = append(fts, ft)
	}
	data := []byte(`"` + strings.Repeat("x", 10<<10) + `"`)
	for range 20 {
		if _, err := h.Emit(t.Context(), Message{Event: "E", Data: data}); err != nil {
			t.Fatalf("Emit: %v", err)
		}
	}
	for i, ft := range fts {
		waitFor(t, fmt.Sprintf("client %d to get every message", i), func() bool { return len(ft.messages()) == 20 })
	}
	if got := h.Stats().BudgetDrops.Load(); got != 0 {
		t.Errorf("Stats.BudgetDrops: got %d; want 0", got)
	}
	if got := h.QueuedBytes(); got != 0 {
		t.Errorf("QueuedBytes: got %d; want 0", got)
	}
}

// TestBudgetReleased: what a client behind holds leaves the budget when
// it catches up and when it goes.
func TestBudgetReleased(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{WriteTimeout: time.Hour})
	c, ft := stalled(t, h)
	data := []byte(`"` + strings.Repeat("x", 1000) + `"`)
	for range 5 {
		if _, err := h.Emit(t.Context(), Message{Event: "E", Data: data}); err != nil {
			t.Fatalf("Emit: %v", err)
		}
	}
	if got := h.QueuedBytes(); got < 5000 {
		t.Fatalf("QueuedBytes with a client 5 messages behind: got %d; want at least 5000", got)
	}
	c.Close()
	waitFor(t, "the closed client to leave the budget", func() bool { return h.QueuedBytes() == 0 })
	ft.check(t)

	// A client that reads late catches up.
	late := newFake()
	late.keepEvery = 1
	if _, err := h.Register(late); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := h.Emit(t.Context(), Message{Event: "E", Data: data}); err != nil {
			t.Fatalf("Emit: %v", err)
		}
	}
	waitFor(t, "the late reader to get every message", func() bool { return len(late.messages()) == 5 })
	waitFor(t, "the late reader to leave the budget", func() bool { return h.QueuedBytes() == 0 })
}
