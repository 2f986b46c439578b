package hub

import (
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait in these tests. It only limits how long a
// broken hub takes to fail a test; passing tests never wait that long.
const waitTimeout = 10 * time.Second

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// newHub returns a hub logging to the test's output, closed when the test
// ends.
func newHub(t testing.TB, cfg Config) *Hub {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatalf("New: got %v; want nil", err)
	}
	t.Cleanup(func() {
		// A broken hub must fail the test, not hang it: Close waits up to
		// the WriteTimeout, which some tests set to an hour.
		done := make(chan error, 1)
		go func() { done <- h.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Close: got %v; want nil", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Close: timed out after %v", waitTimeout)
		}
	})
	return h
}

// register registers a new fake transport with h.
func register(t testing.TB, h *Hub) (*Client, *fakeTransport) {
	t.Helper()
	ft := newFake()
	c, err := h.Register(ft)
	if err != nil {
		t.Fatalf("Register: got %v; want nil", err)
	}
	return c, ft
}

// wireFrame is any frame the hub sends to browsers.
type wireFrame struct {
	Type        string          `json:"type"`
	Connections int64           `json:"connections"`
	ID          string          `json:"id"`
	Event       string          `json:"event"`
	Channel     string          `json:"channel"`
	Data        json.RawMessage `json:"data"`
}

type closeCall struct {
	reason Reason
	at     time.Time
}

// fakeTransport is a Transport that records what the hub writes. With
// block set, every Write blocks until Abort, like a browser that
// stopped reading; with fail set (under mu), every Write fails.
type fakeTransport struct {
	block   bool
	fail    error
	onClose func(Reason) // called from Close, before it records

	started chan struct{} // receives once each time a Write starts

	aborted   chan struct{} // closed by Abort
	abortOnce sync.Once

	mu       sync.Mutex
	frames   []wireFrame
	writes   int
	closes   []closeCall
	writing  bool // a Write is running
	overlaps int  // Writes that started while another ran
	badFrame error
}

var _ Transport = (*fakeTransport)(nil)

var errAborted = errors.New("write aborted")

func newFake() *fakeTransport {
	return &fakeTransport{started: make(chan struct{}, 1), aborted: make(chan struct{})}
}

// Abort ends a blocked Write, and makes every later one fail.
func (f *fakeTransport) Abort() {
	f.abortOnce.Do(func() { close(f.aborted) })
}

func (f *fakeTransport) Write(frames [][]byte) error {
	f.mu.Lock()
	if f.writing {
		f.overlaps++
	}
	f.writing = true
	f.writes++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.writing = false
		f.mu.Unlock()
	}()
	select {
	case f.started <- struct{}{}:
	default:
	}
	select {
	case <-f.aborted:
		return errAborted
	default:
	}
	if f.block {
		<-f.aborted
		return errAborted
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	for _, p := range frames {
		var w wireFrame
		if err := json.Unmarshal(p, &w); err != nil && f.badFrame == nil {
			f.badFrame = err
		}
		f.frames = append(f.frames, w)
	}
	return nil
}

func (f *fakeTransport) Close(r Reason) {
	if f.onClose != nil {
		f.onClose(r)
	}
	f.mu.Lock()
	f.closes = append(f.closes, closeCall{reason: r, at: time.Now()})
	f.mu.Unlock()
}

// counts returns the connections of every count frame received, in order.
func (f *fakeTransport) counts() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n []int64
	for _, w := range f.frames {
		if w.Type == "count" {
			n = append(n, w.Connections)
		}
	}
	return n
}

// lastCount returns the last count received, or -1 before any.
func (f *fakeTransport) lastCount() int64 {
	n := f.counts()
	if len(n) == 0 {
		return -1
	}
	return n[len(n)-1]
}

// messages returns the message frames received, in order.
func (f *fakeTransport) messages() []wireFrame {
	f.mu.Lock()
	defer f.mu.Unlock()
	var m []wireFrame
	for _, w := range f.frames {
		if w.Type == "message" {
			m = append(m, w)
		}
	}
	return m
}

func (f *fakeTransport) messageIDs() []string {
	var ids []string
	for _, m := range f.messages() {
		ids = append(ids, m.ID)
	}
	return ids
}

func (f *fakeTransport) closeReasons() []Reason {
	f.mu.Lock()
	defer f.mu.Unlock()
	var r []Reason
	for _, c := range f.closes {
		r = append(r, c.reason)
	}
	return r
}

// check fails the test if the hub broke the Transport contract with f.
func (f *fakeTransport) check(t testing.TB) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.badFrame != nil {
		t.Errorf("a frame is not valid JSON: %v", f.badFrame)
	}
	if f.overlaps != 0 {
		t.Errorf("concurrent Writes: got %d; want 0", f.overlaps)
	}
	if len(f.closes) > 1 {
		t.Errorf("Close calls: got %d; want at most 1", len(f.closes))
	}
}

// queueLen returns the frames and bytes waiting in c's queue.
func (c *Client) queueLen() (frames, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, p := range c.queue {
		n += len(p)
	}
	if n != c.queued {
		panic("queued bytes out of step with the queue")
	}
	return len(c.queue), c.queued
}

var errWrite = errors.New("write failed")
