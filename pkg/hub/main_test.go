package hub

import (
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
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
	Visitors    int64           `json:"visitors"`
	ID          string          `json:"id"`
	Event       string          `json:"event"`
	Channel     string          `json:"channel"`
	Data        json.RawMessage `json:"data"`
	Offset      uint64          `json:"offset"`
	Epoch       string          `json:"epoch"`
	Recovered   *bool           `json:"recovered"`
}

type closeCall struct {
	reason Reason
	at     time.Time
}

// fakeTransport is a Transport that records what the hub writes. With
// block set, Write keeps every frame and Flush blocks until Abort, like a
// browser that stopped reading; with fail set (under mu), every Write
// fails.
type fakeTransport struct {
	block bool
	// keepEvery, if set, makes every keepEvery-th Write keep its frames,
	// which the next Flush records after a pause: a browser that reads
	// late, so that the client goes from the pool to a goroutine of its
	// own and back.
	keepEvery int
	fail      error
	onClose   func(Reason) // called from Close, before it records

	stalled chan struct{} // receives once each time a Flush blocks

	aborted   chan struct{} // closed by Abort
	abortOnce sync.Once

	mu        sync.Mutex
	frames    []wireFrame
	writes    int
	closes    []closeCall
	kept      bool     // Write kept frames that Flush has not written
	keptData  [][]byte // those frames, with keepEvery
	writing   bool     // a Write or Flush is running
	overlaps  int      // Writes and Flushes that started while another ran
	unflushed int      // Writes called while frames were kept
	badFrame  error
}

var _ Transport = (*fakeTransport)(nil)

var errAborted = errors.New("write aborted")

func newFake() *fakeTransport {
	return &fakeTransport{stalled: make(chan struct{}, 1), aborted: make(chan struct{})}
}

// Abort ends a blocked Flush, and makes every later Write and Flush fail.
func (f *fakeTransport) Abort() {
	f.abortOnce.Do(func() { close(f.aborted) })
}

// enter marks a Write or Flush running, counting overlaps.
func (f *fakeTransport) enter() {
	f.mu.Lock()
	if f.writing {
		f.overlaps++
	}
	f.writing = true
	f.mu.Unlock()
}

func (f *fakeTransport) leave() {
	f.mu.Lock()
	f.writing = false
	f.mu.Unlock()
}

func (f *fakeTransport) isAborted() bool {
	select {
	case <-f.aborted:
		return true
	default:
		return false
	}
}

func (f *fakeTransport) Write(frames [][]byte) (bool, error) {
	f.enter()
	defer f.leave()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.kept {
		f.unflushed++
	}
	switch {
	case f.isAborted():
		return false, errAborted
	case f.fail != nil:
		return false, f.fail
	case f.block:
		f.kept = true
		return true, nil
	case f.keepEvery > 0 && f.writes%f.keepEvery == 0:
		f.kept = true
		f.keptData = slices.Clone(frames)
		return true, nil
	}
	f.record(frames)
	return false, nil
}

// record decodes and keeps frames; f.mu must be held.
func (f *fakeTransport) record(frames [][]byte) {
	for _, p := range frames {
		var w wireFrame
		if err := json.Unmarshal(p, &w); err != nil && f.badFrame == nil {
			f.badFrame = err
		}
		f.frames = append(f.frames, w)
	}
}

func (f *fakeTransport) Flush() error {
	f.enter()
	defer f.leave()
	if f.block {
		select {
		case f.stalled <- struct{}{}:
		default:
		}
		<-f.aborted
	}
	if f.keepEvery > 0 {
		time.Sleep(time.Millisecond)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.isAborted() {
		return errAborted
	}
	f.record(f.keptData)
	f.kept, f.keptData = false, nil
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

// lastOnline returns the connections and visitors of the last count frame
// received, or -1s before any.
func (f *fakeTransport) lastOnline() Online {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.frames) - 1; i >= 0; i-- {
		if w := f.frames[i]; w.Type == "count" {
			return Online{Connections: w.Connections, Visitors: w.Visitors}
		}
	}
	return Online{-1, -1}
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

// all returns every frame received, in order.
func (f *fakeTransport) all() []wireFrame {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.frames)
}

// offsets returns the offsets of the message frames received, in order.
func (f *fakeTransport) offsets() []uint64 {
	var o []uint64
	for _, m := range f.messages() {
		o = append(o, m.Offset)
	}
	return o
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
		t.Errorf("concurrent Writes or Flushes: got %d; want 0", f.overlaps)
	}
	if f.unflushed != 0 {
		t.Errorf("Writes before the Flush of kept frames: got %d; want 0", f.unflushed)
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
