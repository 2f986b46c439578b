package browsersim

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// DefaultTimeout bounds every wait of a fleet of a few clients; it is
// generous because the tests run with -race on two busy cores.
const DefaultTimeout = 20 * time.Second

// Fleet is many clients sharing one lifetime.
type Fleet struct {
	// Timeout bounds each wait: DefaultTimeout plus 2 ms per client.
	Timeout time.Duration
	// Clients are the fleet's clients, in the order they started.
	Clients []*Client

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	leaving map[*Client]context.CancelFunc
	left    map[*Client]bool
}

// Start connects n clients of url, in batches so that the start-up itself
// is not a connect storm, and waits until every one has its first count.
// The fleet stops when the test ends.
func Start(t testing.TB, n int, url, origin string, channels ...string) *Fleet {
	t.Helper()
	f := New(t, n)
	const batch = 250
	for i := 0; i < n; i += batch {
		for range min(batch, n-i) {
			f.Add(NewClient(url, origin, channels...))
		}
		f.WaitConnected(t, "fleet start")
	}
	return f
}

// New returns an empty fleet sized for n clients, stopped when the test
// ends; Add starts its clients.
func New(t testing.TB, n int) *Fleet {
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{ctx: ctx, cancel: cancel, Timeout: DefaultTimeout + time.Duration(n)*2*time.Millisecond, leaving: map[*Client]context.CancelFunc{}, left: map[*Client]bool{}}
	t.Cleanup(f.Stop)
	return f
}

// Add starts c in the fleet, giving it an address of its own in
// 10.0.0.0/8 unless it has one. Add and Leave are for the test's own
// goroutine.
func (f *Fleet) Add(c *Client) {
	if c.ForwardedFor == "" {
		c.ForwardedFor = fakeBrowserAddr()
	}
	c.init()
	ctx, cancel := context.WithCancel(f.ctx)
	f.mu.Lock()
	f.Clients = append(f.Clients, c)
	f.leaving[c] = cancel
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		c.Run(ctx)
	}()
}

// Leave stops client c for good: a graceful one closes its socket with
// 1000, as a tab that is closed; otherwise its socket is cut without a
// close frame, as a tab that vanishes. It stays away, and in Clients, but
// not in Active.
func (f *Fleet) Leave(c *Client, graceful bool) {
	f.mu.Lock()
	cancel := f.leaving[c]
	f.left[c] = true
	f.mu.Unlock()
	c.leave(graceful)
	if cancel != nil {
		cancel()
	}
}

// Active returns the clients that have not left.
func (f *Fleet) Active() []*Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*Client
	for _, c := range f.Clients {
		if !f.left[c] {
			out = append(out, c)
		}
	}
	return out
}

var browserAddrs atomic.Uint32

// fakeBrowserAddr returns a new address in 10.0.0.0/8 for a simulated
// browser.
func fakeBrowserAddr() string {
	n := browserAddrs.Add(1)
	return fmt.Sprintf("10.%d.%d.%d", n>>16&0xff, n>>8&0xff, n&0xff)
}

// Stop ends every client and waits for them.
func (f *Fleet) Stop() {
	f.cancel()
	f.wg.Wait()
}

