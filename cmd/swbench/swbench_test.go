//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-rt/switchboard/internal/natstest"
	"github.com/switchboard-rt/switchboard/internal/nodetest"
	"github.com/switchboard-rt/switchboard/internal/testenv"
	"github.com/switchboard-rt/switchboard/pkg/cluster"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startSwitchboard runs an in-process node on loopback until the test
// ends.
func startSwitchboard(t *testing.T, token string) *nodetest.Node {
	t.Helper()
	return nodetest.Start(t, server.Config{
		APIToken:       token,
		AllowedOrigins: []string{"*"},
		Logger:         slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
}

func TestRunSwitchboard(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		token string // the server's API token
		cfg   Config
	}{
		{name: "sequential", cfg: Config{Clients: 20, Emits: 30}},
		{name: "inflight", cfg: Config{Clients: 20, Emits: 30, Inflight: 4, Channel: "bench", Payload: 1000}},
		{name: "rate", cfg: Config{Clients: 20, Emits: 30, Rate: 300, Dialers: 3, Ramp: 500}},
		{name: "token", token: "s3cret", cfg: Config{Clients: 20, Emits: 30, Inflight: 2, Token: "s3cret"}},
		{name: "visitors", cfg: Config{Clients: 20, Emits: 30, Visitors: 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startSwitchboard(t, tt.token)
			cfg := tt.cfg
			cfg.WSURL = "ws://" + srv.HTTPAddr() + "/ws"
			cfg.GRPCAddr = srv.GRPCAddr()
			cfg.PID = os.Getpid()
			cfg.Timeout = 10 * time.Second
			cfg.Logf = t.Logf
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.Delivered != res.Expected || res.Expected != 600 {
				t.Errorf("delivered %d of %d; want 600 of 600", res.Delivered, res.Expected)
			}
			if res.Lost != 0 || res.Duplicates != 0 || res.OutOfOrder != 0 || res.OrderMismatch != 0 {
				t.Errorf("lost %d, duplicates %d, out of order %d, mismatched %d; want none", res.Lost, res.Duplicates, res.OutOfOrder, res.OrderMismatch)
			}
			if res.LatencyUS.P50 <= 0 || res.LatencyUS.Max < res.LatencyUS.P99 {
				t.Errorf("latency %+v; want positive and ordered", res.LatencyUS)
			}
			if res.CountAllSeconds == nil || *res.CountAllSeconds <= 0 || res.CountFramesMax == nil || *res.CountFramesMax < 1 {
				t.Errorf("count_all_s %v, count_frames_max %v; want both set", res.CountAllSeconds, res.CountFramesMax)
			}
			if want := int64(cfg.Visitors); want > 0 && (res.Visitors == nil || *res.Visitors != want) {
				t.Errorf("visitors %v; want %d", res.Visitors, want)
			}
			if res.DeliveriesPerSec <= 0 || res.MinRecipients != 20 {
				t.Errorf("deliveries/s %v, min recipients %d; want > 0 and 20", res.DeliveriesPerSec, res.MinRecipients)
			}
			if res.ServerRSSConnectedKB == nil || *res.ServerRSSConnectedKB <= 0 || res.ServerCPUSeconds == nil {
				t.Errorf("server figures missing with -pid: %+v", res)
			}
		})
	}
}

// TestCLI runs the command as a user would, through its flags.
func TestCLI(t *testing.T) {
	t.Parallel()
	srv := startSwitchboard(t, "")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-ws", "ws://" + srv.HTTPAddr() + "/ws", "-grpc", srv.GRPCAddr(), "-origin", "https://example.com",
		"-clients", "5", "-emits", "10", "-inflight", "2", "-json"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d; want 0\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var res Result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last line is not a JSON result: %v\n%s", err, &stdout)
	}
	if res.Delivered != 50 || res.Failure != "" {
		t.Errorf("delivered %d, failure %q; want 50 and none", res.Delivered, res.Failure)
	}
	if code := run([]string{"-clients"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("bad flags: exit %d; want 2", code)
	}
}

// TestRunNoServer fails fast and clearly when nothing listens.
func TestRunNoServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = Run(context.Background(), Config{Clients: 2, Emits: 1, WSURL: "ws://" + addr + "/ws", GRPCAddr: addr, Timeout: 2 * time.Second})
	if err == nil {
		t.Fatal("Run against a closed port succeeded; want an error")
	}
}

