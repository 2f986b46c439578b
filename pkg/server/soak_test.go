package server

// BenchmarkSoak keeps a node busy with a churning population of browsers
// and a web server emitting to them, and checks that the node neither
// leaks nor miscounts: memory flat, goroutines back where they started,
// counts exact, every message delivered once and in order.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/switchboard-rt/switchboard/pkg/client"
	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// The soak's load, sized for two cores that also run the load generator.
const (
	// soakPopulation is the number of browsers kept connected.
	soakPopulation = 500
	// soakTick is how often browsers leave, join and change channels.
	soakTick = 100 * time.Millisecond
	// One browser in soakChurn leaves each tick, and as many join; as
	// many others subscribe to or unsubscribe from a channel.
	soakChurn = 20
	// soakEmitRate is the messages a second the web server emits: the
	// even ones to everyone, the odd ones to one of soakChannels in turn.
	soakEmitRate = 50
	// soakGoroutineSlack is how far above the start the goroutine count
	// may end: a timer or a gRPC transport goroutine still on its way out.
	soakGoroutineSlack = 10
	// soakDefault is the length of a run without SWITCHBOARD_SOAK: short
	// enough for CI's one pass over the benchmarks.
	soakDefault = 3 * time.Second
)

// soakChannels are the channels browsers subscribe to, each with
// probability 1/3 when they join.
var soakChannels = []string{"soak-a", "soak-b", "soak-c", "soak-d"}

const mib = 1 << 20

