package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
)

// scrape returns the body of GET url.
func scrape(t testing.TB, hc *http.Client, url string) string {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: got %s; want 200", url, resp.Status)
	}
	return string(body)
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	browsers := []*browser{n.dialReading(t), n.dialReading(t), n.dialReading(t)}
	n.waitCount(t, "", 3)
	browsers[0].send(t, `{"type":"subscribe","channel":"quotes"}`)
	n.waitCount(t, "quotes", 1)
	all := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "E"})
	quote := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "Q", Channel: "quotes"})
	for _, b := range browsers {
		b.waitMessage(t, all.GetId())
	}
	browsers[0].waitMessage(t, quote.GetId())
	n.srv.Metrics().Reject("test_limit")

	body := scrape(t, n.hc, n.http+"/metrics")
	for _, want := range []string{
		"\nswitchboard_connections 3\n",
		"\nswitchboard_local_connections 3\n",
		"\nswitchboard_subscriptions 1\n",
		"\nswitchboard_channels 1\n",
		"\nswitchboard_messages_emitted_total 2\n",
		"\nswitchboard_frames_delivered_total 4\n",
		"\nswitchboard_frames_dropped_total{reason=\"overflow\"} 0\n",
		"\nswitchboard_frames_dropped_total{reason=\"closed\"} 0\n",
		"\nswitchboard_slow_disconnects_total 0\n",
		"\nswitchboard_write_failures_total 0\n",
		"\nswitchboard_limit_rejections_total{limit=\"test_limit\"} 1\n",
		"\nswitchboard_active 1\n",
		"\nswitchboard_standby 0\n",
		"\nswitchboard_uptime_seconds ",
		`grpc_server_handled_total{grpc_code="OK",grpc_method="EmitMessage",grpc_service="switchboard.v1.SwitchboardService",grpc_type="unary"} 2`,
		`grpc_server_started_total{grpc_method="GetOnlineCount",grpc_service="switchboard.v1.SwitchboardService",grpc_type="unary"}`,
		`grpc_server_handling_seconds_bucket{`,
		"\ngo_goroutines ",
		"\nprocess_start_time_seconds ",
		"\npromhttp_metric_handler_errors_total{cause=\"gathering\"} 0\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q; got:\n%s", want, body)
		}
	}

	browsers[1].closeNow()
	n.waitCount(t, "", 2)
	body = scrape(t, n.hc, n.http+"/metrics")
	for _, want := range []string{"\nswitchboard_connections 2\n", "\nswitchboard_local_connections 2\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics after a browser left lacks %q", want)
		}
	}
}

// TestMetricsRegistries checks that two nodes in one process keep their
// metrics apart.
func TestMetricsRegistries(t *testing.T) {
	t.Parallel()
	a, b := startNode(t, Config{}), startNode(t, Config{})
	a.dialReading(t)
	a.waitCount(t, "", 1)
	for _, tt := range []struct {
		name string
		n    *node
		want string
	}{{"a", a, "1"}, {"b", b, "0"}} {
		want := "# HELP switchboard_connections Open browser connections in the cluster.\n# TYPE switchboard_connections gauge\nswitchboard_connections " + tt.want + "\n"
		if err := testutil.GatherAndCompare(tt.n.srv.Registry(), strings.NewReader(want), "switchboard_connections"); err != nil {
			t.Errorf("node %s: %v", tt.name, err)
		}
	}
}

// syncBuffer collects logs from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	n := startNode(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	tests := []struct {
		name string
		sent string // "" sends none
		want string // "" wants a generated one
	}{
		{name: "from the caller", sent: "req-42.abc", want: "req-42.abc"},
		{name: "generated", sent: ""},
		{name: "unusable replaced", sent: "has space"},
		{name: "too long replaced", sent: strings.Repeat("x", 129)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
			defer cancel()
			if tt.sent != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, RequestIDKey, tt.sent)
			}
			var header metadata.MD
			if _, err := n.api.GetOnlineCount(ctx, &switchboardv1.GetOnlineCountRequest{}, grpc.Header(&header)); err != nil {
				t.Fatalf("GetOnlineCount: got %v; want nil", err)
			}
			got := header.Get(RequestIDKey)
			if len(got) != 1 || got[0] == "" {
				t.Fatalf("response header %s: got %q; want one id", RequestIDKey, got)
			}
			if tt.want != "" && got[0] != tt.want {
				t.Errorf("response header %s: got %q; want %q", RequestIDKey, got[0], tt.want)
			}
			if tt.want == "" && got[0] == tt.sent {
				t.Errorf("response header %s: got the unusable %q back; want a new id", RequestIDKey, got[0])
			}
			eventually(t, waitTimeout, func() (bool, string) {
				return strings.Contains(logs.String(), "request_id="+got[0]), "the log lacks request_id=" + got[0]
			})
		})
	}

	t.Run("stream", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, RequestIDKey, "watch-1")
		stream, err := n.api.WatchCount(ctx, &switchboardv1.WatchCountRequest{})
		if err != nil {
			t.Fatalf("WatchCount: got %v; want nil", err)
		}
		header, err := stream.Header()
		if err != nil {
			t.Fatalf("Header: got %v; want nil", err)
		}
		if got := header.Get(RequestIDKey); len(got) != 1 || got[0] != "watch-1" {
			t.Errorf("response header %s: got %q; want [watch-1]", RequestIDKey, got)
		}
		cancel()
		eventually(t, waitTimeout, func() (bool, string) {
			return strings.Contains(logs.String(), "request_id=watch-1"), "the log lacks request_id=watch-1"
		})
	})
}

func TestAdmin(t *testing.T) {
	t.Parallel()
	off := startNode(t, Config{})
	if got := off.srv.AdminAddr(); got != "" {
		t.Errorf("AdminAddr by default: got %q; want none", got)
	}
	if code, err := off.get("/debug/pprof/"); err != nil || code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ on the HTTP listener: got %d, %v; want 404", code, err)
	}

	on := startNode(t, Config{AdminAddr: "127.0.0.1:0"})
	admin := "http://" + on.srv.AdminAddr()
	if body := scrape(t, on.hc, admin+"/debug/pprof/"); !strings.Contains(body, "goroutine") {
		t.Errorf("GET /debug/pprof/: got %q; want the pprof index", body)
	}
	if body := scrape(t, on.hc, admin+"/debug/pprof/goroutine?debug=1"); !strings.Contains(body, "goroutine profile") {
		t.Errorf("GET /debug/pprof/goroutine: got %.100q; want a goroutine profile", body)
	}
	if body := scrape(t, on.hc, admin+"/metrics"); !strings.Contains(body, "\nswitchboard_connections 0\n") {
		t.Errorf("GET /metrics on the admin listener: lacks switchboard_connections 0")
	}
	if code, err := on.get("/debug/pprof/"); err != nil || code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ on the HTTP listener: got %d, %v; want 404", code, err)
	}
	if err := on.stop(t); err != nil {
		t.Fatalf("Run: got %v; want nil", err)
	}
	if _, err := on.hc.Get(admin + "/metrics"); err == nil {
		t.Error("admin listener after shutdown: got an answer; want it closed")
	}
}