// TestTally checks that the detectors fire: a missed, a repeated and a
// reordered message each fail the run.
func TestTally(t *testing.T) {
	t.Parallel()
	const emits = 4
	st := &emitStats{start: make([]int64, emits), end: make([]int64, emits)}
	for i := range emits { // sequential: each call returns before the next starts
		st.start[i], st.end[i] = int64(10*i+1), int64(10*i+5)
	}
	st.firstStart = 1
	client := func(seqs ...int32) *conn {
		c := &conn{lat: make([]int32, emits)}
		for _, s := range seqs {
			if c.lat[s] != 0 {
				c.dups++
				continue
			}
			c.lat[s] = 100 + s
			c.order = append(c.order, s)
			c.got++
			c.last = 1000
		}
		return c
	}
	tests := []struct {
		name  string
		conns []*conn
		check func(Result) bool
		want  string
	}{
		{name: "clean", conns: []*conn{client(0, 1, 2, 3), client(0, 1, 2, 3)}, check: func(r Result) bool { return r.Delivered == 8 }},
		{name: "lost", conns: []*conn{client(0, 1, 2, 3), client(0, 1, 3)}, check: func(r Result) bool { return r.Lost == 1 && r.ClientsMissing == 1 }, want: "1 lost"},
		{name: "duplicate", conns: []*conn{client(0, 1, 1, 2, 3)}, check: func(r Result) bool { return r.Duplicates == 1 && r.Lost == 0 }, want: "1 duplicated"},
		{name: "reordered", conns: []*conn{client(0, 2, 1, 3)}, check: func(r Result) bool { return r.OutOfOrder == 1 }, want: "1 out of order"},
		{name: "disconnected", conns: []*conn{{lat: make([]int32, emits), err: errors.New("closed 1013")}}, check: func(r Result) bool { return r.Disconnected == 1 && r.Lost == 4 }, want: "clients disconnected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := Result{Expected: int64(len(tt.conns)) * emits}
			tally(&res, tt.conns, emits, st)
			if !tt.check(res) {
				t.Errorf("got %+v", res)
			}
			err := res.Verify()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Verify: %v; want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Verify: %v; want an error with %q", err, tt.want)
			}
		})
	}
}

// TestReorderedOverlapping: emits whose calls overlap may arrive in
// either order; only a message published after another returned must
// arrive after it.
func TestReorderedOverlapping(t *testing.T) {
	t.Parallel()
	st := &emitStats{start: []int64{0, 1, 10}, end: []int64{5, 6, 15}}
	byStart, byEnd := []int32{0, 1, 2}, []int32{0, 1, 2}
	rank := make([]int32, 3)
	if n := reordered([]int32{1, 0, 2}, rank, byStart, byEnd, st); n != 0 {
		t.Errorf("overlapping 0 and 1 swapped: %d reordered; want 0", n)
	}
	if n := reordered([]int32{2, 0, 1}, rank, byStart, byEnd, st); n != 1 {
		t.Errorf("2 before 0 and 1: %d reordered; want 1 (message 2)", n)
	}
}