// BenchmarkSoak runs one soak of SWITCHBOARD_SOAK (a Go duration, default
// 3s) whatever b.N is:
//
//	SWITCHBOARD_SOAK=10m go test -run '^$' -bench Soak -benchtime=1x -timeout 20m ./pkg/server/
//
// A node on loopback holds soakPopulation browsers; every soakTick one in
// soakChurn of them leaves (half with a close handshake, half by dropping
// the TCP connection), as many join, and as many others subscribe to or
// unsubscribe from a channel. A web server on pkg/client emits
// soakEmitRate messages a second, half to everyone and half to channels.
// Every browser reads every frame and checks that message ids (s1, s2,
// ...) only grow and that it missed no broadcast since its first.
//
// Each second it samples the process's RSS (the load generator included),
// the heap in use, the goroutines and the hub's counts, and logs them. At
// the end of the warm-up (the first fifth of the run), every minute and at
// the end, it pauses the churn and checks that the counts (hub, gRPC,
// gauges, each browser's last count frame) equal the browsers open and
// that each of them still receives. It fails when the heap after GC grew
// by more than half (or 20 MB, whichever is larger) between the end of the
// warm-up and the end, when the RSS grew by as much, or when, once every
// browser is closed, the count is not 0 or the goroutines do not come back
// to where they started within 5 s.
func BenchmarkSoak(b *testing.B) {
	d := soakDefault
	if v := os.Getenv("SWITCHBOARD_SOAK"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 {
			b.Fatalf("SWITCHBOARD_SOAK=%q: want a positive duration such as 3s or 10m", v)
		}
	}
	b.ReportAllocs()
	baseGoroutines := runtime.NumGoroutine()

	n := startNode(b, Config{
		Logger: testLogger(b, slog.LevelWarn),
		Limits: Limits{MaxConnsPerIP: -1}, // every browser comes from 127.0.0.1
	})
	web, err := client.Dial(n.srv.GRPCAddr(), client.WithLogger(testLogger(b, slog.LevelWarn)))
	if err != nil {
		b.Fatalf("client.Dial: got %v; want nil", err)
	}
	defer web.Close()
	s := &soak{
		b:   b,
		hub: n.srv.Hub(),
		reg: n.srv.Registry(),
		web: web,
		url: n.ws,
		hc:  &http.Client{Transport: &http.Transport{}},
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x50a4)),
	}
	defer s.hc.CloseIdleConnections()
	defer s.closeAll() // after a failure; a no-op after the teardown
	s.frames = make(map[string][2][]byte, len(soakChannels))
	for _, ch := range soakChannels {
		s.frames[ch] = [2][]byte{
			fmt.Appendf(nil, `{"type":"unsubscribe","channel":%q}`, ch),
			fmt.Appendf(nil, `{"type":"subscribe","channel":%q}`, ch),
		}
	}
	s.checkCounts(0, nil) // connects the web server too
	startGoroutines := runtime.NumGoroutine()
	b.Logf("soak %v: %d browsers, %d%% churn every %v, %d messages/s; before the browsers: rss %.1f MB, %d goroutines (%d before the node)",
		d, soakPopulation, 100/soakChurn, soakTick, soakEmitRate, float64(rss())/mib, startGoroutines, baseGoroutines)
	b.ResetTimer()

	for range soakPopulation {
		s.join()
	}
	s.dialing.Wait()
	s.checkpoint("connected")

	emitCtx, stopEmitting := context.WithCancel(context.Background())
	defer stopEmitting()
	emitted := make(chan struct{})
	go func() {
		defer close(emitted)
		s.emit(emitCtx)
	}()

	var (
		samples   []soakSample
		heapWarm  uint64
		rssWarm   uint64
		start     = time.Now()
		end       = start.Add(d)
		warm      = start.Add(d / 5)
		warmed    = false
		nextCheck = start.Add(time.Minute)
		next      = start.Add(time.Second)
	)
	defer func() { s.log(samples, d) }() // a failure included
	samples = append(samples, s.sample(0))
	tick := time.NewTicker(soakTick)
	for now := range tick.C {
		if !now.Before(end) {
			break
		}
		s.churn()
		switch {
		case !warmed && !now.Before(warm):
			s.checkpoint("warm-up")
			heapWarm, rssWarm = heapAfterGC(), rss()
			warmed = true
			nextCheck = time.Now().Add(time.Minute)
		case !now.Before(nextCheck):
			s.checkpoint(fmt.Sprintf("t=%v", now.Sub(start).Round(time.Second)))
			nextCheck = nextCheck.Add(time.Minute)
		}
		if now := time.Now(); !now.Before(next) {
			samples = append(samples, s.sample(now.Sub(start)))
			for !next.After(now) {
				next = next.Add(time.Second)
			}
		}
	}
	tick.Stop()
	if !warmed { // a run shorter than a few ticks
		heapWarm, rssWarm = heapAfterGC(), rss()
	}

	// The end, churn stopped and messages still flowing.
	s.checkpoint("end")
	heapEnd, rssEnd := heapAfterGC(), rss()
	last := s.sample(time.Since(start))
	last.heap, last.rss = heapEnd, rssEnd
	samples = append(samples, last)
	stopEmitting()
	<-emitted
	emitting := time.Since(start)
	b.StopTimer()

	// Every browser leaves: the count must come back to exactly 0 and the
	// goroutines to where they were before the first browser.
	s.closeAll()
	s.checkpoint("closed")
	s.hc.CloseIdleConnections()
	endGoroutines, ok := waitGoroutines(startGoroutines + soakGoroutineSlack)
	if !ok {
		b.Errorf("goroutines with every browser closed: got %d; want at most %d (%d at the start + %d)\n%s",
			endGoroutines, startGoroutines+soakGoroutineSlack, startGoroutines, soakGoroutineSlack, goroutineDump())
	}

	st := s.hub.Stats()
	b.Logf("churn: %d joined, %d left; emitted %d messages (%.1f/s); browsers read %d message frames; hub: %d delivered, %d dropped closed, %d slow disconnects, %d write failures; %d count checks passed",
		s.joined, s.left, s.emitted.Load(), float64(s.emitted.Load())/emitting.Seconds(), s.received.Load(),
		st.Delivered.Load(), st.DroppedClosed.Load(), st.SlowDisconnects.Load(), st.WriteFailures.Load(), len(s.checks))
	rssMax := uint64(0)
	for _, sm := range samples {
		rssMax = max(rssMax, sm.rss)
	}
	heapGrowth := float64(int64(heapEnd)-int64(heapWarm)) / mib
	rssGrowth := float64(int64(rssEnd)-int64(rssWarm)) / mib
	b.Logf("after warm-up (GC): heap %.1f MB, rss %.1f MB; at the end (GC): heap %.1f MB (%+.1f MB), rss %.1f MB (%+.1f MB)",
		float64(heapWarm)/mib, float64(rssWarm)/mib, float64(heapEnd)/mib, heapGrowth, float64(rssEnd)/mib, rssGrowth)
	b.ReportMetric(float64(samples[0].rss)/mib, "rss_start_MB")
	b.ReportMetric(float64(rssEnd)/mib, "rss_end_MB")
	b.ReportMetric(float64(rssMax)/mib, "rss_max_MB")
	b.ReportMetric(float64(startGoroutines), "goroutines_start")
	b.ReportMetric(float64(endGoroutines), "goroutines_end")
	b.ReportMetric(heapGrowth, "heap_growth_MB")

	if limit := max(heapWarm/2, 20*mib); heapEnd > heapWarm+limit {
		b.Errorf("heap in use after GC: grew from %.1f MB to %.1f MB; want less than %.1f MB of growth",
			float64(heapWarm)/mib, float64(heapEnd)/mib, float64(limit)/mib)
	}
	if raceEnabled() {
		b.Log("-race: RSS growth not checked, the race runtime's own memory grows with every goroutine started (golang/go#63276)")
	}
	// The race runtime's own memory, outside the Go heap, grows with
	// every goroutine ever started (golang/go#63276): under -race the RSS
	// says nothing of the node.
	if limit := max(rssWarm/2, 20*mib); rssWarm > 0 && rssEnd > rssWarm+limit && !raceEnabled() {
		b.Errorf("RSS: grew from %.1f MB to %.1f MB; want less than %.1f MB of growth",
			float64(rssWarm)/mib, float64(rssEnd)/mib, float64(limit)/mib)
	}
	s.report()

	// Nothing of the node outlives it.
	if err := web.Close(); err != nil {
		b.Errorf("web.Close: got %v; want nil", err)
	}
	if err := n.stop(b); err != nil {
		b.Errorf("Run: got %v; want nil", err)
	}
	n.conn.Close()
	n.hc.CloseIdleConnections()
	if got, ok := waitGoroutines(baseGoroutines + soakGoroutineSlack); !ok {
		b.Errorf("goroutines once the node stopped: got %d; want at most %d (%d before it + %d)\n%s",
			got, baseGoroutines+soakGoroutineSlack, baseGoroutines, soakGoroutineSlack, goroutineDump())
	}
}

