package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/natstest"
	"github.com/switchboard-rt/switchboard/internal/proxytest"
	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/msglog"
)

const waitTimeout = 15 * time.Second

func waitFor(t testing.TB, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > waitTimeout {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// startNATS runs an embedded NATS server with JetStream; restart starts
// it again on the same port and store.
func startNATS(t testing.TB) (url string, stop, restart func()) {
	t.Helper()
	e := natstest.StartEmbedded(t)
	return e.URL(), e.Stop, e.Start
}

// node is a hub joined to a cluster.
type node struct {
	hub    *hub.Hub
	member *Member
}

func joinNode(t testing.TB, url, member string, cfg hub.Config) *node {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	m, err := Join(context.Background(), Config{URLs: []string{url}, Name: "test", Member: member, Logger: logger, HistorySize: cfg.HistorySize})
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	cfg.Broker, cfg.Sequencer, cfg.Logger = m, m, logger
	if cfg.CountInterval == 0 {
		cfg.CountInterval = 20 * time.Millisecond
	}
	h, err := hub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(h)
	n := &node{hub: h, member: m}
	t.Cleanup(n.close)
	waitFor(t, member+" to be ready", func() bool { st, _ := m.State(); return st.Ready() })
	return n
}

func (n *node) close() { n.hub.Close() }

// recorder is a hub.Transport that records frames.
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

func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, f := range r.frames {
		if f["type"] == "message" {
			out = append(out, fmt.Sprintf("%v@%v", f["event"], f["offset"]))
		}
	}
	return out
}

func (r *recorder) welcome() map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.frames) == 0 {
		return nil
	}
	return r.frames[0]
}

func (r *recorder) lastCount() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.frames) - 1; i >= 0; i-- {
		if r.frames[i]["type"] == "count" {
			return r.frames[i]["connections"].(float64)
		}
	}
	return -1
}

func connect(t testing.TB, h *hub.Hub, s hub.Start) (*hub.Client, *recorder) {
	t.Helper()
	r := &recorder{}
	c, err := h.Connect(r, s)
	if err != nil {
		t.Fatal(err)
	}
	return c, r
}

func TestOneLogAcrossMembers(t *testing.T) {
	url, _, _ := startNATS(t)
	nodes := []*node{joinNode(t, url, "a", hub.Config{}), joinNode(t, url, "b", hub.Config{}), joinNode(t, url, "c", hub.Config{})}
	var recs []*recorder
	for _, n := range nodes {
		for range 2 {
			_, r := connect(t, n.hub, hub.Start{Channels: []string{"news"}})
			recs = append(recs, r)
		}
	}
	for _, n := range nodes {
		waitFor(t, "every member to count 6", func() bool { return n.hub.Count("") == 6 && n.hub.Count("news") == 6 })
	}

	// Emits through every member at once: one order everywhere.
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			for j := range 20 {
				if _, err := n.hub.Emit(context.Background(), hub.Message{Event: fmt.Sprintf("m%d-%d", i, j), Data: []byte(`1`)}); err != nil {
					t.Errorf("Emit: %v", err)
				}
			}
		})
	}
	wg.Wait()
	for i, r := range recs {
		waitFor(t, fmt.Sprintf("client %d to get 60 messages", i), func() bool { return len(r.messages()) == 60 })
	}
	for i, r := range recs[1:] {
		if !slices.Equal(r.messages(), recs[0].messages()) {
			t.Errorf("client %d saw another order than client 0", i+1)
		}
	}

	// An idempotency key holds across members.
	first, err := nodes[0].hub.EmitOnce(context.Background(), "order-1", hub.Message{Event: "once", Channel: "news"})
	if err != nil || first.Duplicate || first.Recipients != 6 {
		t.Fatalf("first emit: got %+v, %v; want 6 recipients", first, err)
	}
	again, err := nodes[2].hub.EmitOnce(context.Background(), "order-1", hub.Message{Event: "once", Channel: "news"})
	if err != nil || !again.Duplicate || again.Offset != first.Offset {
		t.Errorf("the same key on another member: got %+v, %v; want a duplicate at offset %d", again, err, first.Offset)
	}
	marker, _ := nodes[1].hub.Emit(context.Background(), hub.Message{Event: "marker"})
	for i, r := range recs {
		waitFor(t, fmt.Sprintf("client %d to get the marker", i), func() bool { return slices.Contains(r.messages(), fmt.Sprintf("marker@%d", marker.Offset)) })
		n := 0
		for _, m := range r.messages() {
			if m == fmt.Sprintf("once@%d", first.Offset) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("client %d got the keyed message %d times; want once", i, n)
		}
	}
}