func TestParseInt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"42,", 42, true},
		{"1796400000000000000}", 1796400000000000000, true},
		{"-7]", -7, true},
		{"1.5e3,", 1500, true},
		{`"x"`, 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseInt([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseInt(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestRunSocketIO measures the real socket.io reference app in
// bench/socketio. It needs node and npm: without them it is skipped,
// except where tests must not skip (see internal/testenv).
func TestRunSocketIO(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Missing(t, "node is not on PATH: install Node.js (apt-get install nodejs npm)")
	}
	t.Parallel()
	dir, err := filepath.Abs("../../bench/socketio")
	if err != nil {
		t.Fatal(err)
	}
	npm := exec.Command("npm", "ci", "--no-audit", "--no-fund")
	npm.Dir = dir
	if out, err := npm.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}

	port := freePort(t)
	cmd := exec.Command(node, "server.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port))
	out := newTestWriter(t)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket.io app not up within 15s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	res, err := Run(context.Background(), Config{
		Target:   TargetSocketIO,
		URL:      base,
		Clients:  20,
		Emits:    30,
		Inflight: 4,
		PID:      cmd.Process.Pid,
		Timeout:  10 * time.Second,
		Logf:     t.Logf,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Delivered != 600 || res.LatencyUS.P50 <= 0 || res.MinRecipients != 20 {
		t.Errorf("delivered %d, p50 %dµs, min recipients %d; want 600, > 0, 20", res.Delivered, res.LatencyUS.P50, res.MinRecipients)
	}
	if res.CountAllSeconds != nil || res.CountFramesMax != nil {
		t.Errorf("count metrics on socket.io: %v, %v; want n/a", res.CountAllSeconds, res.CountFramesMax)
	}
	if res.RSSPerConnBytes == nil || res.ServerCPUSeconds == nil {
		t.Errorf("server figures missing with a PID")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// testWriter sends output to the test log until the test ends; later
// writes are dropped instead of panicking.
type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func newTestWriter(t *testing.T) *testWriter {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// TestAttackCLI runs an attack as a user would: the report says what the
// node answered, how the bystander and the node fared, and what it
// counted.
func TestAttackCLI(t *testing.T) {
	t.Parallel()
	srv := startSwitchboard(t, "s3cret")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-ws", "ws://" + srv.HTTPAddr() + "/ws", "-grpc", srv.GRPCAddr(), "-token", "s3cret",
		"-pid", strconv.Itoa(os.Getpid()), "-attack", "grpc-streams", "-attack-streams", "500", "-attack-for", "1500ms", "-settle", "500ms"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d; want 0\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	out := stdout.String()
	for _, want := range []string{
		"attack grpc-streams from 127.0.0.1", "answers: ", "Unauthenticated: ",
		"bystander during ", "node during ", "newcomers during the attack", `limit_rejections_total{limit="api_token"} +`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if code := run([]string{"-attack", "no-such-attack", "-settle", "0s", "-ws", "ws://" + srv.HTTPAddr() + "/ws", "-grpc", srv.GRPCAddr()}, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "unknown attack") {
		t.Errorf("unknown attack: exit %d, %q; want 2 and the list of attacks", code, stderr.String())
	}
}

// TestRunCluster spreads the clients and emits over two members of a
// cluster (an embedded NATS): every client is counted and gets every
// emit once, in one order, whichever node holds it; each node serves
// half the clients, and the server figures are both processes' sums.
func TestRunCluster(t *testing.T) {
	t.Parallel()
	nats := natstest.StartEmbedded(t)
	var nodes []*nodetest.Node
	for _, name := range []string{"a", "b"} {
		n := nodetest.Start(t, server.Config{
			AllowedOrigins: []string{"*"},
			Cluster:        cluster.Config{URLs: []string{nats.URL()}, Name: "swbench", Member: name},
			Logger:         slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		deadline := time.Now().Add(10 * time.Second)
		for !ready(n) {
			if time.Now().After(deadline) {
				t.Fatalf("node %s not ready", n.HTTPAddr())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	res, err := Run(context.Background(), Config{
		WSURL:    "ws://" + nodes[0].HTTPAddr() + "/ws,ws://" + nodes[1].HTTPAddr() + "/ws",
		GRPCAddr: nodes[0].GRPCAddr() + "," + nodes[1].GRPCAddr(),
		Clients:  20,
		Emits:    30,
		Inflight: 4,
		PID:      os.Getpid(),
		PIDs:     []int{os.Getpid()},
		Timeout:  10 * time.Second,
		Logf:     t.Logf,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Nodes != 2 || res.Delivered != 600 || res.OrderMismatch != 0 || res.MinRecipients != 20 {
		t.Errorf("nodes %d, delivered %d, order mismatch %d, min recipients %d; want 2, 600, 0, 20", res.Nodes, res.Delivered, res.OrderMismatch, res.MinRecipients)
	}
	for _, n := range nodes {
		if got := n.Hub().Stats().Delivered.Load(); got != 10*30 {
			t.Errorf("node %s delivered %d frames; want %d, half the clients' (clients alternate nodes)", n.HTTPAddr(), got, 10*30)
		}
	}
	// The same process twice: its RSS summed twice.
	if res.ServerRSSConnectedKB == nil || res.ServerRSSBeforeKB == nil {
		t.Fatalf("server figures missing with -pid: %+v", res)
	}
	var self procSampler
	self.pids = []int{os.Getpid()}
	if one := self.rss(); *res.ServerRSSConnectedKB < one {
		t.Errorf("RSS of two processes %d KiB; want at least one's %d KiB", *res.ServerRSSConnectedKB, one)
	}
}

func ready(n *nodetest.Node) bool {
	resp, err := http.Get("http://" + n.HTTPAddr() + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
