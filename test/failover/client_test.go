package failover

// This file holds a Go stand-in for a browser running web/client.js:
// connect, read frames, and on a close or a failure reconnect with
// jittered exponential backoff (quickly after a 1012 hand-back), asking
// for its channels and to resume from the newest message it saw. It
// records what a test asserts: message ids, offsets out of order, whether
// each resume recovered, the last count, and how long each reconnect took.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The client's reconnect rules, as web/client.js has them (scaled down
// from its 250 ms..10 s so that tests are fast).
const (
	minDelay = 100 * time.Millisecond // first backoff
	maxDelay = 2 * time.Second        // backoff cap
)

// wsClient is one simulated browser.
type wsClient struct {
	url, origin string
	channels    []string
	// forwardedFor is the browser's own address. All test clients dial
	// from 127.0.0.1, which is also nginx's (trusted) address, so the
	// node takes the address to its left in X-Forwarded-For: each client
	// looks like a browser of its own to the node's per-address limit,
	// as real browsers do behind nginx.
	forwardedFor string

	mu         sync.Mutex
	connected  bool            // a count frame arrived on the current socket
	count      int64           // last count received
	ids        map[string]int  // message id -> frames received with it
	texts      map[string]int  // ShowMessage text -> distinct ids carrying it
	lostAt     time.Time       // when the previous socket ended; zero while connected
	reconnects []time.Duration // loss -> first count frame on a new socket
	joinedAt   []time.Time     // when each reconnect completed
	dials      int             // dial attempts since the last reset, failed ones included
	counts     int             // count frames since the last reset
	closes     map[int]int     // close code -> times (-1: no close frame)

	// The position to resume from, as client.js keeps it.
	epoch      string
	offset     uint64
	resumes    int       // welcomes that answered a resume
	lost       int       // of those, how many said recovered:false
	outOfOrder int       // new messages whose offset was not past the newest seen
	lastErr    string    // why the last dial failed
	lastFrame  time.Time // when the last frame arrived
}

func newClient(url, origin string, channels ...string) *wsClient {
	return &wsClient{url: url, origin: origin, channels: channels, count: -1,
		ids: map[string]int{}, texts: map[string]int{}, closes: map[int]int{}}
}

type frameIn struct {
	Type        string `json:"type"`
	Connections int64  `json:"connections"`
	ID          string `json:"id"`
	Offset      uint64 `json:"offset"`
	Epoch       string `json:"epoch"`
	Recovered   *bool  `json:"recovered"`
	Event       string `json:"event"`
	Data        struct {
		Text string `json:"text"`
	} `json:"data"`
}

