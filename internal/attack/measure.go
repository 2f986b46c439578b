package attack

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
)

// ProbeEvent is the event of the messages a Publisher emits.
const ProbeEvent = "Probe"

// Emit is one message a Publisher emitted.
type Emit struct {
	Seq  int64
	Sent time.Time // when the call started
	Err  error
}

// Receipt is one message a bystander received.
type Receipt struct {
	Seq int64
	At  time.Time
}

// Publisher emits a message of event ProbeEvent to every browser at a
// steady rate, as a web server would, recording each emit. Its data is
// {"seq": N, "sent": unix milliseconds, "pad": "xxx…"}.
type Publisher struct {
	// GRPC is the node's gRPC address, From the source address.
	GRPC, From string
	// Token is the node's API token, if it has one.
	Token string
	// Rate is emits per second. Default: 10.
	Rate float64
	// Bytes is the approximate size of each message's data. Default: 64.
	Bytes int

	mu    sync.Mutex
	emits []Emit
}

// Run emits until ctx ends.
func (p *Publisher) Run(ctx context.Context) error {
	cc, err := grpcConn(Target{GRPC: p.GRPC, From: p.From})
	if err != nil {
		return err
	}
	defer cc.Close()
	api := switchboardv1.NewSwitchboardServiceClient(cc)
	if p.Token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+p.Token)
	}
	rate := p.Rate
	if rate <= 0 {
		rate = 10
	}
	pad := structpb.NewStringValue(strings.Repeat("x", max(0, p.Bytes-40)))
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for seq := int64(1); ; seq++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		sent := time.Now()
		data := structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"seq":  structpb.NewNumberValue(float64(seq)),
			"sent": structpb.NewNumberValue(float64(sent.UnixMilli())),
			"pad":  pad,
		}})
		// In flight at once, so that a slow answer does not delay the
		// next emit.
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := api.EmitMessage(cctx, &switchboardv1.EmitMessageRequest{Event: ProbeEvent, Data: data})
			if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			p.emits = append(p.emits, Emit{Seq: seq, Sent: sent, Err: err})
			p.mu.Unlock()
		}()
	}
}

// Emits returns the emits so far, by sequence number.
func (p *Publisher) Emits() []Emit {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := slices.Clone(p.emits)
	slices.SortFunc(e, func(a, b Emit) int { return int(a.Seq - b.Seq) })
	return e
}

// Bystander is a browser stand-in that reads every frame and records the
// Publisher's messages as they arrive.
type Bystander struct {
	ws *websocket.Conn

	mu       sync.Mutex
	receipts []Receipt
	err      error
	done     chan struct{}
}

// Connect connects a bystander to the node's /ws at httpAddr from the
// address from, sending origin as its Origin if set.
func Connect(ctx context.Context, httpAddr, from, origin string) (*Bystander, error) {
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return dialFrom(ctx, from, addr) },
	}}
	var hdr http.Header
	if origin != "" {
		hdr = http.Header{"Origin": {origin}}
	}
	ws, _, err := websocket.Dial(ctx, "ws://"+httpAddr+"/ws", &websocket.DialOptions{HTTPClient: hc, HTTPHeader: hdr})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(1 << 20)
	b := &Bystander{ws: ws, done: make(chan struct{})}
	go b.read()
	return b, nil
}

func (b *Bystander) read() {
	defer close(b.done)
	for {
		_, p, err := b.ws.Read(context.Background())
		if err != nil {
			b.mu.Lock()
			b.err = err
			b.mu.Unlock()
			return
		}
		if seq, ok := ProbeSeq(p); ok {
			b.mu.Lock()
			b.receipts = append(b.receipts, Receipt{Seq: seq, At: time.Now()})
			b.mu.Unlock()
		}
	}
}

// ProbeSeq returns the sequence number of a Publisher's message frame.
func ProbeSeq(frame []byte) (int64, bool) {
	var f struct {
		Type  string
		Event string
		Data  struct{ Seq float64 }
	}
	if json.Unmarshal(frame, &f) != nil || f.Type != "message" || f.Event != ProbeEvent {
		return 0, false
	}
	return int64(f.Data.Seq), true
}

// Receipts returns what the bystander has received so far.
func (b *Bystander) Receipts() []Receipt {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.receipts)
}

// Err returns why the connection ended, or nil while it is open.
func (b *Bystander) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Close closes the connection.
func (b *Bystander) Close() {
	b.ws.CloseNow()
	<-b.done
}

