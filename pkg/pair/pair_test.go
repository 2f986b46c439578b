package pair

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pairv1 "github.com/switchboard-rt/switchboard/gen/switchboard/pair/v1"
	"github.com/switchboard-rt/switchboard/pkg/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitTimeout = 10 * time.Second

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func newHub(t testing.TB, cfg hub.Config) *hub.Hub {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	h, err := hub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// primary serves the pair service of a hub on a loopback port.
type primary struct {
	hub  *hub.Hub
	svc  *Service
	conn *grpc.ClientConn // a standby's connection to it
}

func startPrimary(t testing.TB, cfg hub.Config) *primary {
	t.Helper()
	h := newHub(t, cfg)
	svc := NewService(h, slog.New(slog.NewTextHandler(t.Output(), nil)))
	srv := grpc.NewServer()
	pairv1.RegisterPairServiceServer(srv, svc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		svc.Stop()
		srv.Stop()
	})
	return &primary{hub: h, svc: svc, conn: conn}
}

// standby is a standby's hub with a link to a primary, and what the link
// told it.
type standby struct {
	hub      *hub.Hub
	link     *Link
	active   atomic.Bool
	handed   atomic.Int64
	ended    atomic.Int64
	stopLink func()
}

func startStandby(t testing.TB, p *primary, active bool) *standby {
	t.Helper()
	sb := &standby{hub: newHub(t, hub.Config{})}
	sb.active.Store(active)
	sb.link = NewLink(LinkConfig{
		Hub:    sb.hub,
		Conn:   p.conn,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Active: sb.active.Load,
		Handover: func() hub.Snapshot {
			sb.handed.Add(1)
			sb.active.Store(false) // paused for the primary, as a server does
			return sb.hub.Handover()
		},
		Ended: func(bool) { sb.ended.Add(1) },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sb.link.Run(ctx)
	}()
	sb.stopLink = func() {
		cancel()
		<-done
	}
	t.Cleanup(sb.stopLink)
	return sb
}

// recorder is a hub.Transport that records the frames it is given.
type recorder struct {
	mu     sync.Mutex
	frames []map[string]any
}

func (r *recorder) Write(frames [][]byte) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range frames {
		var m map[string]any
		json.Unmarshal(f, &m)
		r.frames = append(r.frames, m)
	}
	return false, nil
}
func (r *recorder) Flush() error     { return nil }
func (r *recorder) Abort()           {}
func (r *recorder) Close(hub.Reason) {}

// messages returns the events of the message frames received.
func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, f := range r.frames {
		if f["type"] == "message" {
			out = append(out, f["event"].(string))
		}
	}
	return out
}

func emit(t testing.TB, h *hub.Hub, key, event string) hub.Emitted {
	t.Helper()
	res, err := h.EmitOnce(context.Background(), key, hub.Message{Event: event, Data: []byte(`1`)})
	if err != nil {
		t.Fatalf("EmitOnce(%s): %v", event, err)
	}
	return res
}

func TestStandbyFollowsThePrimarysLog(t *testing.T) {
	p := startPrimary(t, hub.Config{})
	early := emit(t, p.hub, "early", "early")
	sb := startStandby(t, p, false)
	waitFor(t, "the standby to follow", func() bool { return sb.link.Following() && p.hub.Following() })
	if p.hub.Position() != sb.hub.Position() {
		t.Fatalf("after the snapshot: primary %+v, standby %+v; want the same", p.hub.Position(), sb.hub.Position())
	}
	rec := &recorder{}
	if _, err := sb.hub.Register(rec); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		emit(t, p.hub, fmt.Sprint("k", i), fmt.Sprint("m", i))
	}
	// Each emit returned only once the standby held it.
	if p.hub.Position() != sb.hub.Position() {
		t.Errorf("after 20 emits: primary %+v, standby %+v; want the same", p.hub.Position(), sb.hub.Position())
	}
	waitFor(t, "the standby's browser to get the 20", func() bool { return len(rec.messages()) == 20 })
	for key, want := range map[string]uint64{"early": early.Offset, "k7": early.Offset + 8} {
		res, err := sb.hub.EmitOnce(context.Background(), key, hub.Message{Event: "retry"})
		if err != nil || !res.Duplicate || res.Offset != want {
			t.Errorf("retry of %s on the standby: got %+v, %v; want a duplicate at %d", key, res, err, want)
		}
	}

	sb.link.Restart()
	waitFor(t, "the primary to go on alone", func() bool { return !p.hub.Following() })
	if sb.link.Following() {
		t.Error("Following after Restart: got true; want false")
	}
	start := time.Now()
	emit(t, p.hub, "", "alone")
	if time.Since(start) > 500*time.Millisecond {
		t.Errorf("an emit with no standby waited %v", time.Since(start))
	}
	waitFor(t, "the standby to follow again", func() bool { return sb.link.Following() && p.hub.Following() })
	emit(t, p.hub, "", "again")
	if p.hub.Position() != sb.hub.Position() {
		t.Errorf("after following again: primary %+v, standby %+v; want the same", p.hub.Position(), sb.hub.Position())
	}
}

