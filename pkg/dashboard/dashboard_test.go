package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// sink is a hub.Transport that takes every frame.
type sink struct{}

func (sink) Write([][]byte) (bool, error) { return false, nil }
func (sink) Flush() error                 { return nil }
func (sink) Abort()                       {}
func (sink) Close(hub.Reason)             {}

func newHub(t testing.TB, node string) *hub.Hub {
	t.Helper()
	h, err := hub.New(hub.Config{Node: node, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// connect adds a connection subscribed to channels.
func connect(t testing.TB, h *hub.Hub, channels ...string) *hub.Client {
	t.Helper()
	c, err := h.Connect(sink{}, hub.Start{Channels: channels})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func emit(t testing.TB, h *hub.Hub, n int) {
	t.Helper()
	for range n {
		if _, err := h.Emit(context.Background(), hub.Message{Event: "E"}); err != nil {
			t.Fatal(err)
		}
	}
}

// get serves one request and returns the response and its body.
func get(t testing.TB, d *Dashboard, method, path string) (*http.Response, string) {
	t.Helper()
	w := httptest.NewRecorder()
	d.ServeHTTP(w, httptest.NewRequest(method, path, nil))
	res := w.Result()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// getState fetches /state.json and decodes it.
func getState(t testing.TB, d *Dashboard) state {
	t.Helper()
	res, body := get(t, d, "GET", "/state.json")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /state.json: %d %s", res.StatusCode, body)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type: got %q; want application/json", ct)
	}
	if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control: got %q; want no-store", cc)
	}
	var s state
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	return s
}

func TestStateOfASingleNode(t *testing.T) {
	h := newHub(t, "n1")
	d := New(Config{Hub: h})
	s := getState(t, d)
	if s.Node.Name != "n1" || s.Node.Role != RoleSingle || s.Node.State != "active" || !s.Node.Serving {
		t.Errorf("node of a bare hub: got %+v; want n1, single, active, serving", s.Node)
	}
	if s.Connections != (both{}) || len(s.Members) != 1 || len(s.TopChannels) != 0 || s.Log.Offset != 0 {
		t.Errorf("an empty node: got connections %+v, members %+v, channels %+v, offset %d; want nothing", s.Connections, s.Members, s.TopChannels, s.Log.Offset)
	}

	connect(t, h, "quotes", "news")
	connect(t, h, "quotes")
	gone := connect(t, h, "gone")
	connect(t, h)
	gone.Close()
	emit(t, h, 4)
	s = getState(t, d)
	if want := (both{Node: 3, All: 3}); s.Connections != want {
		t.Errorf("connections: got %+v; want %+v", s.Connections, want)
	}
	if s.Visitors != 3 {
		t.Errorf("visitors of three connections without a key: got %d; want 3", s.Visitors)
	}
	if want := (both{Node: 2, All: 2}); s.Channels != want {
		t.Errorf("channels: got %+v; want %+v", s.Channels, want)
	}
	if want := (both{Node: 3, All: 3}); s.Subscriptions != want {
		t.Errorf("subscriptions: got %+v; want %+v", s.Subscriptions, want)
	}
	if want := []member{{Name: "n1", Role: RoleSingle, Self: true, Connections: 3, Channels: 2, Subscriptions: 3}}; !reflect.DeepEqual(s.Members, want) {
		t.Errorf("members: got %+v; want %+v", s.Members, want)
	}
	if want := []channel{{"quotes", 2}, {"news", 1}}; !reflect.DeepEqual(s.TopChannels, want) {
		t.Errorf("top channels: got %+v; want %+v", s.TopChannels, want)
	}
	pos := h.Position()
	msgs, bytes := h.HistoryStats()
	if want := (logState{Epoch: pos.Epoch, Offset: 4, HistoryMessages: 4, HistoryBytes: bytes}); s.Log != want || msgs != 4 || bytes == 0 {
		t.Errorf("log: got %+v; want %+v with bytes", s.Log, want)
	}
}

// TestStateCountsVisitors: the visitors are the distinct people behind
// the connections, a person with two tabs counted once.
func TestStateCountsVisitors(t *testing.T) {
	h := newHub(t, "n1")
	d := New(Config{Hub: h})
	for _, v := range []string{"ann", "ann", "bob", ""} {
		if _, err := h.Connect(sink{}, hub.Start{Visitor: v}); err != nil {
			t.Fatal(err)
		}
	}
	s := getState(t, d)
	if s.Connections != (both{Node: 4, All: 4}) || s.Visitors != 3 {
		t.Errorf("ann twice, bob and one without a key: got connections %+v, visitors %d; want 4 and 3", s.Connections, s.Visitors)
	}
}

// TestStateWithOtherNodes: the members are this node, every node in its
// remote counts and every peer its status names, idle or not, each once;
// the counts of all add them up.
func TestStateWithOtherNodes(t *testing.T) {
	h := newHub(t, "hub-id")
	started := time.Now().Add(-90 * time.Second)
	d := New(Config{Hub: h, Status: func() Status {
		return Status{Name: "a", Role: RoleMember, Cluster: "prod", State: "not ready", Detail: "NATS connection lost", Peers: []string{"c", "b", "a"}, Started: started}
	}})
	connect(t, h, "quotes", "news")
	connect(t, h, "quotes")
	h.HandleCounts(hub.Counts{Node: "b", Total: 2, Channels: map[string]int64{"quotes": 1, "other": 2}})
	h.HandleCounts(hub.Counts{Node: "z", Total: 1})

	s := getState(t, d)
	if want := (nodeState{Name: "a", Role: RoleMember, Cluster: "prod", State: "not ready", Detail: "NATS connection lost", UptimeS: 90}); s.Node != want {
		t.Errorf("node: got %+v; want %+v", s.Node, want)
	}
	want := []member{
		{Name: "a", Role: RoleMember, Self: true, Connections: 2, Channels: 2, Subscriptions: 3},
		{Name: "b", Role: RoleMember, Connections: 2, Channels: 2, Subscriptions: 3},
		{Name: "c", Role: RoleMember},
		{Name: "z", Role: RoleMember, Connections: 1},
	}
	if !reflect.DeepEqual(s.Members, want) {
		t.Errorf("members:\n got %+v\nwant %+v", s.Members, want)
	}
	if want := (both{Node: 2, All: 5}); s.Connections != want {
		t.Errorf("connections: got %+v; want %+v", s.Connections, want)
	}
	if want := (both{Node: 2, All: 3}); s.Channels != want {
		t.Errorf("channels: got %+v; want %+v (quotes, news, other)", s.Channels, want)
	}
	if want := (both{Node: 3, All: 6}); s.Subscriptions != want {
		t.Errorf("subscriptions: got %+v; want %+v", s.Subscriptions, want)
	}
	if want := []channel{{"quotes", 3}, {"other", 2}, {"news", 1}}; !reflect.DeepEqual(s.TopChannels, want) {
		t.Errorf("top channels: got %+v; want %+v", s.TopChannels, want)
	}
}

func TestPeerRoles(t *testing.T) {
	h := newHub(t, "p")
	shared := true
	d := New(Config{Hub: h, Status: func() Status {
		return Status{Name: "p", Role: RolePrimary, State: "active", Serving: true, LogShared: &shared, Peers: []string{"s"}}
	}})
	s := getState(t, d)
	if len(s.Members) != 2 || s.Members[1] != (member{Name: "s", Role: RoleStandby}) {
		t.Errorf("a primary's members: got %+v; want p and the standby s", s.Members)
	}
	if s.Node.LogShared == nil || !*s.Node.LogShared {
		t.Errorf("log_shared: got %v; want true", s.Node.LogShared)
	}
	_, body := get(t, d, "GET", "/state.json")
	if !strings.Contains(body, `"log_shared":true`) {
		t.Errorf("state.json lacks log_shared: %s", body)
	}
	if got := peerRole(RoleStandby); got != RolePrimary {
		t.Errorf("peer of a standby: got %q; want primary", got)
	}
}

// TestTopChannelsAreBounded: the state names the topChannels busiest.
func TestTopChannelsAreBounded(t *testing.T) {
	h := newHub(t, "n")
	var chans []string
	for i := range 2 * topChannels {
		chans = append(chans, "c"+string(rune('a'+i)))
	}
	connect(t, h, chans...)
	connect(t, h, "ct")
	s := getState(t, bare(h))
	if len(s.TopChannels) != topChannels || s.TopChannels[0] != (channel{"ct", 2}) || s.TopChannels[1] != (channel{"ca", 1}) {
		t.Errorf("top channels: got %+v; want %d, ct first, then by name", s.TopChannels, topChannels)
	}
	if s.Channels.All != int64(2*topChannels) {
		t.Errorf("channels: got %d; want %d", s.Channels.All, 2*topChannels)
	}
}

// bare is the dashboard of a node with no status of its own.
func bare(h *hub.Hub) *Dashboard { return New(Config{Hub: h}) }

// TestRate: each point is the messages that entered the log since the
// sample before, per second; a change of epoch is a gap (null).
func TestRate(t *testing.T) {
	h := newHub(t, "n")
	dash := bare(h)
	t0 := time.UnixMilli(1_700_000_000_000)
	dash.sample(t0)
	if s := getState(t, dash); len(s.Rate.TMS) != 0 {
		t.Errorf("one sample: got %d points; want none", len(s.Rate.TMS))
	}
	emit(t, h, 5)
	dash.sample(t0.Add(time.Second))
	dash.sample(t0.Add(2 * time.Second))
	h.ForkLog()
	dash.sample(t0.Add(3 * time.Second))
	emit(t, h, 3)
	dash.sample(t0.Add(5 * time.Second))

	_, body := get(t, dash, "GET", "/state.json")
	var raw struct {
		Rate struct {
			IntervalS int        `json:"interval_s"`
			WindowS   int        `json:"window_s"`
			TMS       []int64    `json:"t_ms"`
			PerS      []*float64 `json:"per_s"`
		} `json:"rate"`
	}
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatal(err)
	}
	r := raw.Rate
	if r.IntervalS != 1 || r.WindowS != 600 {
		t.Errorf("interval and window: got %d s, %d s; want 1 s, 600 s", r.IntervalS, r.WindowS)
	}
	wantT := []int64{t0.UnixMilli() + 1000, t0.UnixMilli() + 2000, t0.UnixMilli() + 3000, t0.UnixMilli() + 5000}
	if !reflect.DeepEqual(r.TMS, wantT) {
		t.Errorf("t_ms: got %v; want %v", r.TMS, wantT)
	}
	got := make([]string, len(r.PerS))
	for i, v := range r.PerS {
		got[i] = "null"
		if v != nil {
			got[i] = strconv.FormatFloat(*v, 'f', -1, 64)
		}
	}
	if want := []string{"5", "0", "null", "1.5"}; !reflect.DeepEqual(got, want) {
		t.Errorf("per_s: got %v; want %v", got, want)
	}
}

// TestRateRing: the chart keeps the newest 600 points.
func TestRateRing(t *testing.T) {
	h := newHub(t, "n")
	dash := bare(h)
	t0 := time.UnixMilli(1_700_000_000_000)
	for i := range 701 {
		if i == 650 {
			emit(t, h, 7)
		}
		dash.sample(t0.Add(time.Duration(i) * time.Second))
	}
	r := getState(t, dash).Rate
	if len(r.TMS) != ratePoints || len(r.PerS) != ratePoints {
		t.Fatalf("points: got %d, %d; want %d", len(r.TMS), len(r.PerS), ratePoints)
	}
	if r.TMS[0] != t0.Add(101*time.Second).UnixMilli() || r.TMS[ratePoints-1] != t0.Add(700*time.Second).UnixMilli() {
		t.Errorf("window: got %d to %d; want the newest 600 samples", r.TMS[0], r.TMS[ratePoints-1])
	}
	for i, v := range r.PerS {
		want := 0.0
		if r.TMS[i] == t0.Add(650*time.Second).UnixMilli() {
			want = 7
		}
		if v != want {
			t.Errorf("per_s at %d: got %v; want %v", i, v, want)
		}
	}
}

func TestRatesJSON(t *testing.T) {
	b, err := json.Marshal(rates{0, 1.0 / 3, math.NaN(), 1e6, math.Inf(1)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "[0,0.33,null,1000000,null]"; got != want {
		t.Errorf("got %s; want %s", got, want)
	}
	if b, _ := json.Marshal(rates{}); string(b) != "[]" {
		t.Errorf("no rates: got %s; want []", b)
	}
}

// TestRunSamplesUntilCanceled: Run takes a sample a second and returns
// when its context ends.
func TestRunSamplesUntilCanceled(t *testing.T) {
	h := newHub(t, "n")
	dash := bare(h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		dash.Run(ctx)
	}()
	emit(t, h, 2)
	deadline := time.Now().Add(10 * time.Second)
	for len(getState(t, dash).Rate.TMS) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("Run took fewer than 3 samples in 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// TestPage: the page is one HTML document that loads nothing from
// anywhere, and says so to the browser.
func TestPage(t *testing.T) {
	dash := bare(newHub(t, "n"))
	res, body := get(t, dash, "GET", "/")
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: got %d %q; want 200 HTML", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none';") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("Content-Security-Policy: got %q; want nothing but itself", csp)
	}
	if m := regexp.MustCompile(`(?i)\b(src|href)\s*=|@import|url\(`).FindString(body); m != "" {
		t.Errorf("the page refers to an asset (%q); want everything inline", m)
	}
	if !strings.Contains(body, `fetch("state.json"`) {
		t.Error("the page does not poll state.json")
	}
	for _, tt := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/other", http.StatusNotFound},
		{"GET", "/state.json/x", http.StatusNotFound},
		{"POST", "/", http.StatusMethodNotAllowed},
		{"POST", "/state.json", http.StatusMethodNotAllowed},
	} {
		if res, _ := get(t, dash, tt.method, tt.path); res.StatusCode != tt.code {
			t.Errorf("%s %s: got %d; want %d", tt.method, tt.path, res.StatusCode, tt.code)
		}
	}
}
