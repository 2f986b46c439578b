package server

// Hostile input: each abuse case must get its documented answer, be
// counted by its limit where it has one, and leave a bystander browser
// connected and receiving every emit.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/pkg/control"
	"github.com/switchboard-rt/switchboard/pkg/wsedge"
)

const (
	hostileToken     = "hostile-test-token"
	hostilePerIP     = 5
	hostileHandshake = time.Second
)

// hostile is the node under attack and the means to attack it.
type hostile struct {
	n    *node
	addr string // the HTTP listener, host:port
	seq  int    // for distinct client addresses
}

// from returns a header naming a client address of its own, believed
// since the test's loopback peer is a trusted proxy, so that the cases
// neither share the per-address limit with each other nor with the
// bystander.
func (h *hostile) from() http.Header {
	h.seq++
	return http.Header{"X-Forwarded-For": {fmt.Sprintf("198.51.100.%d", h.seq)}}
}

// browser connects a reading browser from its own address.
func (h *hostile) browser(t *testing.T) *browser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	b, _, err := dialBrowser(ctx, h.n.hc, h.n.ws, h.from())
	if err != nil {
		t.Fatalf("websocket.Dial: got %v; want nil", err)
	}
	t.Cleanup(b.closeNow)
	b.read()
	return b
}

// closedWith waits for b to be closed and returns its close code.
func closedWith(t *testing.T, b *browser) string {
	t.Helper()
	err := b.waitClosed(t, waitTimeout)
	ce, ok := closeError(err)
	if !ok {
		return fmt.Sprintf("no close frame (%v)", err)
	}
	if ce.Reason == "" {
		return fmt.Sprintf("%d without a reason", ce.Code)
	}
	return strconv.Itoa(int(ce.Code))
}

// sendFrame writes one frame, ignoring a failure: the server may have
// closed the connection already.
func sendFrame(b *browser, typ websocket.MessageType, p []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return b.ws.Write(ctx, typ, p)
}

// upgradeRequest is a raw WebSocket upgrade request, with extra header
// lines, lacking those named in drop.
func (h *hostile) upgradeRequest(extra []string, drop ...string) string {
	lines := []string{
		"Host: " + h.addr,
		"Upgrade: websocket",
		"Connection: Upgrade",
		"Sec-WebSocket-Version: 13",
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
		"X-Forwarded-For: " + h.from().Get("X-Forwarded-For"),
	}
	lines = slices.DeleteFunc(lines, func(l string) bool {
		return slices.ContainsFunc(drop, func(d string) bool { return strings.HasPrefix(l, d+":") })
	})
	return "GET /ws HTTP/1.1\r\n" + strings.Join(append(lines, extra...), "\r\n") + "\r\n\r\n"
}

// rawStatus sends req over a fresh TCP connection and returns the status
// of the response.
func rawStatus(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("net.Dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return fmt.Sprintf("no response (%v)", err)
	}
	resp.Body.Close()
	return strconv.Itoa(resp.StatusCode)
}

// cutAfter connects to addr, writes prefix one byte at a time every
// interval (never finishing it if it is long enough), and returns how
// long the server took to close the connection, or a failure.
func cutAfter(t *testing.T, addr, prefix string, interval time.Duration) (time.Duration, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("net.Dial: %v", err)
	}
	defer c.Close()
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		c.SetReadDeadline(time.Now().Add(waitTimeout))
		io.Copy(io.Discard, c) // until the server closes it
	}()
	for i := 0; ; i++ {
		select {
		case <-closed:
			return time.Since(start), nil
		case <-time.After(interval):
		}
		if i < len(prefix) {
			if _, err := c.Write([]byte{prefix[i]}); err != nil {
				<-closed
				return time.Since(start), nil
			}
		}
		if time.Since(start) > waitTimeout {
			return 0, fmt.Errorf("still open after %v", waitTimeout)
		}
	}
}