// WaitConnected waits until every client that has not left is connected.
func (f *Fleet) WaitConnected(t testing.TB, what string) {
	t.Helper()
	active := f.Active()
	connected := func() int {
		n := 0
		for _, c := range active {
			if c.Connected() {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(f.Timeout)
	for time.Now().Before(deadline) {
		if connected() == len(active) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: %d of %d clients connected after %v", what, connected(), len(active), f.Timeout)
}

// WaitCounts waits until every client that has not left is connected and
// its last count frame says want, and returns how long that took.
func (f *Fleet) WaitCounts(t testing.TB, what string, want int64) time.Duration {
	t.Helper()
	return f.WaitCountsOf(t, what, f.Active(), want)
}

// WaitCountsOf waits until each of clients is connected and its last
// count frame says want, and returns how long that took.
func (f *Fleet) WaitCountsOf(t testing.TB, what string, clients []*Client, want int64) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < f.Timeout {
		ok := true
		for _, c := range clients {
			c.mu.Lock()
			ok = ok && c.connected && c.count == want
			c.mu.Unlock()
			if !ok {
				break
			}
		}
		if ok {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var wrong []int64
	for _, c := range clients {
		c.mu.Lock()
		if c.count != want || !c.connected {
			wrong = append(wrong, c.count)
		}
		c.mu.Unlock()
	}
	t.Fatalf("%s: %d clients do not show count %d after %v (they show %v)", what, len(wrong), want, f.Timeout, Head(wrong, 10))
	return 0
}

// ResetStats forgets the reconnects, dials, count frames and close codes
// recorded so far.
func (f *Fleet) ResetStats() {
	for _, c := range f.Clients {
		c.mu.Lock()
		c.reconnects, c.joinedAt, c.dials, c.counts = nil, nil, 0, 0
		clear(c.closes)
		c.mu.Unlock()
	}
}

// ReconnectStats returns every reconnect duration since the last reset,
// sorted, and the times they completed, sorted.
func (f *Fleet) ReconnectStats() (durations []time.Duration, joined []time.Time) {
	for _, c := range f.Clients {
		c.mu.Lock()
		durations = append(durations, c.reconnects...)
		joined = append(joined, c.joinedAt...)
		c.mu.Unlock()
	}
	slices.Sort(durations)
	slices.SortFunc(joined, func(a, b time.Time) int { return a.Compare(b) })
	return durations, joined
}

// Dials sums the dial attempts since the last reset.
func (f *Fleet) Dials() int { return f.sum(func(c *Client) int { return c.dials }) }

// CountFrames sums the count frames received since the last reset.
func (f *Fleet) CountFrames() int { return f.sum(func(c *Client) int { return c.counts }) }

// sum adds up field over the clients, each read under its lock.
func (f *Fleet) sum(field func(*Client) int) int {
	n := 0
	for _, c := range f.Clients {
		c.mu.Lock()
		n += field(c)
		c.mu.Unlock()
	}
	return n
}

// CloseCodes sums the close codes the clients saw since the last reset.
func (f *Fleet) CloseCodes() map[int]int {
	out := map[int]int{}
	for _, c := range f.Clients {
		c.mu.Lock()
		for k, v := range c.closes {
			out[k] += v
		}
		c.mu.Unlock()
	}
	return out
}

// Frames returns, per client, how many frames carried message id.
func (f *Fleet) Frames(id string) []int {
	out := make([]int, len(f.Clients))
	for i, c := range f.Clients {
		out[i] = c.Frames(id)
	}
	return out
}

// TextCopies returns, per client, Client.TextCopies of text.
func (f *Fleet) TextCopies(text string) []int {
	out := make([]int, len(f.Clients))
	for i, c := range f.Clients {
		out[i] = c.TextCopies(text)
	}
	return out
}

// Totals sums the clients' Stats.
func (f *Fleet) Totals() Stats {
	var s Stats
	for _, c := range f.Clients {
		cs := c.Stats()
		s.Resumes += cs.Resumes
		s.Lost += cs.Lost
		s.OutOfOrder += cs.OutOfOrder
	}
	return s
}

// WaitFrames waits until every client has at least one frame of id.
func (f *Fleet) WaitFrames(t testing.TB, what, id string) time.Duration {
	t.Helper()
	return f.WaitFramesOf(t, what, f.Clients, id)
}

// WaitFramesOf waits until each of clients has at least one frame of id.
func (f *Fleet) WaitFramesOf(t testing.TB, what string, clients []*Client, id string) time.Duration {
	t.Helper()
	start := time.Now()
	missing := func() int {
		n := 0
		for _, c := range clients {
			if c.Frames(id) == 0 {
				n++
			}
		}
		return n
	}
	for time.Since(start) < f.Timeout {
		if missing() == 0 {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: message %s missing at %d of %d clients after %v", what, id, missing(), len(clients), f.Timeout)
	return 0
}

// WhyDisconnected counts the clients not connected right now by why their
// last dial failed, and the connected ones by how long (in whole seconds)
// they have heard nothing.
func (f *Fleet) WhyDisconnected() (dial map[string]int, silent map[int]int) {
	dial, silent = map[string]int{}, map[int]int{}
	for _, c := range f.Clients {
		c.mu.Lock()
		if !c.connected {
			dial[c.lastErr]++
		} else {
			silent[int(time.Since(c.lastFrame).Seconds())]++
		}
		c.mu.Unlock()
	}
	return dial, silent
}

// Percentile returns the p-th percentile (0..100) of sorted durations.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

// MaxInWindow returns the most events of sorted times within any window
// of length w.
func MaxInWindow(sorted []time.Time, w time.Duration) int {
	best, lo := 0, 0
	for hi := range sorted {
		for sorted[hi].Sub(sorted[lo]) >= w {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// Head returns the first n elements of s, or s.
func Head[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}