// Delays sums up how the messages emitted in a window reached a bystander.
type Delays struct {
	// Emitted counts the messages emitted in the window, Missing those
	// the bystander never received.
	Emitted, Missing int
	// P50, P99 and Max are the delays between emit and receipt of the
	// messages received.
	P50, P99, Max time.Duration
}

func (d Delays) String() string {
	return fmt.Sprintf("%d emitted, %d missing, delay p50 %v, p99 %v, max %v",
		d.Emitted, d.Missing, d.P50.Round(time.Millisecond), d.P99.Round(time.Millisecond), d.Max.Round(time.Millisecond))
}

// MeasureDelays matches the emits sent in [from, to) with the receipts.
func MeasureDelays(emits []Emit, got []Receipt, from, to time.Time) Delays {
	at := make(map[int64]time.Time, len(got))
	for _, r := range got {
		if _, ok := at[r.Seq]; !ok {
			at[r.Seq] = r.At
		}
	}
	var d Delays
	var delays []time.Duration
	for _, e := range emits {
		if e.Sent.Before(from) || !e.Sent.Before(to) || e.Err != nil {
			continue
		}
		d.Emitted++
		r, ok := at[e.Seq]
		if !ok {
			d.Missing++
			continue
		}
		delays = append(delays, r.Sub(e.Sent))
	}
	if len(delays) == 0 {
		return d
	}
	slices.Sort(delays)
	d.P50 = delays[len(delays)/2]
	d.P99 = delays[min(len(delays)-1, len(delays)*99/100)]
	d.Max = delays[len(delays)-1]
	return d
}

// Sample is the node's state at one moment; a value it could not read
// is -1.
type Sample struct {
	At    time.Time
	Phase string
	// RSS and Heap are in bytes: the resident set, and the Go heap in use
	// (go_memstats_heap_inuse_bytes).
	RSS, Heap int64
	// Goroutines is go_goroutines, FDs the open file descriptors.
	Goroutines, FDs int64
	// CPU is the process's user and system time so far, in seconds.
	CPU float64
}

// Sampler samples a node process (by its pid, through /proc) and its
// /metrics, every Interval, each sample labeled with the phase set last.
type Sampler struct {
	// PID is the node's process; 0 samples no process.
	PID int
	// Metrics is the URL of the node's /metrics; empty samples none.
	Metrics string
	// From is the source address of the scrapes.
	From string
	// Interval between samples. Default: 200ms.
	Interval time.Duration

	mu      sync.Mutex
	phase   string
	samples []Sample
	hc      *http.Client
}

// SetPhase labels the samples from now on.
func (s *Sampler) SetPhase(p string) {
	s.mu.Lock()
	s.phase = p
	s.mu.Unlock()
}

// Run samples until ctx ends.
func (s *Sampler) Run(ctx context.Context) {
	s.hc = s.client()
	interval := s.Interval
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	for {
		s.sample()
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

func (s *Sampler) sample() {
	smp := Sample{At: time.Now(), RSS: -1, Heap: -1, Goroutines: -1, FDs: -1, CPU: -1}
	if s.PID > 0 {
		smp.RSS = procStatus(s.PID, "VmRSS:") * 1024
		smp.CPU = ProcCPU(s.PID)
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.PID)); err == nil {
			smp.FDs = int64(len(ents))
		}
	}
	if s.Metrics != "" {
		m := s.Scrape()
		if v, ok := m["go_memstats_heap_inuse_bytes"]; ok {
			smp.Heap = int64(v)
		}
		if v, ok := m["go_goroutines"]; ok {
			smp.Goroutines = int64(v)
		}
	}
	s.mu.Lock()
	smp.Phase = s.phase
	s.samples = append(s.samples, smp)
	s.mu.Unlock()
}

// Scrape reads the node's /metrics once (see ParseMetrics); nil if it
// cannot.
func (s *Sampler) Scrape() map[string]float64 {
	if s.hc == nil {
		s.hc = s.client()
	}
	resp, err := s.hc.Get(s.Metrics)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return ParseMetrics(b)
}

// ParseMetrics reads the samples of a Prometheus text exposition, keyed
// by name and labels as written ("go_goroutines",
// `switchboard_limit_rejections_total{limit="frame_rate"}`).
func ParseMetrics(b []byte) map[string]float64 {
	m := make(map[string]float64)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

func (s *Sampler) client() *http.Client {
	return &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return dialFrom(ctx, s.From, addr) },
	}}
}