// grpcCode runs an EmitMessage and returns its status code.
func (h *hostile) grpcCode(ctx context.Context, req *switchboardv1.EmitMessageRequest) string {
	ctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	_, err := h.n.api.EmitMessage(ctx, req)
	return status.Code(err).String()
}

func authed() context.Context { return bearer(context.Background(), hostileToken) }

func TestHostileInput(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{
		APIToken: hostileToken,
		Limits: Limits{
			MaxConnsPerIP:    hostilePerIP,
			TrustedProxies:   []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
			HandshakeTimeout: hostileHandshake,
		},
	})
	h := &hostile{n: n, addr: n.srv.HTTPAddr()}
	bystander := n.dialReading(t)
	bystander.waitCount(t, 1)

	tests := []struct {
		name  string
		want  []string // acceptable outcomes: a close code, an HTTP status, a gRPC code, "cut"
		limit string   // the Rejections counter it must raise, if any
		run   func(t *testing.T) string
	}{
		{"invalid UTF-8 text frame", []string{"1008"}, wsedge.LimitInvalidFrame, func(t *testing.T) string {
			b := h.browser(t)
			sendFrame(b, websocket.MessageText, []byte("{\"type\":\"subscribe\",\"channel\":\"\xff\xfe\"}"))
			return closedWith(t, b)
		}},
		{"deeply nested JSON frame", []string{"1008"}, wsedge.LimitInvalidFrame, func(t *testing.T) string {
			b := h.browser(t)
			sendFrame(b, websocket.MessageText, []byte(`{"type":`+strings.Repeat("[", 2000)+strings.Repeat("]", 2000)+`}`))
			return closedWith(t, b)
		}},
		{"binary frame", []string{"1008"}, wsedge.LimitInvalidFrame, func(t *testing.T) string {
			b := h.browser(t)
			sendFrame(b, websocket.MessageBinary, []byte{0, 1, 2})
			return closedWith(t, b)
		}},
		{"frame past the size limit", []string{"1009"}, wsedge.LimitFrameSize, func(t *testing.T) string {
			b := h.browser(t)
			sendFrame(b, websocket.MessageText, []byte(`{"type":"subscribe","channel":"`+strings.Repeat("c", 5000)+`"}`))
			return closedWith(t, b)
		}},
		{"too many subscriptions", []string{"1008"}, wsedge.LimitSubscriptions, func(t *testing.T) string {
			b := h.browser(t)
			for i := range 65 {
				if sendFrame(b, websocket.MessageText, fmt.Appendf(nil, `{"type":"subscribe","channel":"c%d"}`, i)) != nil {
					break
				}
			}
			return closedWith(t, b)
		}},
		{"flood of frames", []string{"1008"}, wsedge.LimitFrameRate, func(t *testing.T) string {
			b := h.browser(t)
			for range 500 {
				if sendFrame(b, websocket.MessageText, []byte(`{"type":"unsubscribe","channel":"c"}`)) != nil {
					break
				}
			}
			err := b.waitClosed(t, waitTimeout)
			if ce, ok := closeError(err); ok && ce.Reason != "rate limit exceeded" {
				t.Errorf("close reason: got %q; want %q", ce.Reason, "rate limit exceeded")
			}
			return closedWith(t, b)
		}},
		{"flood of connections from one address", []string{"429"}, wsedge.LimitConnectionsPerIP, func(t *testing.T) string {
			hdr := h.from()
			var last string
			for i := range hostilePerIP + 1 {
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				b, resp, err := dialBrowser(ctx, n.hc, n.ws, hdr)
				cancel()
				if err == nil {
					t.Cleanup(b.closeNow)
					if i == hostilePerIP {
						return "connected past the limit"
					}
					continue
				}
				if resp == nil {
					return fmt.Sprintf("dial %d: %v", i, err)
				}
				last = strconv.Itoa(resp.StatusCode)
				if i < hostilePerIP {
					return fmt.Sprintf("dial %d refused with %s within the limit", i, last)
				}
			}
			return last
		}},
		{"valid raw upgrade (control)", []string{"101"}, "", func(t *testing.T) string {
			return rawStatus(t, h.addr, h.upgradeRequest(nil))
		}},
		{"upgrade without Sec-WebSocket-Key", []string{"400"}, "", func(t *testing.T) string {
			return rawStatus(t, h.addr, h.upgradeRequest(nil, "Sec-WebSocket-Key"))
		}},
		{"upgrade with Sec-WebSocket-Version 8", []string{"400", "426"}, "", func(t *testing.T) string {
			return rawStatus(t, h.addr, h.upgradeRequest([]string{"Sec-WebSocket-Version: 8"}, "Sec-WebSocket-Version"))
		}},
		{"upgrade without Upgrade header", []string{"426"}, "", func(t *testing.T) string {
			return rawStatus(t, h.addr, h.upgradeRequest(nil, "Upgrade"))
		}},
		{"upgrade from a foreign Origin", []string{"403"}, "", func(t *testing.T) string {
			return rawStatus(t, h.addr, h.upgradeRequest([]string{"Origin: https://evil.example"}))
		}},
		{"garbage instead of HTTP", []string{"400"}, "", func(t *testing.T) string {
			return rawStatus(t, h.addr, "\x16\x03\x01 not http at all\r\n\r\n")
		}},
		{"slow-loris upgrade request", []string{"cut"}, "", func(t *testing.T) string {
			took, err := cutAfter(t, h.addr, h.upgradeRequest(nil), 50*time.Millisecond)
			if err != nil {
				return err.Error()
			}
			if took < hostileHandshake/2 || took > hostileHandshake+3*time.Second {
				return fmt.Sprintf("cut after %v; want about %v", took, hostileHandshake)
			}
			return "cut"
		}},
		{"silent HTTP client", []string{"cut"}, "", func(t *testing.T) string {
			took, err := cutAfter(t, h.addr, "", 50*time.Millisecond)
			if err != nil {
				return err.Error()
			}
			if took > hostileHandshake+3*time.Second {
				return fmt.Sprintf("cut after %v; want about %v", took, hostileHandshake)
			}
			return "cut"
		}},
		{"oversized gRPC request", []string{"ResourceExhausted", "InvalidArgument"}, "", func(t *testing.T) string {
			return h.grpcCode(authed(), &switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewStringValue(strings.Repeat("x", 5<<20))})
		}},
		{"data over MaxDataBytes", []string{"InvalidArgument"}, control.LimitDataSize, func(t *testing.T) string {
			return h.grpcCode(authed(), &switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewStringValue(strings.Repeat("x", control.DefaultMaxDataBytes))})
		}},
		{"NaN in data", []string{"InvalidArgument"}, "", func(t *testing.T) string {
			return h.grpcCode(authed(), &switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewNumberValue(math.NaN())})
		}},
		{"data nested too deep", []string{"InvalidArgument"}, control.LimitDataDepth, func(t *testing.T) string {
			return h.grpcCode(authed(), &switchboardv1.EmitMessageRequest{Event: "E", Data: nested(control.MaxDataDepth+1, structpb.NewNullValue())})
		}},
		{"kind-less Value in data", []string{"InvalidArgument"}, "", func(t *testing.T) string {
			return h.grpcCode(authed(), &switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{{}}})})
		}},
		{"event with control characters", []string{"InvalidArgument"}, "", func(t *testing.T) string {
			return h.grpcCode(authed(), &switchboardv1.EmitMessageRequest{Event: "E\x00\n"})
		}},
		{"missing token", []string{"Unauthenticated"}, "", func(t *testing.T) string {
			return h.grpcCode(context.Background(), &switchboardv1.EmitMessageRequest{Event: "E"})
		}},
		{"wrong token", []string{"Unauthenticated"}, "", func(t *testing.T) string {
			return h.grpcCode(bearer(context.Background(), "not-"+hostileToken), &switchboardv1.EmitMessageRequest{Event: "E"})
		}},
		{"HTTP/1 request on the gRPC port", []string{"cut"}, "", func(t *testing.T) string {
			if _, err := cutAfter(t, n.srv.GRPCAddr(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n", time.Millisecond); err != nil {
				return err.Error()
			}
			return "cut"
		}},
		{"garbage on the gRPC port", []string{"cut"}, "", func(t *testing.T) string {
			if _, err := cutAfter(t, n.srv.GRPCAddr(), strings.Repeat("\x00\xff garbage ", 20), time.Millisecond); err != nil {
				return err.Error()
			}
			return "cut"
		}},
		{"silent client on the gRPC port", []string{"cut"}, "", func(t *testing.T) string {
			took, err := cutAfter(t, n.srv.GRPCAddr(), "", 50*time.Millisecond)
			if err != nil {
				return err.Error()
			}
			if took > hostileHandshake+3*time.Second {
				return fmt.Sprintf("cut after %v; want about %v", took, hostileHandshake)
			}
			return "cut"
		}},
	}
	for i, tc := range tests {
		// Not parallel: every case shares the bystander, which must see
		// an emit just before and just after it.
		t.Run(tc.name, func(t *testing.T) {
			before := n.srv.Rejections()
			id := hostileEmit(t, n, fmt.Sprintf("before-%d", i))
			bystander.waitMessage(t, id)

			got := tc.run(t)
			if !slices.Contains(tc.want, got) {
				t.Errorf("got %s; want %s", got, strings.Join(tc.want, " or "))
			}
			t.Logf("%s: %s", tc.name, got)

			id = hostileEmit(t, n, fmt.Sprintf("after-%d", i))
			bystander.waitMessage(t, id)
			if err := bystander.readErr(); err != nil {
				t.Fatalf("bystander: got %v; want still connected", err)
			}
			if tc.limit != "" {
				if after := n.srv.Rejections(); after[tc.limit] <= before[tc.limit] {
					t.Errorf("Rejections()[%s]: got %d before and %d after; want it to grow", tc.limit, before[tc.limit], after[tc.limit])
				}
			}
		})
	}
	ctx, cancel := context.WithTimeout(authed(), waitTimeout)
	defer cancel()
	if resp, err := n.api.GetOnlineCount(ctx, &switchboardv1.GetOnlineCountRequest{}); err != nil || resp.GetConnections() < 1 {
		t.Fatalf("GetOnlineCount: got %v, %v; want the bystander at least", resp, err)
	}
}