// soak is the load generator and its findings.
type soak struct {
	b      *testing.B
	hub    *hub.Hub
	reg    *prometheus.Registry
	web    *client.Client
	url    string
	hc     *http.Client
	frames map[string][2][]byte // by channel: unsubscribe, subscribe

	// The churn loop's own.
	rng            *rand.Rand
	joined, left   int
	leaving, flips []*soakClient
	checks         []soakCheck

	mu   sync.Mutex
	open []*soakClient // browsers connected and not told to leave

	pending atomic.Int64   // dials in flight
	dialing sync.WaitGroup // dials in flight
	running sync.WaitGroup // browsers' goroutines and closes in flight

	emitted       atomic.Int64 // messages emitted
	lastBroadcast atomic.Int64 // id of the last message emitted to everyone
	received      atomic.Int64 // message frames read by browsers that have ended

	faults   [numFaults]atomic.Int64
	faultMu  sync.Mutex
	examples []string // the first few faults
}

// soakClient is one browser. Its goroutine dials, subscribes, then reads
// every frame into one reused buffer until the connection ends.
type soakClient struct {
	ws      *websocket.Conn
	subs    map[string]bool // its channels; the churn loop's once open
	leaving atomic.Bool     // the churn closes it: its end is expected

	lastSeq   atomic.Int64 // highest message id read
	lastCount atomic.Int64 // connections in the last count frame; -1 before one

	// The reader's own.
	lastBroadcast int64
	received      int64
}