func TestStartingPrimaryTakesTheStandbysLog(t *testing.T) {
	p := startPrimary(t, hub.Config{})
	p.hub.Pause()
	waited := make(chan bool, 1)
	go func() { waited <- p.svc.WaitForStandby(context.Background(), waitTimeout) }()

	// A standby that served on its own meanwhile, with a log of its own.
	sbHub := newHub(t, hub.Config{})
	for i := range 5 {
		emit(t, sbHub, fmt.Sprint("s", i), fmt.Sprint("on the standby ", i))
	}
	sbHub.ForkLog()
	pos := sbHub.Position()

	sb := &standby{hub: sbHub}
	sb.active.Store(true)
	sb.link = NewLink(LinkConfig{
		Hub: sbHub, Conn: p.conn, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Active: sb.active.Load,
		Handover: func() hub.Snapshot {
			sb.handed.Add(1)
			sb.active.Store(false)
			return sbHub.Handover()
		},
		Ended: func(bool) {},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sb.link.Run(ctx) }()
	defer func() { cancel(); <-done }()

	select {
	case ok := <-waited:
		if !ok {
			t.Fatal("WaitForStandby: got false; want true, the standby's log taken")
		}
	case <-time.After(waitTimeout):
		t.Fatal("WaitForStandby did not return")
	}
	if p.hub.Position() != pos || sb.handed.Load() != 1 || !sbHub.Paused() {
		t.Fatalf("after the handover: primary at %+v, handovers %d, standby paused %v; want %+v, 1, true", p.hub.Position(), sb.handed.Load(), sbHub.Paused(), pos)
	}
	p.hub.Resume()
	res, err := p.hub.EmitOnce(context.Background(), "s2", hub.Message{Event: "retry"})
	if err != nil || !res.Duplicate || res.Offset != 3 {
		t.Errorf("retry on the primary of a key the standby took: got %+v, %v; want a duplicate at 3", res, err)
	}
	waitFor(t, "the standby to follow the primary", func() bool { return sb.link.Following() })
	emit(t, p.hub, "", "after")
	if got := sbHub.Position(); got.Offset != pos.Offset+1 || got.Epoch != pos.Epoch {
		t.Errorf("standby after the primary's first emit: got %+v; want offset %d of epoch %s", got, pos.Offset+1, pos.Epoch)
	}
}

func TestWaitForStandbyGivesUp(t *testing.T) {
	p := startPrimary(t, hub.Config{})
	start := time.Now()
	if p.svc.WaitForStandby(context.Background(), 100*time.Millisecond) {
		t.Fatal("WaitForStandby with no standby: got true")
	}
	if took := time.Since(start); took < 100*time.Millisecond || took > 2*time.Second {
		t.Errorf("WaitForStandby took %v; want about 100ms", took)
	}
	// Once serving, a standby that comes gets this node's log.
	emit(t, p.hub, "", "m")
	sb := startStandby(t, p, true)
	time.Sleep(300 * time.Millisecond)
	if sb.handed.Load() != 0 || sb.link.Following() {
		t.Errorf("an active standby: handovers %d, following %v; want 0, false", sb.handed.Load(), sb.link.Following())
	}
	sb.active.Store(false)
	waitFor(t, "the standby to follow once passive", func() bool { return sb.link.Following() })
	if sb.hub.Position() != p.hub.Position() {
		t.Errorf("standby at %+v; want the primary's %+v", sb.hub.Position(), p.hub.Position())
	}
}

func TestCountsCrossTheLink(t *testing.T) {
	p := startPrimary(t, hub.Config{CountInterval: 10 * time.Millisecond})
	sb := startStandby(t, p, false)
	waitFor(t, "the standby to follow", func() bool { return sb.link.Following() })
	var onStandby []*hub.Client
	for range 3 {
		c, err := sb.hub.Register(&recorder{})
		if err != nil {
			t.Fatal(err)
		}
		onStandby = append(onStandby, c)
	}
	if err := onStandby[0].Subscribe("quotes"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.hub.Register(&recorder{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the primary to count the standby's browsers", func() bool { return p.hub.Count("") == 4 && p.hub.Count("quotes") == 1 })
	waitFor(t, "the standby to count the primary's browser", func() bool { return sb.hub.Count("") == 4 })
	onStandby[1].Close()
	waitFor(t, "the primary to see one leave the standby", func() bool { return p.hub.Count("") == 3 })
	sb.stopLink()
	waitFor(t, "the primary to drop the standby's counts", func() bool { return p.hub.Count("") == 1 && p.hub.Count("quotes") == 0 })
}

// TestSilentStandbyIsDropped: a standby that takes the log but never
// acknowledges holds each emit FollowTimeout at most, once; then the
// primary goes on alone and ends the session.
func TestSilentStandbyIsDropped(t *testing.T) {
	p := startPrimary(t, hub.Config{FollowTimeout: 200 * time.Millisecond})
	stream, err := pairv1.NewPairServiceClient(p.conn).Follow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&pairv1.FollowRequest{Msg: &pairv1.FollowRequest_Hello{Hello: &pairv1.Hello{Node: "silent"}}})
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetLog().GetLast() {
			break
		}
	}
	start := time.Now()
	emit(t, p.hub, "", "waits")
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("first emit took %v; want the 200ms timeout", took)
	}
	start = time.Now()
	emit(t, p.hub, "", "alone")
	if took := time.Since(start); took > 150*time.Millisecond {
		t.Errorf("second emit took %v; want no wait", took)
	}
	for {
		_, err := stream.Recv()
		if err != nil {
			if status.Code(err) != codes.Aborted {
				t.Errorf("silent standby's session: got %v; want Aborted", err)
			}
			break
		}
	}
	if got := p.hub.Stats().FollowerDrops.Load(); got != 1 {
		t.Errorf("FollowerDrops: got %d; want 1", got)
	}
}

func TestFollowRefusesBadSessions(t *testing.T) {
	p := startPrimary(t, hub.Config{})
	stream, err := pairv1.NewPairServiceClient(p.conn).Follow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&pairv1.FollowRequest{Msg: &pairv1.FollowRequest_Ack{Ack: &pairv1.Ack{Offset: 1}}})
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a session opening with an ack: got %v; want InvalidArgument", err)
	}
}