// run connects and reconnects until ctx ends.
func (c *wsClient) run(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		opened, code := c.connectOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		var d time.Duration
		if opened && code == int(websocket.StatusServiceRestart) {
			// Handed back: come back at once; the node spreads these.
			failures = 0
		} else {
			if opened {
				failures = 0
			}
			ceiling := min(maxDelay, minDelay<<min(failures, 10))
			d = ceiling/2 + rand.N(ceiling/2+1) // "equal jitter"
			failures++
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// connectOnce runs one socket to its end. opened is whether a count frame
// arrived (the node served us); code is the close code, -1 for none.
func (c *wsClient) connectOnce(ctx context.Context) (opened bool, code int) {
	c.mu.Lock()
	c.dials++
	c.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	h := http.Header{"Origin": {c.origin}}
	if c.forwardedFor != "" {
		h.Set("X-Forwarded-For", c.forwardedFor)
	}
	q := url.Values{"channel": c.channels}
	c.mu.Lock()
	if c.epoch != "" {
		q.Set("epoch", c.epoch)
		q.Set("offset", strconv.FormatUint(c.offset, 10))
	}
	c.mu.Unlock()
	conn, resp, err := websocket.Dial(dctx, c.url+"?"+q.Encode(), &websocket.DialOptions{HTTPHeader: h})
	cancel()
	if err != nil {
		c.mu.Lock()
		c.lastErr = err.Error()
		if resp != nil {
			c.lastErr = resp.Status
		}
		c.mu.Unlock()
		return false, -1
	}
	defer conn.CloseNow()
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			code = int(websocket.CloseStatus(err))
			c.mu.Lock()
			c.closes[code]++
			if c.connected {
				c.connected = false
				c.lostAt = time.Now()
			}
			c.mu.Unlock()
			return opened, code
		}
		// Count and message frames are read without a JSON decoder: a
		// 1,000-client fleet reads thousands a second, under the race
		// detector, on the cores the nodes use.
		var f frameIn
		if n, ok := countFrame(b); ok {
			f.Type, f.Connections = "count", n
		} else if !messageFrame(b, &f) && json.Unmarshal(b, &f) != nil {
			continue
		}
		c.mu.Lock()
		c.lastFrame = time.Now()
		switch f.Type {
		case "welcome":
			// The welcome's offset is the log's head: the client's
			// position only when nothing was replayed.
			if f.Recovered != nil {
				c.resumes++
				if !*f.Recovered {
					c.lost++
				}
			}
			if f.Recovered == nil || !*f.Recovered {
				c.offset = f.Offset
			}
			c.epoch = f.Epoch
		case "count":
			if !c.connected {
				c.connected = true
				if !c.lostAt.IsZero() {
					now := time.Now()
					c.reconnects = append(c.reconnects, now.Sub(c.lostAt))
					c.joinedAt = append(c.joinedAt, now)
					c.lostAt = time.Time{}
				}
			}
			opened = true
			c.count = f.Connections
			c.counts++
		case "message":
			if f.Offset > c.offset {
				c.offset = f.Offset
			} else if c.ids[f.ID] == 0 {
				c.outOfOrder++
			}
			c.ids[f.ID]++
			if c.ids[f.ID] == 1 && f.Event == "ShowMessage" {
				c.texts[f.Data.Text]++
			}
		}
		c.mu.Unlock()
	}
}

// fleet is many clients sharing one lifetime.
type fleet struct {
	timeout time.Duration // bounds each wait; default waitTimeout
	clients []*wsClient
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// startFleet connects n clients, in batches so that the start-up itself
// is not a connect storm, and waits until every one has its first count.
func startFleet(t testingTB, n int, url, origin string, channels ...string) *fleet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{cancel: cancel, timeout: waitTimeout + time.Duration(n)*2*time.Millisecond}
	t.Cleanup(f.stop)
	const batch = 250
	for i := 0; i < n; i += batch {
		for j := i; j < min(i+batch, n); j++ {
			c := newClient(url, origin, channels...)
			c.forwardedFor = fakeBrowserAddr()
			f.clients = append(f.clients, c)
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				c.run(ctx)
			}()
		}
		f.waitConnected(t, "fleet start")
	}
	return f
}

var browserAddrs atomic.Uint32

// fakeBrowserAddr returns a new address in 10.0.0.0/8 for a simulated
// browser.
func fakeBrowserAddr() string {
	n := browserAddrs.Add(1)
	return fmt.Sprintf("10.%d.%d.%d", n>>16&0xff, n>>8&0xff, n&0xff)
}

// testingTB is the part of testing.TB the fleet needs.
type testingTB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

func (f *fleet) stop() {
	f.cancel()
	f.wg.Wait()
}

// connected returns how many clients have a live socket that got a count.
func (f *fleet) connected() int {
	n := 0
	for _, c := range f.clients {
		c.mu.Lock()
		if c.connected {
			n++
		}
		c.mu.Unlock()
	}
	return n
}

