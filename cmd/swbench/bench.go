//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Targets Run can measure.
const (
	TargetSwitchboard = "switchboard"
	TargetSocketIO    = "socketio"
)

// Config describes one run. The zero value of each field is a documented
// default; Run fills them in with withDefaults.
type Config struct {
	// Target is TargetSwitchboard (default) or TargetSocketIO.
	Target string
	// WSURL is Switchboard's WebSocket endpoint, or a comma list of the
	// endpoints of a cluster's nodes: client i connects to the i-th, in
	// turn. Default: ws://127.0.0.1:8080/ws.
	WSURL string
	// GRPCAddr is Switchboard's gRPC API, or a comma list of a cluster's:
	// emit i goes to the i-th, in turn, and counts are asked of the
	// first. Default: 127.0.0.1:9090.
	GRPCAddr string
	// Token is sent as "authorization: Bearer <token>" on gRPC calls.
	Token string
	// Origin, when set, is sent as the Origin header of every WebSocket
	// upgrade (Switchboard refuses foreign origins unless allowed).
	Origin string
	// URL is the socket.io reference app's base URL. Default:
	// http://127.0.0.1:3000.
	URL string

	// Clients is the number of WebSocket clients. Default: 100.
	Clients int
	// Dialers is how many connects run at once. Default: 256.
	Dialers int
	// Ramp caps connects per second; 0 means as fast as Dialers allow.
	Ramp float64
	// DialRetries is how many times a failed connect is retried with
	// backoff (a full listen backlog refuses or resets). Default: 5.
	DialRetries int

	// Emits is the number of messages published; 0 makes an idle run.
	Emits int
	// Rate paces publishing at this many emits per second; 0 publishes
	// as fast as Inflight allows.
	Rate float64
	// Inflight is how many emits are outstanding at once. Default: 1
	// (sequential), or 16 with a Rate so a slow call does not stall the
	// schedule.
	Inflight int
	// Payload is the approximate size of each message's data as JSON, in
	// bytes. Default: 128.
	Payload int
	// Visitors, when set, gives client i the anonymous visitor id
	// "swbench-<i mod Visitors>" (?visitor=), so that Visitors visitors
	// hold the clients, and checks that every client is told that many
	// (Switchboard only). Default: 0, no visitor ids.
	Visitors int
	// Channel, when set, subscribes every client to it and emits to it.
	// Switchboard only.
	Channel string
	// Hold keeps the clients connected this long after they are counted
	// and before emitting, e.g. to let an idle server settle.
	Hold time.Duration

	// PID is the server process to sample (/proc/PID/stat CPU time,
	// /proc/PID/status VmRSS); 0 samples nothing.
	PID int
	// PIDs are more server processes (a cluster's other nodes), sampled
	// with PID: CPU and RSS are their sums.
	PIDs []int
	// Timeout bounds each phase: connecting and counting, and waiting for
	// the deliveries after the last emit. Default: 60s.
	Timeout time.Duration
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
}