func TestResumeOnAnotherMember(t *testing.T) {
	url, _, _ := startNATS(t)
	a, b := joinNode(t, url, "a", hub.Config{}), joinNode(t, url, "b", hub.Config{})
	c, r := connect(t, a.hub, hub.Start{})
	res, _ := a.hub.Emit(context.Background(), hub.Message{Event: "seen"})
	waitFor(t, "the first message", func() bool { return len(r.messages()) == 1 })
	epoch := r.welcome()["epoch"].(string)
	c.Close()
	for i := range 5 {
		a.hub.Emit(context.Background(), hub.Message{Event: fmt.Sprint("missed", i)})
	}
	waitFor(t, "b to hold them", func() bool { return b.hub.Position().Offset == res.Offset+5 })
	_, back := connect(t, b.hub, hub.Start{Resume: true, From: msglog.Position{Epoch: epoch, Offset: res.Offset}})
	waitFor(t, "the missed five on b", func() bool { return len(back.messages()) == 5 })
	if w := back.welcome(); w["recovered"] != true {
		t.Errorf("welcome on b: got %v; want recovered", w)
	}

	// A member that joins later holds the history too.
	late := joinNode(t, url, "late", hub.Config{})
	_, r2 := connect(t, late.hub, hub.Start{Resume: true, From: msglog.Position{Epoch: epoch, Offset: res.Offset}})
	waitFor(t, "the five on the late member", func() bool { return len(r2.messages()) == 5 })
	if !slices.Equal(r2.messages(), back.messages()) {
		t.Errorf("late member replayed %v; want %v", r2.messages(), back.messages())
	}
}

func TestCountsAcrossMembers(t *testing.T) {
	url, _, _ := startNATS(t)
	a, b, c := joinNode(t, url, "a", hub.Config{}), joinNode(t, url, "b", hub.Config{}), joinNode(t, url, "c", hub.Config{})
	var onB []*hub.Client
	for range 3 {
		cl, _ := connect(t, b.hub, hub.Start{Channels: []string{"q"}})
		onB = append(onB, cl)
	}
	_, ra := connect(t, a.hub, hub.Start{})
	connect(t, c.hub, hub.Start{})
	for _, n := range []*node{a, b, c} {
		waitFor(t, "5 everywhere", func() bool { return n.hub.Count("") == 5 && n.hub.Count("q") == 3 })
	}
	waitFor(t, "a's browser to show 5", func() bool { return ra.lastCount() == 5 })
	onB[0].Unsubscribe("q")
	onB[1].Close()
	waitFor(t, "a to see b's change", func() bool { return a.hub.Count("") == 4 && a.hub.Count("q") == 1 })

	// A member that shuts down leaves at once.
	start := time.Now()
	c.close()
	took := waitFor(t, "c to leave", func() bool { return a.hub.Count("") == 3 })
	if took > time.Second {
		t.Errorf("a member that shut down left the count after %v; want under 1 s", took)
	}
	t.Logf("shut down -> out of the count: %v", time.Since(start).Round(time.Millisecond))

	// A member that goes silent (killed, cut off) leaves within 3 s.
	b.member.exchangeOf().stopSending()
	took = waitFor(t, "b to be dropped", func() bool { return a.hub.Count("") == 1 })
	if took > 3*time.Second {
		t.Errorf("a silent member left the count after %v; want within 3 s", took)
	}
	t.Logf("silent -> out of the count: %v", took.Round(time.Millisecond))
}

func TestRestartedMemberIsCountedOnce(t *testing.T) {
	url, _, _ := startNATS(t)
	a := joinNode(t, url, "a", hub.Config{})
	b1 := joinNode(t, url, "b", hub.Config{})
	for range 4 {
		connect(t, b1.hub, hub.Start{})
	}
	waitFor(t, "a to count b's 4", func() bool { return a.hub.Count("") == 4 })
	// b dies without a word and comes back at once, with one browser.
	b1.member.exchangeOf().stopSending()
	b2 := joinNode(t, url, "b", hub.Config{})
	connect(t, b2.hub, hub.Start{})
	took := waitFor(t, "a to count the new b alone", func() bool { return a.hub.Count("") == 1 })
	if took > evictAfter/2 {
		t.Errorf("the restarted member replaced its old self after %v; want at its first message", took)
	}
}

