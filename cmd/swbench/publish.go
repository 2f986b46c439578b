//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
)

// event is the event every message is emitted as, as the original site did.
const event = "ShowMessage"

// publisher publishes messages to one kind of server and asks it for its
// count.
type publisher interface {
	// emit publishes message seq stamped t (unix nanos) and returns the
	// number of recipients the server reported.
	emit(ctx context.Context, seq int, t int64) (int64, error)
	// count returns the server's connection count (Switchboard only).
	count(ctx context.Context) (int64, error)
	// waitSubscribed waits until channel has n subscribers.
	waitSubscribed(ctx context.Context, channel string, n int64, timeout time.Duration) error
	close()
}

func newPublisher(cfg Config) (publisher, error) {
	pad := strings.Repeat("x", max(0, cfg.Payload-45))
	if cfg.Target == TargetSocketIO {
		return &httpPublisher{
			url: strings.TrimSuffix(cfg.URL, "/"),
			pad: pad,
			client: &http.Client{
				Timeout: cfg.Timeout,
				Transport: &http.Transport{
					MaxIdleConns:        cfg.Inflight + 4,
					MaxIdleConnsPerHost: cfg.Inflight + 4,
					IdleConnTimeout:     time.Minute,
				},
			},
		}, nil
	}
	// The generated stub rather than pkg/client: it takes a ready
	// structpb.Value, which saves a JSON round trip per emit on the load
	// side.
	p := &grpcPublisher{
		pad:     structpb.NewStringValue(pad),
		channel: cfg.Channel,
		timeout: cfg.Timeout,
	}
	for _, addr := range splitList(cfg.GRPCAddr) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			p.close()
			return nil, fmt.Errorf("failed to dial gRPC %s: %w", addr, err)
		}
		p.ccs = append(p.ccs, cc)
		p.apis = append(p.apis, switchboardv1.NewSwitchboardServiceClient(cc))
	}
	if len(p.apis) == 0 {
		return nil, errors.New("no gRPC address")
	}
	if cfg.Token != "" {
		p.md = metadata.Pairs("authorization", "Bearer "+cfg.Token)
	}
	return p, nil
}

// grpcPublisher emits through one node, or through a cluster's nodes in
// turn; it counts on the first.
type grpcPublisher struct {
	ccs     []*grpc.ClientConn
	apis    []switchboardv1.SwitchboardServiceClient
	md      metadata.MD
	pad     *structpb.Value
	channel string
	timeout time.Duration
}

func (p *grpcPublisher) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if p.md != nil {
		ctx = metadata.NewOutgoingContext(ctx, p.md)
	}
	return context.WithTimeout(ctx, p.timeout)
}

func (p *grpcPublisher) emit(ctx context.Context, seq int, t int64) (int64, error) {
	data := &structpb.Value{Kind: &structpb.Value_StructValue{StructValue: &structpb.Struct{Fields: map[string]*structpb.Value{
		"seq": structpb.NewNumberValue(float64(seq)),
		"t":   structpb.NewNumberValue(float64(t)),
		"pad": p.pad,
	}}}}
	ctx, cancel := p.ctx(ctx)
	defer cancel()
	res, err := p.apis[seq%len(p.apis)].EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: event, Data: data, Channel: p.channel})
	if err != nil {
		return 0, err
	}
	return res.GetRecipients(), nil
}

func (p *grpcPublisher) count(ctx context.Context) (int64, error) {
	return p.countChannel(ctx, "")
}

func (p *grpcPublisher) countChannel(ctx context.Context, channel string) (int64, error) {
	ctx, cancel := p.ctx(ctx)
	defer cancel()
	res, err := p.apis[0].GetOnlineCount(ctx, &switchboardv1.GetOnlineCountRequest{Channel: channel})
	if err != nil {
		return 0, err
	}
	return res.GetConnections(), nil
}

// visitors returns the server's count of distinct visitors.
func (p *grpcPublisher) visitors(ctx context.Context) (int64, error) {
	ctx, cancel := p.ctx(ctx)
	defer cancel()
	res, err := p.apis[0].GetOnlineCount(ctx, &switchboardv1.GetOnlineCountRequest{})
	if err != nil {
		return 0, err
	}
	return res.GetVisitors(), nil
}