func (c Config) withDefaults() Config {
	if c.Target == "" {
		c.Target = TargetSwitchboard
	}
	if c.WSURL == "" {
		c.WSURL = "ws://127.0.0.1:8080/ws"
	}
	if c.GRPCAddr == "" {
		c.GRPCAddr = "127.0.0.1:9090"
	}
	if c.URL == "" {
		c.URL = "http://127.0.0.1:3000"
	}
	if c.Clients == 0 {
		c.Clients = 100
	}
	if c.Dialers <= 0 {
		c.Dialers = 256
	}
	if c.DialRetries == 0 {
		c.DialRetries = 5
	}
	if c.Inflight <= 0 {
		c.Inflight = 1
		if c.Rate > 0 {
			c.Inflight = 16
		}
	}
	if c.Payload == 0 {
		c.Payload = 128
	}
	if c.Timeout <= 0 {
		c.Timeout = 60 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c
}

func (c Config) validate() error {
	switch c.Target {
	case TargetSwitchboard:
	case TargetSocketIO:
		if c.Channel != "" || c.Visitors != 0 {
			return errors.New("-channel and -visitors are not supported with -target socketio")
		}
	default:
		return fmt.Errorf("unknown target %q: want %s or %s", c.Target, TargetSwitchboard, TargetSocketIO)
	}
	if c.Visitors < 0 || c.Visitors > c.Clients {
		return fmt.Errorf("visitors must be 0 to the number of clients (%d), got %d", c.Clients, c.Visitors)
	}
	if c.Clients < 1 {
		return fmt.Errorf("clients must be at least 1, got %d", c.Clients)
	}
	if c.Emits < 0 || c.Payload < 0 || c.Rate < 0 || c.Ramp < 0 {
		return errors.New("emits, payload, rate and ramp must not be negative")
	}
	return nil
}

// wsURLs are where the clients connect.
func (c Config) wsURLs() ([]string, error) {
	if c.Target != TargetSocketIO {
		return splitList(c.WSURL), nil
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("failed to parse -url: %w", err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/socket.io/"
	u.RawQuery = "EIO=4&transport=websocket"
	return []string{u.String()}, nil
}

// splitList splits a comma list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// bench is the state of one run shared by its goroutines.
type bench struct {
	cfg Config
	// dialers are by node, then by visitor (one per node without
	// -visitors): client i dials dialers[i%nodes][i%visitors].
	dialers      [][]*wsDialer
	conns        []*conn
	target       int64 // count every client must see: baseline + Clients
	baseVisitors int64 // visitors on the server before the run

	// Connect phase.
	retries   atomic.Int64
	connected atomic.Int64
	atCount   atomic.Int64 // clients whose last count frame is >= target
	counted   chan struct{}
	countOnce sync.Once

	// Emit phase.
	remaining atomic.Int64 // clients still expecting messages
	done      chan struct{}
	doneOnce  sync.Once

	readers sync.WaitGroup
}

// Run connects the clients, waits until they are all counted, publishes
// the emits and waits for every delivery, then returns what it measured.
// The error is non-nil when the run could not be carried out, or when it
// was and Result.Verify found a lost, duplicated or reordered message.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	urls, err := cfg.wsURLs()
	if err != nil {
		return Result{}, err
	}
	var dialers [][]*wsDialer
	for _, u := range urls {
		var node []*wsDialer
		for i := range max(1, cfg.Visitors) {
			du := u
			if cfg.Visitors > 0 {
				vu, err := url.Parse(u)
				if err != nil {
					return Result{}, fmt.Errorf("failed to parse the WebSocket URL: %w", err)
				}
				q := vu.Query()
				q.Set("visitor", fmt.Sprint("swbench-", i))
				vu.RawQuery = q.Encode()
				du = vu.String()
			}
			d, err := newWSDialer(du, cfg.Origin)
			if err != nil {
				return Result{}, err
			}
			node = append(node, d)
		}
		dialers = append(dialers, node)
	}
	if len(dialers) == 0 {
		return Result{}, errors.New("no WebSocket URL")
	}
	b := &bench{
		cfg:     cfg,
		dialers: dialers,
		conns:   make([]*conn, cfg.Clients),
		counted: make(chan struct{}),
		done:    make(chan struct{}),
	}
	b.remaining.Store(int64(cfg.Clients))
	res := Result{
		Target:   cfg.Target,
		Clients:  cfg.Clients,
		Emits:    cfg.Emits,
		Rate:     cfg.Rate,
		Inflight: cfg.Inflight,
		Payload:  cfg.Payload,
		Channel:  cfg.Channel,
		Nodes:    len(dialers),
		Expected: int64(cfg.Clients) * int64(cfg.Emits),
	}
	defer b.closeAll()

	pub, err := newPublisher(cfg)
	if err != nil {
		return res, err
	}
	defer pub.close()

	// The baseline: other connections already on the server, which its
	// count frames include. socket.io has no count frames.
	if cfg.Target == TargetSwitchboard {
		base, err := pub.count(ctx)
		if err != nil {
			return res, fmt.Errorf("failed to reach the server: %w", err)
		}
		b.target = base + int64(cfg.Clients)
		if gp, ok := pub.(*grpcPublisher); ok && cfg.Visitors > 0 {
			if b.baseVisitors, err = gp.visitors(ctx); err != nil {
				return res, fmt.Errorf("failed to reach the server: %w", err)
			}
		}
	}

	proc := newProcSampler(append([]int{cfg.PID}, cfg.PIDs...)...)
	rssBefore := proc.rss()
	selfBefore := selfCPU()

	// Connect.
	cfg.Logf("connecting %d clients to %s", cfg.Clients, strings.Join(urls, ", "))
	connectStart := time.Now()
	if err := b.connectAll(ctx); err != nil {
		res.DialRetries = b.retries.Load()
		return res, err
	}
	res.ConnectSeconds = time.Since(connectStart).Seconds()
	res.DialRetries = b.retries.Load()
	if cfg.Target == TargetSwitchboard {
		if err := b.waitCounted(ctx); err != nil {
			return res, err
		}
		res.CountAllSeconds = ptr(time.Since(connectStart).Seconds())
		var sum, maxFrames int64
		for _, c := range b.conns {
			n := c.countFrames.Load()
			sum += n
			maxFrames = max(maxFrames, n)
		}
		res.CountFramesMax = ptr(maxFrames)
		res.CountFramesMean = ptr(float64(sum) / float64(cfg.Clients))
		if cfg.Visitors > 0 {
			// Visitors ride in the same frame as the connections: the
			// frame that showed every client showed every visitor.
			want := b.baseVisitors + int64(cfg.Visitors)
			for i, c := range b.conns {
				if got := c.lastVisitors.Load(); got != want {
					return res, fmt.Errorf("client %d was told %d visitors with the full count; want %d", i, got, want)
				}
			}
			res.Visitors = ptr(want)
		}
		if cfg.Channel != "" {
			if err := pub.waitSubscribed(ctx, cfg.Channel, b.target, cfg.Timeout); err != nil {
				return res, err
			}
		}
	}
	cfg.Logf("connected in %.3fs (%d retries)", res.ConnectSeconds, res.DialRetries)
	if cfg.Hold > 0 {
		cfg.Logf("holding for %v", cfg.Hold)
		select {
		case <-time.After(cfg.Hold):
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	rssConnected := proc.rss()
	cpuBefore := proc.cpu()

	// Publish and wait for every delivery.
	var st *emitStats
	if cfg.Emits > 0 {
		cfg.Logf("emitting %d messages (inflight %d, rate %g/s, %d B)", cfg.Emits, cfg.Inflight, cfg.Rate, cfg.Payload)
		st = b.emit(ctx, pub)
		res.EmitErrors = st.errors.Load()
		res.PublishSeconds = time.Duration(st.lastEnd - st.firstStart).Seconds()
		res.MinRecipients = st.minRecipients.Load()
		select {
		case <-b.done:
		case <-time.After(cfg.Timeout):
			res.TimedOut = true
		case <-ctx.Done():
			res.TimedOut = true
		}
	}
	cpuAfter := proc.cpu()
	rssAfter := proc.rss()

	if proc.ok() {
		res.ServerRSSBeforeKB = ptr(rssBefore)
		res.ServerRSSConnectedKB = ptr(rssConnected)
		res.ServerRSSAfterKB = ptr(rssAfter)
		res.RSSPerConnBytes = ptr(float64(rssConnected-rssBefore) * 1024 / float64(cfg.Clients))
		if cfg.Emits > 0 {
			res.ServerCPUSeconds = ptr(cpuAfter - cpuBefore)
		}
	}

	// Tear down before tallying, so that no reader still writes.
	b.closeAll()
	res.LoadCPUSeconds = selfCPU() - selfBefore
	tally(&res, b.conns, cfg.Emits, st)
	return res, res.Verify()
}

func ptr[T any](v T) *T { return &v }

// connectAll dials every client with cfg.Dialers at once, paced by
// cfg.Ramp, and starts its reader.
func (b *bench) connectAll(ctx context.Context) error {
	cfg := b.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	start := time.Now()
	for range min(cfg.Dialers, cfg.Clients) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.Clients || ctx.Err() != nil {
					return
				}
				if cfg.Ramp > 0 {
					due := start.Add(time.Duration(float64(i) / cfg.Ramp * float64(time.Second)))
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
					}
				}
				c, err := b.dial(ctx, i)
				if err != nil {
					errOnce.Do(func() {
						firstErr = fmt.Errorf("failed to connect client %d of %d (after %d retries overall): %w", i, cfg.Clients, b.retries.Load(), err)
						cancel()
					})
					return
				}
				b.conns[i] = c
				b.readers.Add(1)
				go c.readLoop(b)
				b.connected.Add(1)
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// waitCounted waits until every client's last count frame reports the
// target count.
func (b *bench) waitCounted(ctx context.Context) error {
	t := time.NewTimer(b.cfg.Timeout)
	defer t.Stop()
	select {
	case <-b.counted:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	lo, hi := int64(-1), int64(-1)
	for _, c := range b.conns {
		n := c.lastCount.Load()
		if lo < 0 || n < lo {
			lo = n
		}
		hi = max(hi, n)
	}
	return fmt.Errorf("failed to see the count reach %d on every client within %v: %d of %d clients there, last counts seen %d..%d",
		b.target, b.cfg.Timeout, b.atCount.Load(), b.cfg.Clients, lo, hi)
}

// sawCount records a count frame on c; the last client to reach the
// target closes b.counted.
func (b *bench) sawCount(c *conn, n int64) {
	c.countFrames.Add(1)
	prev := c.lastCount.Swap(n)
	switch {
	case prev < b.target && n >= b.target:
		if b.atCount.Add(1) == int64(b.cfg.Clients) {
			b.countOnce.Do(func() { close(b.counted) })
		}
	case prev >= b.target && n < b.target:
		b.atCount.Add(-1)
	}
}

// clientDone is called once per client when it has every message or its
// connection ended; the last one closes b.done.
func (b *bench) clientDone() {
	if b.remaining.Add(-1) == 0 {
		b.doneOnce.Do(func() { close(b.done) })
	}
}

// closeAll closes every connection and waits for the readers to return.
func (b *bench) closeAll() {
	for _, c := range b.conns {
		if c != nil {
			c.close()
		}
	}
	b.readers.Wait()
}