type soakFault int

const (
	faultDial soakFault = iota
	faultWrite
	faultEnd
	faultFrame
	faultDuplicate
	faultOrder
	faultLost
	faultEmit
	numFaults
)

var faultNames = [numFaults]string{"dial", "write", "unexpected end", "bad frame", "duplicate", "out of order", "lost broadcast", "emit"}

// fault records a failure seen off the benchmark's goroutine.
func (s *soak) fault(k soakFault, format string, args ...any) {
	s.faults[k].Add(1)
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if len(s.examples) < 20 {
		s.examples = append(s.examples, faultNames[k]+": "+fmt.Sprintf(format, args...))
	}
}

// report fails the benchmark for every fault recorded.
func (s *soak) report() {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	for k := range s.faults {
		if n := s.faults[k].Load(); n > 0 {
			s.b.Errorf("%s: %d times", faultNames[k], n)
		}
	}
	for _, e := range s.examples {
		s.b.Log(e)
	}
}

// join starts a browser subscribed to a random third of the channels.
func (s *soak) join() {
	subs := make(map[string]bool, len(soakChannels))
	for _, ch := range soakChannels {
		if s.rng.IntN(3) == 0 {
			subs[ch] = true
		}
	}
	s.joined++
	s.pending.Add(1)
	s.dialing.Add(1)
	s.running.Add(1)
	go s.run(&soakClient{subs: subs})
}

func (s *soak) run(c *soakClient) {
	defer s.running.Done()
	c.lastCount.Store(-1)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	ws, _, err := websocket.Dial(ctx, s.url, &websocket.DialOptions{HTTPClient: s.hc})
	for ch := range c.subs {
		if err != nil {
			break
		}
		err = ws.Write(ctx, websocket.MessageText, s.frames[ch][1])
	}
	cancel()
	if err != nil {
		s.fault(faultDial, "%v", err)
		if ws != nil {
			ws.CloseNow()
		}
		s.pending.Add(-1)
		s.dialing.Done()
		return
	}
	c.ws = ws
	s.mu.Lock()
	s.open = append(s.open, c)
	s.mu.Unlock()
	s.pending.Add(-1)
	s.dialing.Done()

	var buf bytes.Buffer
	for {
		typ, r, err := ws.Reader(context.Background())
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			if !c.leaving.Load() {
				s.fault(faultEnd, "browser ended while it should be open: %v", err)
			}
			s.received.Add(c.received)
			return
		}
		s.read(c, typ, buf.Bytes())
	}
}

var (
	soakWelcomePrefix = []byte(`{"type":"welcome",`)
	soakCountPrefix   = []byte(`{"type":"count","connections":`)
	soakMessagePrefix = []byte(`{"type":"message","id":"s`)
)