func (p *grpcPublisher) waitSubscribed(ctx context.Context, channel string, n int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got, err := p.countChannel(ctx, channel)
		if err != nil {
			return fmt.Errorf("failed to count channel %q: %w", channel, err)
		}
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("failed to see %d subscribers on %q within %v: %d", n, channel, timeout, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *grpcPublisher) close() {
	for _, cc := range p.ccs {
		cc.Close()
	}
}

// httpPublisher posts to the socket.io reference app's /emit.
type httpPublisher struct {
	url    string
	pad    string
	client *http.Client
	bufs   sync.Pool
}

func (p *httpPublisher) emit(ctx context.Context, seq int, t int64) (int64, error) {
	buf, _ := p.bufs.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	defer p.bufs.Put(buf)
	buf.Reset()
	fmt.Fprintf(buf, `{"seq":%d,"t":%d,"pad":%q}`, seq, t, p.pad)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/emit", bytes.NewReader(buf.Bytes()))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	body, err := p.do(req)
	if err != nil {
		return 0, err
	}
	n, ok := field(body, []byte(`"recipients":`))
	if !ok {
		return 0, fmt.Errorf("failed to emit: unexpected answer %q", body)
	}
	return n, nil
}

func (p *httpPublisher) do(req *http.Request) ([]byte, error) {
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: HTTP %s: %s", req.Method, req.URL, resp.Status, body)
	}
	return body, nil
}

// count is not used for socket.io, which sends no count frames: the
// reference app's GET /online is there for people, not for swbench.
func (p *httpPublisher) count(context.Context) (int64, error) {
	return 0, nil
}

func (p *httpPublisher) waitSubscribed(context.Context, string, int64, time.Duration) error {
	return nil
}

func (p *httpPublisher) close() { p.client.CloseIdleConnections() }

// emitStats is what the publishing side measured.
type emitStats struct {
	start, end    []int64 // by seq: unix nanos when the call started and returned
	firstStart    int64
	lastEnd       int64
	errors        atomic.Int64
	firstErr      atomic.Pointer[error]
	minRecipients atomic.Int64
}

// emit publishes cfg.Emits messages with cfg.Inflight workers; with a
// Rate, message i is due at i/Rate seconds after the first.
func (b *bench) emit(ctx context.Context, pub publisher) *emitStats {
	cfg := b.cfg
	st := &emitStats{start: make([]int64, cfg.Emits), end: make([]int64, cfg.Emits)}
	st.minRecipients.Store(math.MaxInt64)
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	t0 := time.Now()
	for range min(cfg.Inflight, cfg.Emits) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.Emits || ctx.Err() != nil {
					return
				}
				if cfg.Rate > 0 {
					due := t0.Add(time.Duration(float64(i) / cfg.Rate * float64(time.Second)))
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
					}
				}
				s := time.Now().UnixNano()
				n, err := pub.emit(ctx, i, s)
				st.start[i], st.end[i] = s, time.Now().UnixNano()
				if err != nil {
					if st.errors.Add(1) == 1 {
						st.firstErr.Store(&err)
					}
					continue
				}
				for {
					m := st.minRecipients.Load()
					if n >= m || st.minRecipients.CompareAndSwap(m, n) {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	st.firstStart, st.lastEnd = math.MaxInt64, 0
	for i := range st.start {
		if st.start[i] == 0 {
			continue
		}
		st.firstStart = min(st.firstStart, st.start[i])
		st.lastEnd = max(st.lastEnd, st.end[i])
	}
	if st.lastEnd == 0 {
		st.firstStart = 0
	}
	if st.minRecipients.Load() == math.MaxInt64 {
		st.minRecipients.Store(0)
	}
	if p := st.firstErr.Load(); p != nil {
		cfg.Logf("%d emits failed, the first with: %v", st.errors.Load(), *p)
	}
	return st
}

// parseFloatInt parses the number at the start of b as a float and
// truncates it.
func parseFloatInt(b []byte, neg bool) (int64, bool) {
	i := 0
	for i < len(b) && (b[i] >= '0' && b[i] <= '9' || b[i] == '.' || b[i] == 'e' || b[i] == 'E' || b[i] == '+' || b[i] == '-') {
		i++
	}
	f, err := strconv.ParseFloat(string(b[:i]), 64)
	if err != nil {
		return 0, false
	}
	if neg {
		f = -f
	}
	return int64(f), true
}