// hostileEmit emits with the token and returns the message id.
func hostileEmit(t *testing.T, n *node, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(authed(), waitTimeout)
	defer cancel()
	resp, err := n.api.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "Probe", IdempotencyKey: key})
	if err != nil {
		t.Fatalf("EmitMessage: got %v; want nil", err)
	}
	return resp.GetId()
}

// TestLimitsWired checks that the node passes its Limits to the edge and
// the API: a total connection limit (503) and an emit rate limit
// (RESOURCE_EXHAUSTED), each counted.
func TestLimitsWired(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{Limits: Limits{MaxConns: 1, EmitRate: 0.01, EmitBurst: 2}})
	n.dialReading(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, resp, err := dialBrowser(ctx, n.hc, n.ws, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial past MaxConns: got %v, %v; want 503", resp, err)
	}
	var emits []codes.Code
	for range 3 {
		_, err := n.api.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E"})
		emits = append(emits, status.Code(err))
	}
	if want := []codes.Code{codes.OK, codes.OK, codes.ResourceExhausted}; !slices.Equal(emits, want) {
		t.Fatalf("emits: got %v; want %v", emits, want)
	}
	got := n.srv.Rejections()
	if got[wsedge.LimitConnections] != 1 || got[control.LimitEmitRate] != 1 {
		t.Fatalf("Rejections: got %v; want connections 1, emit_rate 1", got)
	}
	m := n.metrics(t)
	for _, want := range []string{
		`switchboard_limit_rejections_total{limit="connections"} 1`,
		`switchboard_limit_rejections_total{limit="emit_rate"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics: no line %q in\n%s", want, m)
		}
	}
}