// read checks one frame: the welcome, a count, or a message whose id is
// s<seq>, seq growing by one with each emit and even for the ones to
// everyone.
func (s *soak) read(c *soakClient, typ websocket.MessageType, p []byte) {
	if typ != websocket.MessageText {
		s.fault(faultFrame, "binary frame %q", p)
		return
	}
	if bytes.HasPrefix(p, soakWelcomePrefix) {
		return // the first frame, before any count or message
	}
	if rest, ok := bytes.CutPrefix(p, soakCountPrefix); ok {
		n, ok := leadingInt(rest, ',')
		if !ok {
			s.fault(faultFrame, "%s", p)
			return
		}
		c.lastCount.Store(n)
		return
	}
	rest, ok := bytes.CutPrefix(p, soakMessagePrefix)
	if !ok {
		s.fault(faultFrame, "%s", p)
		return
	}
	seq, ok := leadingInt(rest, '"')
	if !ok {
		s.fault(faultFrame, "%s", p)
		return
	}
	c.received++
	switch last := c.lastSeq.Load(); {
	case seq == last:
		s.fault(faultDuplicate, "message s%d read twice", seq)
	case seq < last:
		s.fault(faultOrder, "message s%d read after s%d", seq, last)
	default:
		c.lastSeq.Store(seq)
	}
	if seq%2 == 0 {
		if c.lastBroadcast != 0 && seq > c.lastBroadcast+2 {
			s.fault(faultLost, "broadcasts s%d to s%d never read; s%d was", c.lastBroadcast+2, seq-2, seq)
		}
		c.lastBroadcast = max(c.lastBroadcast, seq)
	}
}

// leadingInt parses the decimal digits in p before end.
func leadingInt(p []byte, end byte) (int64, bool) {
	var n int64
	for i, ch := range p {
		switch {
		case ch == end:
			return n, i > 0
		case ch < '0' || ch > '9':
			return 0, false
		}
		n = n*10 + int64(ch-'0')
	}
	return 0, false
}

// churn makes one browser in soakChurn leave, as many others change a
// channel, and new ones join up to soakPopulation.
func (s *soak) churn() {
	s.mu.Lock()
	k := max(1, len(s.open)/soakChurn)
	s.leaving = s.leaving[:0]
	for range min(k, len(s.open)) {
		s.leaving = append(s.leaving, s.removeLocked(s.rng.IntN(len(s.open))))
	}
	s.flips = s.flips[:0]
	for range min(k, len(s.open)) {
		s.flips = append(s.flips, s.open[s.rng.IntN(len(s.open))])
	}
	missing := soakPopulation - len(s.open) - int(s.pending.Load())
	s.mu.Unlock()

	for i, c := range s.leaving {
		s.leave(c, i%2 == 0)
	}
	for _, c := range s.flips {
		ch := soakChannels[s.rng.IntN(len(soakChannels))]
		sub := !c.subs[ch]
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		err := c.ws.Write(ctx, websocket.MessageText, s.frames[ch][b2i(sub)])
		cancel()
		if err != nil {
			s.fault(faultWrite, "%v", err)
			continue
		}
		if sub {
			c.subs[ch] = true
		} else {
			delete(c.subs, ch)
		}
	}
	for range missing {
		s.join()
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// removeLocked takes the browser at i out of s.open.
func (s *soak) removeLocked(i int) *soakClient {
	c := s.open[i]
	last := len(s.open) - 1
	s.open[i] = s.open[last]
	s.open[last] = nil
	s.open = s.open[:last]
	return c
}

// closeAll closes every browser, half of them abruptly, and waits for
// their goroutines to end.
func (s *soak) closeAll() {
	s.dialing.Wait()
	s.mu.Lock()
	all := s.open
	s.open = nil
	s.mu.Unlock()
	for i, c := range all {
		s.leave(c, i%2 == 0)
	}
	s.running.Wait()
}

// leave closes c, abruptly or with a close handshake.
func (s *soak) leave(c *soakClient, abrupt bool) {
	s.left++
	c.leaving.Store(true)
	if abrupt {
		c.ws.CloseNow()
		return
	}
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		c.ws.Close(websocket.StatusGoingAway, "")
	}()
}

// emit is the web server: soakEmitRate messages a second until ctx ends,
// each waiting for the previous, so that the ids' order is the node's.
func (s *soak) emit(ctx context.Context) {
	data := structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
		"text": structpb.NewStringValue(strings.Repeat("soak ", 20)),
	}})
	tick := time.NewTicker(time.Second / soakEmitRate)
	defer tick.Stop()
	for seq := int64(1); ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		opts := []client.EmitOption{client.WithIdempotencyKey("s" + strconv.FormatInt(seq, 10))}
		if seq%2 == 1 {
			opts = append(opts, client.ToChannel(soakChannels[(seq/2)%int64(len(soakChannels))]))
		}
		ectx, cancel := context.WithTimeout(ctx, waitTimeout)
		_, err := s.web.Emit(ectx, "Soak", data, opts...)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.fault(faultEmit, "s%d: %v", seq, err)
			}
			return
		}
		s.emitted.Add(1)
		if seq%2 == 0 {
			s.lastBroadcast.Store(seq)
		}
	}
}