func TestNATSRestart(t *testing.T) {
	url, stop, restart := startNATS(t)
	a, b := joinNode(t, url, "a", hub.Config{}), joinNode(t, url, "b", hub.Config{})
	_, ra := connect(t, a.hub, hub.Start{})
	connect(t, b.hub, hub.Start{})
	a.hub.Emit(context.Background(), hub.Message{Event: "before"})
	waitFor(t, "the first message", func() bool { return len(ra.messages()) == 1 })

	stop()
	waitFor(t, "a to see NATS gone", func() bool { st, _ := a.member.State(); return !st.Connected })
	if _, err := a.hub.Emit(context.Background(), hub.Message{Event: "lost"}); err == nil {
		t.Error("Emit without NATS: got nil; want an error")
	}
	restart()
	for _, n := range []*node{a, b} {
		waitFor(t, "members ready again", func() bool { st, _ := n.member.State(); return st.Ready() })
	}
	waitFor(t, "counts back", func() bool { return a.hub.Count("") == 2 && b.hub.Count("") == 2 })
	b.hub.Emit(context.Background(), hub.Message{Event: "after"})
	waitFor(t, "the message after the restart", func() bool { return len(ra.messages()) == 2 })
	time.Sleep(300 * time.Millisecond)
	if got := ra.messages(); len(got) != 2 || got[0] != "before@1" || got[1] != "after@2" {
		t.Errorf("messages across the NATS restart: got %v; want [before@1 after@2]", got)
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "no NATS server URL"},
		{Config{URLs: []string{"http://x:4222"}}, `scheme "http"`},
		{Config{URLs: []string{"nats://"}}, "want a URL"},
		{Config{URLs: []string{"nats://x:4222"}, Name: "a.b"}, "cluster name"},
		{Config{URLs: []string{"nats://x:4222"}, Member: "a b"}, "member name"},
		{Config{URLs: []string{"nats://x:4222"}, Replicas: 7}, "replicas 7"},
		{Config{URLs: []string{"nats://x:4222"}, CredsFile: "/nonexistent.creds"}, "credentials file"},
	} {
		err := tc.cfg.Check()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Check(%+v): got %v; want an error saying %q", tc.cfg, err, tc.want)
		}
	}
	if err := (&Config{URLs: []string{"nats://a:4222", "tls://b:4222"}, Name: "prod-1", Replicas: 3}).Check(); err != nil {
		t.Errorf("a good config: %v", err)
	}
}

func TestJoinRefusesAStreamNATSCannotHold(t *testing.T) {
	url, _, _ := startNATS(t)
	_, err := Join(context.Background(), Config{URLs: []string{url}, Name: "r3", Replicas: 3, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err == nil || !strings.Contains(err.Error(), "replicas") {
		t.Errorf("Join with 3 replicas on one NATS server: got %v; want an error about replicas", err)
	}
}

func TestJoinRefusesDataNATSCannotCarry(t *testing.T) {
	url, _, _ := startNATS(t)
	_, err := Join(context.Background(), Config{URLs: []string{url}, Name: "big", MaxDataBytes: 2 << 20, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err == nil || !strings.Contains(err.Error(), "max_payload") {
		t.Errorf("Join with 2 MiB of data on a NATS taking 1 MiB: got %v; want an error naming max_payload", err)
	}
	m, err := Join(context.Background(), Config{URLs: []string{url}, Name: "fits", MaxDataBytes: 64 << 10, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatalf("Join with 64 KiB of data: %v", err)
	}
	m.Close()
}

// TestAppendDoesNotWaitForALostAcknowledgement: NATS vanishes (no reset,
// no FIN) with a message's acknowledgement outstanding: Append gives up
// within appendTimeout with an error to retry, instead of holding the
// call to the caller's deadline, which callers do not retry.
func TestAppendDoesNotWaitForALostAcknowledgement(t *testing.T) {
	url, _, _ := startNATS(t)
	link := proxytest.Start(t, strings.TrimPrefix(url, "nats://"))
	n := joinNode(t, "nats://"+link.Addr(), "a", hub.Config{})
	if _, err := n.hub.Emit(context.Background(), hub.Message{Event: "before"}); err != nil {
		t.Fatalf("Emit before the blackhole: %v", err)
	}
	link.Blackhole()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := n.hub.Emit(ctx, hub.Message{Event: "lost"})
	took := time.Since(start)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || took > appendTimeout+2*time.Second {
		t.Errorf("Emit with its acknowledgement lost: got %v after %v; want an error to retry, within about %v", err, took, appendTimeout)
	}
}