func TestChunksRoundTrip(t *testing.T) {
	h := newHub(t, hub.Config{})
	big := []byte(`"` + string(make([]byte, 0)) + `"`)
	for i := range 1500 {
		data := big
		if i%100 == 0 {
			data = []byte(fmt.Sprintf("%q", string(make([]byte, 300<<10))))
		}
		if _, err := h.EmitOnce(context.Background(), fmt.Sprint("key-", i), hub.Message{Event: "E", Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	h.ForkLog()
	snap := h.Handover()
	cs := chunks(snap)
	var a assembler
	for i, c := range cs {
		size := 0
		for _, e := range c.Entries {
			size += len(e.Frame)
		}
		if len(c.Entries) > chunkEntries || len(c.Entries) > 1 && size > chunkBytes {
			t.Errorf("chunk %d: %d entries, %d bytes; want at most %d, %d", i, len(c.Entries), size, chunkEntries, chunkBytes)
		}
		done, err := a.add(c)
		if err != nil || done != (i == len(cs)-1) {
			t.Fatalf("chunk %d of %d: done %v, %v", i, len(cs), done, err)
		}
	}
	got := a.snap
	if got.Log.Epoch != snap.Log.Epoch || got.Log.Head != snap.Log.Head || !slices.Equal(got.Log.Forks, snap.Log.Forks) ||
		len(got.Log.Entries) != len(snap.Log.Entries) || len(got.Keys) != len(snap.Keys) {
		t.Fatalf("round trip: got %s/%d, %d forks, %d entries, %d keys; want %s/%d, %d, %d, %d",
			got.Log.Epoch, got.Log.Head, len(got.Log.Forks), len(got.Log.Entries), len(got.Keys),
			snap.Log.Epoch, snap.Log.Head, len(snap.Log.Forks), len(snap.Log.Entries), len(snap.Keys))
	}
	for i, e := range snap.Log.Entries {
		g := got.Log.Entries[i]
		if g.Offset != e.Offset || string(g.Frame) != string(e.Frame) || g.Key != e.Key || !g.Time.Equal(e.Time) {
			t.Fatalf("entry %d: got %+v; want %+v", i, g, e)
		}
	}
	for i, k := range snap.Keys {
		if g := got.Keys[i]; g.Key != k.Key || g.Result != k.Result || !g.Time.Equal(k.Time) {
			t.Fatalf("key %d: got %+v; want %+v", i, g, k)
		}
	}
	if _, err := (&assembler{}).add(cs[len(cs)-1]); err == nil && len(cs) > 1 {
		t.Error("a copy that does not begin with its header: got no error")
	}
}
