package wsedge

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/coder/websocket"
)

func TestClientIP(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	tests := []struct {
		name    string
		remote  string
		xff     []string
		trusted []netip.Prefix
		want    string
	}{
		{"no proxy", "203.0.113.1:5000", nil, trusted, "203.0.113.1"},
		{"untrusted peer's XFF ignored", "203.0.113.1:5000", []string{"198.51.100.1"}, trusted, "203.0.113.1"},
		{"no trusted proxies: XFF ignored", "10.0.0.1:5000", []string{"198.51.100.1"}, nil, "10.0.0.1"},
		{"trusted proxy", "10.0.0.1:5000", []string{"198.51.100.1"}, trusted, "198.51.100.1"},
		{"spoofed left entries ignored", "10.0.0.1:5000", []string{"1.2.3.4, 5.6.7.8, 198.51.100.1"}, trusted, "198.51.100.1"},
		{"chain of trusted proxies", "10.0.0.1:5000", []string{"1.2.3.4, 198.51.100.1, 10.0.0.9"}, trusted, "198.51.100.1"},
		{"several headers", "10.0.0.1:5000", []string{"1.2.3.4", "198.51.100.1, 10.1.1.1"}, trusted, "198.51.100.1"},
		{"trusted proxy without XFF", "10.0.0.1:5000", nil, trusted, "10.0.0.1"},
		{"all hops trusted", "10.0.0.1:5000", []string{"10.2.2.2, 10.3.3.3"}, trusted, "10.2.2.2"},
		{"garbage hop", "10.0.0.1:5000", []string{"198.51.100.1, bogus"}, trusted, "10.0.0.1"},
		{"IPv6", "[fd00::1]:5000", []string{"2001:db8::7"}, trusted, "2001:db8::7"},
		{"IPv4-mapped", "[::ffff:203.0.113.1]:5000", nil, trusted, "203.0.113.1"},
	}
	for _, tc := range tests {
		r := httptest.NewRequest("GET", "/ws", nil)
		r.RemoteAddr = tc.remote
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := clientIP(r, tc.trusted); got != netip.MustParseAddr(tc.want) {
			t.Errorf("%s: clientIP: got %v; want %s", tc.name, got, tc.want)
		}
	}
}

// dialStatus tries an upgrade and returns the HTTP status of a refusal, 0
// on success; a successful connection is closed when the test ends.
func (e *edge) dialStatus(t *testing.T, header http.Header) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{HTTPClient: e.srv.Client(), HTTPHeader: header})
	if err == nil {
		t.Cleanup(func() { ws.CloseNow() })
		return 0
	}
	if resp == nil {
		t.Fatalf("Dial: got %v without a response", err)
	}
	return resp.StatusCode
}

func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     Config
		headers []string // X-Forwarded-For of each dial in turn; "" for none
		want    []int    // status of each dial, 0 when it connects
		limit   string
	}{
		{"total", Config{MaxConns: 2}, []string{"", "", ""}, []int{0, 0, 503}, LimitConnections},
		{"per IP", Config{MaxConnsPerIP: 2}, []string{"", "", ""}, []int{0, 0, 429}, LimitConnectionsPerIP},
		{
			"per IP behind a trusted proxy",
			Config{MaxConnsPerIP: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
			[]string{"198.51.100.1", "198.51.100.2", "198.51.100.1"},
			[]int{0, 0, 429},
			LimitConnectionsPerIP,
		},
		{
			"XFF ignored without trusted proxies",
			Config{MaxConnsPerIP: 1},
			[]string{"198.51.100.1", "198.51.100.2"},
			[]int{0, 429},
			LimitConnectionsPerIP,
		},
		{
			"IPv6 counts by /64",
			Config{MaxConnsPerIP: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
			[]string{"2001:db8:1:2::1", "2001:db8:1:3::1", "2001:db8:1:2::2"},
			[]int{0, 0, 429},
			LimitConnectionsPerIP,
		},
		{"no limits", Config{MaxConns: -1, MaxConnsPerIP: -1}, []string{"", "", ""}, []int{0, 0, 0}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := startEdge(t, tc.cfg)
			for i, xff := range tc.headers {
				h := http.Header{}
				if xff != "" {
					h.Set("X-Forwarded-For", xff)
				}
				if got := e.dialStatus(t, h); got != tc.want[i] {
					t.Fatalf("dial %d: got status %d; want %d", i, got, tc.want[i])
				}
			}
			refused := 0
			for _, w := range tc.want {
				if w != 0 {
					refused++
				}
			}
			if tc.limit != "" {
				if got := e.h.Rejections()[tc.limit]; got != int64(refused) {
					t.Fatalf("Rejections()[%s]: got %d; want %d", tc.limit, got, refused)
				}
			}
		})
	}
}

// TestConnectionLimitsFreed checks that a closed connection gives its
// slot back.
func TestConnectionLimitsFreed(t *testing.T) {
	t.Parallel()
	e := startEdge(t, Config{MaxConns: 1, MaxConnsPerIP: 1})
	ws := e.dial(t, nil)
	if got := e.dialStatus(t, nil); got != 503 {
		t.Fatalf("second dial: got %d; want 503", got)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	e.waitCount(t, 0)
	eventually(t, func() (bool, string) {
		return e.h.conns.Load() == 0, "connection slot still held"
	})
	if got := e.dialStatus(t, nil); got != 0 {
		t.Fatalf("dial after close: got %d; want a connection", got)
	}
}

func TestFrameRate(t *testing.T) {
	t.Parallel()
	e := startEdge(t, Config{FrameRate: 1, FrameBurst: 5})
	ws := e.dial(t, nil)
	ctx := context.Background()
	for range 5 {
		if err := ws.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","channel":"c"}`)); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	eventually(t, func() (bool, string) {
		return e.hub.Count("c") == 1, "not subscribed"
	})
	// The burst is spent: the next frames close the connection.
	for range 3 {
		ws.Write(ctx, websocket.MessageText, []byte(`{"type":"unsubscribe","channel":"c"}`))
	}
	err := readUntilClosed(ws)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "rate limit exceeded" {
		t.Fatalf("got %v; want close 1008 \"rate limit exceeded\"", err)
	}
	if got := e.h.Rejections()[LimitFrameRate]; got != 1 {
		t.Fatalf("Rejections()[%s]: got %d; want 1", LimitFrameRate, got)
	}
}

func TestOnReject(t *testing.T) {
	t.Parallel()
	got := make(chan string, 1)
	e := startEdge(t, Config{MaxConns: 1, OnReject: func(l string) { got <- l }})
	e.dial(t, nil)
	e.dialStatus(t, nil)
	if l := <-got; l != LimitConnections {
		t.Fatalf("OnReject: got %q; want %q", l, LimitConnections)
	}
}