// checkpoint waits for the browsers joining, then checks that every count
// equals the browsers open, that each of them was told that count, and
// that each still receives messages.
func (s *soak) checkpoint(name string) {
	s.b.Helper()
	start := time.Now()
	s.dialing.Wait()
	s.mu.Lock()
	open := slices.Clone(s.open)
	s.mu.Unlock()
	want := int64(len(open))
	channels := make(map[string]int64, len(soakChannels))
	for _, c := range open {
		for ch := range c.subs {
			channels[ch]++
		}
	}
	s.checkCounts(want, channels)
	eventually(s.b, waitTimeout, func() (bool, string) {
		for i, c := range open {
			if got := c.lastCount.Load(); got != want {
				return false, fmt.Sprintf("%s: browser %d's last count frame: got %d; want %d", name, i, got, want)
			}
		}
		return true, ""
	})
	seq := s.lastBroadcast.Load()
	if seq > 0 && len(open) > 0 {
		eventually(s.b, waitTimeout, func() (bool, string) {
			for i, c := range open {
				if got := c.lastSeq.Load(); got < seq {
					return false, fmt.Sprintf("%s: browser %d's last message: got s%d; want s%d or later", name, i, got, seq)
				}
			}
			return true, ""
		})
	}
	s.checks = append(s.checks, soakCheck{name: name, browsers: want, channels: channels, receiving: seq > 0 && len(open) > 0, took: time.Since(start)})
}

// soakCheck is a checkpoint passed.
type soakCheck struct {
	name      string
	browsers  int64
	channels  map[string]int64
	receiving bool // each browser was seen to receive a message
	took      time.Duration
}

// checkCounts waits until the hub, the gRPC API and the gauges all count
// want browsers, channels[ch] in each channel.
func (s *soak) checkCounts(want int64, channels map[string]int64) {
	s.b.Helper()
	var subs, nonEmpty int64
	for _, n := range channels {
		subs += n
		nonEmpty += b2i64(n > 0)
	}
	eventually(s.b, waitTimeout, func() (bool, string) {
		if got := s.hub.Count(""); got != want {
			return false, fmt.Sprintf("hub.Count(\"\"): got %d; want %d", got, want)
		}
		for _, ch := range soakChannels {
			if got := s.hub.Count(ch); got != channels[ch] {
				return false, fmt.Sprintf("hub.Count(%q): got %d; want %d", ch, got, channels[ch])
			}
		}
		gauges, err := gatherGauges(s.reg)
		if err != nil {
			return false, err.Error()
		}
		for _, g := range []struct {
			name string
			want int64
		}{
			{"switchboard_connections", want},
			{"switchboard_local_connections", want},
			{"switchboard_subscriptions", subs},
			{"switchboard_channels", nonEmpty},
		} {
			if got := gauges[g.name]; got != float64(g.want) {
				return false, fmt.Sprintf("%s: got %v; want %d", g.name, got, g.want)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if got, err := s.web.Count(ctx, ""); got != want || err != nil {
			return false, fmt.Sprintf("GetOnlineCount: got %d, %v; want %d", got, err, want)
		}
		return true, ""
	})
}

func b2i64(b bool) int64 { return int64(b2i(b)) }

// gatherGauges returns the value of every unlabelled gauge in reg.
func gatherGauges(reg *prometheus.Registry) (map[string]float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("failed to gather metrics: %w", err)
	}
	gauges := make(map[string]float64, len(mfs))
	for _, mf := range mfs {
		if m := mf.GetMetric(); len(m) == 1 && m[0].GetGauge() != nil {
			gauges[mf.GetName()] = m[0].GetGauge().GetValue()
		}
	}
	return gauges, nil
}

// soakSample is the state of the process and the node at one moment.
type soakSample struct {
	at         time.Duration
	rss, heap  uint64 // bytes
	goroutines int
	open       int   // browsers the load generator holds open
	dialing    int64 // browsers joining
	count      int64 // hub.Count("")
	subs, chs  int64 // the hub's subscriptions and channels
	delivered  int64 // message frames the hub has queued
}

func (s *soak) sample(at time.Duration) soakSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.mu.Lock()
	open := len(s.open)
	s.mu.Unlock()
	st := s.hub.Stats()
	return soakSample{
		at:         at,
		rss:        rss(),
		heap:       ms.HeapInuse,
		goroutines: runtime.NumGoroutine(),
		open:       open,
		dialing:    s.pending.Load(),
		count:      s.hub.Count(""),
		subs:       st.Subscriptions.Load(),
		chs:        st.Channels.Load(),
		delivered:  st.Delivered.Load(),
	}
}