func (f *fleet) waitConnected(t testingTB, what string) {
	t.Helper()
	deadline := time.Now().Add(f.timeout)
	for time.Now().Before(deadline) {
		if f.connected() == len(f.clients) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: %d of %d clients connected after %v", what, f.connected(), len(f.clients), f.timeout)
}

// waitCounts waits until every client's last count frame says want.
func (f *fleet) waitCounts(t testingTB, what string, want int64) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < f.timeout {
		ok := true
		for _, c := range f.clients {
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
	for _, c := range f.clients {
		c.mu.Lock()
		if c.count != want || !c.connected {
			wrong = append(wrong, c.count)
		}
		c.mu.Unlock()
	}
	t.Fatalf("%s: %d clients do not show count %d after %v (they show %v)", what, len(wrong), want, f.timeout, head(wrong, 10))
	return 0
}

// resetStats forgets the reconnects recorded so far.
func (f *fleet) resetStats() {
	for _, c := range f.clients {
		c.mu.Lock()
		c.reconnects, c.joinedAt, c.dials, c.counts = nil, nil, 0, 0
		clear(c.closes)
		c.mu.Unlock()
	}
}

// reconnectStats returns every reconnect duration since the last reset,
// sorted, and the times they completed, sorted.
func (f *fleet) reconnectStats() (durations []time.Duration, joined []time.Time) {
	for _, c := range f.clients {
		c.mu.Lock()
		durations = append(durations, c.reconnects...)
		joined = append(joined, c.joinedAt...)
		c.mu.Unlock()
	}
	slices.Sort(durations)
	slices.SortFunc(joined, func(a, b time.Time) int { return a.Compare(b) })
	return durations, joined
}

// dials sums the dial attempts since the last reset.
func (f *fleet) dials() int {
	n := 0
	for _, c := range f.clients {
		c.mu.Lock()
		n += c.dials
		c.mu.Unlock()
	}
	return n
}

// countFrames sums the count frames received since the last reset.
func (f *fleet) countFrames() int {
	n := 0
	for _, c := range f.clients {
		c.mu.Lock()
		n += c.counts
		c.mu.Unlock()
	}
	return n
}

// closeCodes sums the close codes the clients saw since the last reset.
func (f *fleet) closeCodes() map[int]int {
	out := map[int]int{}
	for _, c := range f.clients {
		c.mu.Lock()
		for k, v := range c.closes {
			out[k] += v
		}
		c.mu.Unlock()
	}
	return out
}

// frames returns, per client, how many frames carried message id.
func (f *fleet) frames(id string) []int {
	out := make([]int, len(f.clients))
	for i, c := range f.clients {
		c.mu.Lock()
		out[i] = c.ids[id]
		c.mu.Unlock()
	}
	return out
}

// textCopies returns, per client, how many distinct message ids carried
// text: more than one means the same emit was delivered twice under two
// ids, which dropping repeated ids (as the browser library does) cannot
// hide.
func (f *fleet) textCopies(text string) []int {
	out := make([]int, len(f.clients))
	for i, c := range f.clients {
		c.mu.Lock()
		out[i] = c.texts[text]
		c.mu.Unlock()
	}
	return out
}

// waitFrames waits until every client has at least one frame of id.
func (f *fleet) waitFrames(t testingTB, what, id string) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < f.timeout {
		if !slices.Contains(f.frames(id), 0) {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	missing := 0
	for _, n := range f.frames(id) {
		if n == 0 {
			missing++
		}
	}
	t.Fatalf("%s: message %s missing at %d of %d clients after %v", what, id, missing, len(f.clients), f.timeout)
	return 0
}

// percentile returns the p-th percentile (0..100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

// maxInWindow returns the most events of sorted times within any window
// of length w.
func maxInWindow(sorted []time.Time, w time.Duration) int {
	best, lo := 0, 0
	for hi := range sorted {
		for sorted[hi].Sub(sorted[lo]) >= w {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

func head[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// whyDisconnected counts the clients not connected right now by why their
// last dial failed, and the connected ones by how long (in whole seconds)
// they have heard nothing.
func (f *fleet) whyDisconnected() (dial map[string]int, silent map[int]int) {
	dial, silent = map[string]int{}, map[int]int{}
	for _, c := range f.clients {
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

// countFrame reads {"type":"count","connections":N} without a JSON
// decoder.
func countFrame(b []byte) (int64, bool) {
	const prefix = `{"type":"count","connections":`
	if len(b) < len(prefix)+2 || string(b[:len(prefix)]) != prefix || b[len(b)-1] != '}' {
		return 0, false
	}
	n, err := strconv.ParseInt(string(b[len(prefix):len(b)-1]), 10, 64)
	return n, err == nil
}

// messageFrame reads a message frame as the node encodes it,
// {"type":"message","id":"…","offset":N,"event":"…","channel":"…","data":{"text":"…"}},
// without a JSON decoder; it reports false for anything else, such as a
// string with an escape, for the decoder to read.
func messageFrame(b []byte, f *frameIn) bool {
	rest, ok := cut(b, `{"type":"message","id":"`)
	if !ok {
		return false
	}
	var id, off, event, text []byte
	if id, rest, ok = upTo(rest, '"'); !ok {
		return false
	}
	if rest, ok = cut(rest, `,"offset":`); !ok {
		return false
	}
	if off, rest, ok = upTo(rest, ','); !ok {
		return false
	}
	if rest, ok = cut(rest, `"event":"`); !ok {
		return false
	}
	if event, rest, ok = upTo(rest, '"'); !ok {
		return false
	}
	n, err := strconv.ParseUint(string(off), 10, 64)
	if err != nil {
		return false
	}
	if i := bytes.Index(rest, []byte(`"data":{"text":"`)); i >= 0 {
		if text, _, ok = upTo(rest[i+len(`"data":{"text":"`):], '"'); !ok {
			return false
		}
	}
	if bytes.IndexByte(id, '\\') >= 0 || bytes.IndexByte(event, '\\') >= 0 || bytes.IndexByte(text, '\\') >= 0 {
		return false
	}
	f.Type, f.ID, f.Offset, f.Event, f.Data.Text = "message", string(id), n, string(event), string(text)
	return true
}

// cut returns what follows prefix at the start of b.
func cut(b []byte, prefix string) ([]byte, bool) {
	if !bytes.HasPrefix(b, []byte(prefix)) {
		return nil, false
	}
	return b[len(prefix):], true
}

// upTo splits b at the first c, dropping it.
func upTo(b []byte, c byte) (before, after []byte, ok bool) {
	i := bytes.IndexByte(b, c)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

func TestMessageFrame(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		want frameIn
	}{
		{`{"type":"message","id":"k1","offset":42,"event":"ShowMessage","channel":"","data":{"text":"steady 7"}}`, true, frameIn{Type: "message", ID: "k1", Offset: 42, Event: "ShowMessage"}},
		{`{"type":"message","id":"k2","offset":3,"event":"Quote","channel":"quotes","data":{"text":"a","author":"b"}}`, true, frameIn{Type: "message", ID: "k2", Offset: 3, Event: "Quote"}},
		{`{"type":"message","id":"k\"3","offset":3,"event":"E","channel":"","data":null}`, false, frameIn{}},
		{`{"type":"message","id":"k4","offset":3,"event":"E","channel":"","data":{"text":"a \"b\""}}`, false, frameIn{}},
		{`{"type":"count","connections":3}`, false, frameIn{}},
	} {
		var f frameIn
		ok := messageFrame([]byte(tc.in), &f)
		if ok != tc.ok {
			t.Errorf("messageFrame(%s): got %v; want %v", tc.in, ok, tc.ok)
			continue
		}
		var want frameIn
		if ok && json.Unmarshal([]byte(tc.in), &want) == nil && f != want {
			t.Errorf("messageFrame(%s): got %+v; want %+v, as the JSON decoder reads it", tc.in, f, want)
		}
	}
}