// Samples returns the samples so far.
func (s *Sampler) Samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.samples)
}

// Peak sums up the samples of one phase: the largest of each value, and
// the CPU time spent during it.
type Peak struct {
	Phase           string
	RSS, Heap       int64
	Goroutines, FDs int64
	CPU             float64 // seconds of CPU between the first and last sample
	Samples         int
	Last            Sample // the phase's last sample
	firstCPU        float64
}

// Peaks returns the Peak of each phase, in the order phases began.
func (s *Sampler) Peaks() []Peak {
	var out []Peak
	idx := map[string]int{}
	for _, smp := range s.Samples() {
		i, ok := idx[smp.Phase]
		if !ok {
			i = len(out)
			idx[smp.Phase] = i
			out = append(out, Peak{Phase: smp.Phase, RSS: -1, Heap: -1, Goroutines: -1, FDs: -1, firstCPU: smp.CPU})
		}
		p := &out[i]
		p.Samples++
		p.Last = smp
		p.RSS, p.Heap = max(p.RSS, smp.RSS), max(p.Heap, smp.Heap)
		p.Goroutines, p.FDs = max(p.Goroutines, smp.Goroutines), max(p.FDs, smp.FDs)
		if smp.CPU >= 0 {
			p.CPU = smp.CPU - p.firstCPU
		}
	}
	return out
}

func (p Peak) String() string {
	mib := func(v int64) string {
		if v < 0 {
			return "?"
		}
		return fmt.Sprintf("%.0f MiB", float64(v)/(1<<20))
	}
	num := func(v int64) string {
		if v < 0 {
			return "?"
		}
		return strconv.FormatInt(v, 10)
	}
	return fmt.Sprintf("%-7s RSS %s, heap %s, goroutines %s, fds %s, CPU %.2fs over %d samples",
		p.Phase, mib(p.RSS), mib(p.Heap), num(p.Goroutines), num(p.FDs), p.CPU, p.Samples)
}

// procStatus reads a "Name: value kB" line of /proc/pid/status; -1 if it
// cannot.
func procStatus(pid int, name string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	i := bytes.Index(b, []byte(name))
	if i < 0 {
		return -1
	}
	f := bytes.Fields(b[i+len(name):])
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseInt(string(f[0]), 10, 64)
	if err != nil {
		return -1
	}
	return v
}

// ProcCPU returns a process's user and system CPU seconds from
// /proc/pid/stat, or -1.
func ProcCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return -1
	}
	u, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	s, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return float64(u+s) / 100 // USER_HZ
}

// Probe times what a newcomer gets while an attack runs: a fresh
// connection's GET /healthz, WebSocket upgrade, and gRPC GetOnlineCount,
// each from the address from and bounded by timeout.
type Probe struct {
	Healthz, Upgrade, GRPC time.Duration // -1: failed or timed out
}

func (p Probe) String() string {
	f := func(d time.Duration) string {
		if d < 0 {
			return "failed"
		}
		return d.Round(100 * time.Microsecond).String()
	}
	return fmt.Sprintf("new /healthz %s, new /ws %s, new gRPC call %s", f(p.Healthz), f(p.Upgrade), f(p.GRPC))
}

// ProbeNode runs one Probe.
func ProbeNode(ctx context.Context, t Target, token string, timeout time.Duration) Probe {
	timed := func(fn func(ctx context.Context) error) time.Duration {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		if fn(ctx) != nil {
			return -1
		}
		return time.Since(start)
	}
	var p Probe
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.Upgrade = timed(func(ctx context.Context) error {
			c, _, answer := upgrade(ctx, t, nil)
			if c == nil {
				return fmt.Errorf("upgrade: %s", answer)
			}
			return c.Close()
		})
	}()
	go func() {
		defer wg.Done()
		p.GRPC = timed(func(ctx context.Context) error {
			cc, err := grpcConn(t)
			if err != nil {
				return err
			}
			defer cc.Close()
			if token != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
			}
			_, err = switchboardv1.NewSwitchboardServiceClient(cc).GetOnlineCount(ctx, &switchboardv1.GetOnlineCountRequest{})
			return err
		})
	}()
	p.Healthz = timed(func(ctx context.Context) error {
		c, err := t.dial(ctx, t.HTTP)
		if err != nil {
			return err
		}
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
		defer stop()
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: "+t.HTTP+"\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	wg.Wait()
	return p
}