// log prints the series, one line a sample, or every tenth one past 100
// samples. It goes to stdout, not to b.Log: testing cuts the log of a
// benchmark that passes to 10 lines.
func (s *soak) log(samples []soakSample, d time.Duration) {
	every := 1
	if len(samples) > 100 {
		every = 10
	}
	var out strings.Builder
	fmt.Fprintf(&out, "BenchmarkSoak: %v, every %ds (last: after GC)\n%7s %8s %8s %6s %5s %4s %5s %5s %3s %10s", d, every, "t", "rss_MB", "heap_MB", "gor", "open", "dial", "count", "subs", "chs", "delivered")
	for i, sm := range samples {
		if i%every != 0 && i != len(samples)-1 {
			continue
		}
		fmt.Fprintf(&out, "\n%7s %8.1f %8.1f %6d %5d %4d %5d %5d %3d %10d", sm.at.Round(time.Second), float64(sm.rss)/mib, float64(sm.heap)/mib,
			sm.goroutines, sm.open, sm.dialing, sm.count, sm.subs, sm.chs, sm.delivered)
	}
	for _, c := range s.checks {
		fmt.Fprintf(&out, "\ncheckpoint %-8s %3d browsers, channels", c.name+":", c.browsers)
		for _, ch := range soakChannels {
			fmt.Fprintf(&out, " %d", c.channels[ch])
		}
		fmt.Fprint(&out, ": hub, gRPC, gauges and count frames exact")
		if c.receiving {
			fmt.Fprint(&out, ", every browser receiving")
		}
		fmt.Fprintf(&out, " (%v)", c.took.Round(time.Millisecond))
	}
	fmt.Fprintf(os.Stdout, "%s\n", out.String())
}

// rss returns the process's resident set size (VmRSS), or 0 where
// /proc/self/status is missing.
func rss() uint64 {
	p, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(p)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// raceEnabled reports whether the binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, st := range bi.Settings {
		if st.Key == "-race" {
			return st.Value == "true"
		}
	}
	return false
}

// heapAfterGC collects garbage and returns the heap in use.
func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// waitGoroutines waits up to 5 s for the goroutines to number at most
// limit, and returns the last count.
func waitGoroutines(limit int) (int, bool) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= limit {
			return n, true
		}
		if time.Now().After(deadline) {
			return n, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// goroutineDump returns the stacks of every goroutine, cut to 32 KB.
func goroutineDump() string {
	buf := make([]byte, 32<<10)
	return string(buf[:runtime.Stack(buf, true)])
}
