// Package browsersim is a Go stand-in for browsers running web/client.js,
// for tests that run many of them against real nodes: connect, read
// frames, and on a close or a failure reconnect with jittered exponential
// backoff (at once after a 1012 hand-back), asking for the client's
// channels and to resume from the newest message it saw. Each client
// records what a test asserts: message ids and their order, offsets out
// of order, whether each resume recovered, the last count, and how long
// each reconnect took. A Fleet is many clients sharing one lifetime.
package browsersim

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// The client's reconnect rules, as web/client.js has them (scaled down
// from its 250 ms..10 s so that tests are fast).
const (
	minDelay = 100 * time.Millisecond // first backoff
	maxDelay = 2 * time.Second        // backoff cap
)

// Client is one simulated browser. Set its fields before Run.
type Client struct {
	URL, Origin string
	Channels    []string
	// ForwardedFor is the browser's own address, sent as X-Forwarded-For.
	// Test clients all dial from 127.0.0.1, which is also nginx's
	// (trusted) address, so the node takes the address to its left: each
	// client looks like a browser of its own to the node's per-address
	// limit, as real browsers do behind nginx.
	ForwardedFor string

	mu         sync.Mutex
	connected  bool            // a count frame arrived on the current socket
	count      int64           // last count received
	ids        map[string]int  // message id -> frames received with it
	order      []string        // message ids in the order first received
	texts      map[string]int  // ShowMessage text -> distinct ids carrying it
	lostAt     time.Time       // when the previous socket ended; zero while connected
	reconnects []time.Duration // loss -> first count frame on a new socket
	joinedAt   []time.Time     // when each reconnect completed
	dials      int             // dial attempts since the last reset, failed ones included
	counts     int             // count frames since the last reset
	closes     map[int]int     // close code -> times (-1: no close frame)
	conn       *websocket.Conn // the current socket, nil between sockets
	drop       chan bool       // Disconnect's requests: true for a close frame
	leaving    bool            // set by leave: no more reconnects

	// The position to resume from, as client.js keeps it.
	epoch      string
	offset     uint64
	resumes    int       // welcomes that answered a resume
	lost       int       // of those, how many said recovered:false
	outOfOrder int       // new messages whose offset was not past the newest seen
	lastErr    string    // why the last dial failed
	lastFrame  time.Time // when the last frame arrived
}

// NewClient returns a client of url that sends origin and joins channels.
func NewClient(url, origin string, channels ...string) *Client {
	return &Client{URL: url, Origin: origin, Channels: channels}
}

func (c *Client) init() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids == nil {
		c.count = -1
		c.ids, c.texts, c.closes = map[string]int{}, map[string]int{}, map[int]int{}
		c.drop = make(chan bool, 1)
	}
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

// Run connects and reconnects until ctx ends. When ctx ends the socket is
// cut without a close frame, as a browser tab that vanishes.
func (c *Client) Run(ctx context.Context) {
	c.init()
	failures := 0
	for ctx.Err() == nil {
		opened, code := c.connectOnce(ctx)
		c.mu.Lock()
		leaving := c.leaving
		c.mu.Unlock()
		if ctx.Err() != nil || leaving {
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

// Disconnect ends the current socket, with a close frame (1000) when
// graceful, else by cutting the TCP connection; the client then
// reconnects as after any loss.
func (c *Client) Disconnect(graceful bool) {
	c.init()
	select {
	case c.drop <- graceful:
	default:
	}
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil && !graceful {
		conn.CloseNow()
	}
}

// leave stops the client's reconnects and ends its socket, with a close
// frame (1000) when graceful; the caller then ends Run's context.
func (c *Client) leave(graceful bool) {
	c.mu.Lock()
	c.leaving = true
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return
	}
	if graceful {
		conn.Close(websocket.StatusNormalClosure, "bye")
	} else {
		conn.CloseNow()
	}
}

// connectOnce runs one socket to its end. opened is whether a count frame
// arrived (the node served us); code is the close code, -1 for none.
func (c *Client) connectOnce(ctx context.Context) (opened bool, code int) {
	c.mu.Lock()
	c.dials++
	c.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	h := http.Header{"Origin": {c.Origin}}
	if c.ForwardedFor != "" {
		h.Set("X-Forwarded-For", c.ForwardedFor)
	}
	q := url.Values{"channel": c.Channels}
	c.mu.Lock()
	if c.epoch != "" {
		q.Set("epoch", c.epoch)
		q.Set("offset", strconv.FormatUint(c.offset, 10))
	}
	c.mu.Unlock()
	conn, resp, err := websocket.Dial(dctx, c.URL+"?"+q.Encode(), &websocket.DialOptions{HTTPHeader: h})
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
	// A Disconnect asked for while no socket was open applies to none.
	select {
	case <-c.drop:
	default:
	}
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.conn = nil
		c.mu.Unlock()
	}()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case graceful := <-c.drop:
			if graceful {
				conn.Close(websocket.StatusNormalClosure, "bye")
			}
		case <-sctx.Done():
		}
	}()
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
			if c.ids[f.ID] == 1 {
				c.order = append(c.order, f.ID)
				if f.Event == "ShowMessage" {
					c.texts[f.Data.Text]++
				}
			}
		}
		c.mu.Unlock()
	}
}

// Connected reports whether the client has a live socket that got a
// count frame.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// Count returns the last count frame's connections (-1 before the first).
func (c *Client) Count() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

// Frames returns how many frames carried message id.
func (c *Client) Frames(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ids[id]
}

// TextCopies returns how many distinct message ids carried the
// ShowMessage text: more than one means one emit was delivered twice
// under two ids, which dropping repeated ids (as the browser library
// does) cannot hide.
func (c *Client) TextCopies(text string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.texts[text]
}

// Order returns the ids of the messages received, in the order they first
// arrived.
func (c *Client) Order() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.order...)
}

// Stats is what a client recorded about its resumes and order.
type Stats struct {
	Resumes    int // welcomes that answered a resume
	Lost       int // of those, how many said recovered:false
	OutOfOrder int // new messages whose offset was not past the newest seen
}

// Stats returns what the client recorded since it started.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Resumes: c.resumes, Lost: c.lost, OutOfOrder: c.outOfOrder}
}

// countFrame reads {"type":"count","connections":N} without a JSON
// decoder.
func countFrame(b []byte) (int64, bool) {
	const prefix = `{"type":"count","connections":`
	if len(b) < len(prefix)+2 || string(b[:len(prefix)]) != prefix {
		return 0, false
	}
	rest := b[len(prefix):]
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	// Any other field after the number (visitors, say) is not read.
	if end == 0 || end == len(rest) || (rest[end] != '}' && rest[end] != ',') {
		return 0, false
	}
	n, err := strconv.ParseInt(string(rest[:end]), 10, 64)
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
