package server

// What one address can make a node hold, and the answers it gets: the
// limits at accept, on gRPC streams and metadata, before the token check
// and in the logs. internal/attack plays the attacker; test/hostile runs
// the same attacks, at scale, against a node process with a browser
// watching.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/types/known/structpb"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/internal/attack"
	"github.com/switchboard-rt/switchboard/internal/lograte"
	"github.com/switchboard-rt/switchboard/internal/ratelimit"
)

// target returns the node as an attacker from 127.0.0.1 sees it.
func (n *node) target() attack.Target {
	return attack.Target{HTTP: n.srv.HTTPAddr(), GRPC: n.srv.GRPCAddr(), From: "127.0.0.1"}
}

// runAttack runs a against n until answered reports true or waitTimeout
// passes, and returns its tally; the attack goes on, holding what it
// opened, until the test ends or stop is called.
func runAttack(t *testing.T, n *node, a attack.Attack, answered func(*attack.Tally) bool) (tally *attack.Tally, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tally = new(attack.Tally)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, n.target(), tally) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("attack: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(waitTimeout)
	for !answered(tally) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return tally, stop
}

// TestConnLimitsAtAccept: connections that never upgrade are bounded per
// address and in all, on both listeners, as soon as they are accepted;
// upgraded ones leave the HTTP count; other addresses are served.
func TestConnLimitsAtAccept(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{Limits: Limits{MaxHTTPConnsPerIP: 3, MaxGRPCConnsPerIP: 2}})
	freeHTTP(t, n)

	idle, stop := runAttack(t, n, attack.IdleHTTP{Conns: 5}, func(ta *attack.Tally) bool { return ta.Get("200")+ta.Get("429") == 5 })
	if idle.Get("200") != 3 || idle.Get("429") != 2 {
		t.Errorf("5 idle HTTP connections from one address, 3 allowed: got %s; want 200: 3, 429: 2", idle)
	}
	p := attack.ProbeNode(context.Background(), attack.Target{HTTP: n.srv.HTTPAddr(), GRPC: n.srv.GRPCAddr(), From: "127.0.0.2"}, "", waitTimeout)
	if p.Healthz < 0 || p.Upgrade < 0 || p.GRPC < 0 {
		t.Errorf("another address: %s; want all served", p)
	}

	// An upgrade is an HTTP connection until it is one: WebSockets count
	// in MaxConnsPerIP, not here.
	stop()
	freeHTTP(t, n)
	for i := range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		b, _, err := dialBrowser(ctx, n.hc, n.ws, nil)
		cancel()
		if err != nil {
			t.Fatalf("browser %d past 3 HTTP connections: got %v; want upgraded", i, err)
		}
		t.Cleanup(b.closeNow)
	}

	// The node's own client holds one gRPC connection: the second is
	// served, the third's call fails, saying why.
	n.count(t, "")
	for i, want := range []codes.Code{codes.OK, codes.ResourceExhausted} {
		cc, err := grpc.NewClient(n.srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		_, err = switchboardv1.NewSwitchboardServiceClient(cc).GetOnlineCount(ctx, &switchboardv1.GetOnlineCountRequest{})
		cancel()
		if status.Code(err) != want || want != codes.OK && !strings.Contains(err.Error(), "too many gRPC connections from one address") {
			t.Errorf("gRPC connection %d from one address, 2 allowed: got %v; want %v, saying why", i+2, err, want)
		}
	}
	got := n.srv.Rejections()
	if got[LimitHTTPConnsPerIP] != 2 || got[LimitGRPCConnsPerIP] < 1 {
		t.Errorf("Rejections: got %s %d, %s %d; want 2, at least 1", LimitHTTPConnsPerIP, got[LimitHTTPConnsPerIP], LimitGRPCConnsPerIP, got[LimitGRPCConnsPerIP])
	}

	total := startNode(t, Config{Limits: Limits{MaxHTTPConns: 2}})
	freeHTTP(t, total)
	idle, _ = runAttack(t, total, attack.IdleHTTP{Conns: 3}, func(ta *attack.Tally) bool { return ta.Get("200")+ta.Get("503") == 3 })
	if idle.Get("200") != 2 || idle.Get("503") != 1 {
		t.Errorf("3 idle HTTP connections, 2 allowed in all: got %s; want 200: 2, 503: 1", idle)
	}
}

// freeHTTP closes the node's own idle HTTP connections and waits until the
// node counts none.
func freeHTTP(t *testing.T, n *node) {
	t.Helper()
	n.hc.CloseIdleConnections()
	eventually(t, waitTimeout, func() (bool, string) {
		got := n.srv.httpConns.Open()
		return got == 0, fmt.Sprintf("HTTP connections: got %d; want 0", got)
	})
}

// TestIdleTimeout: idle keep-alive HTTP connections and gRPC connections
// without a call are closed after IdleTimeout.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{Limits: Limits{IdleTimeout: 300 * time.Millisecond}})
	idle, _ := runAttack(t, n, attack.IdleHTTP{Conns: 2}, func(ta *attack.Tally) bool { return ta.Get("closed idle") == 2 })
	if idle.Get("closed idle") != 2 {
		t.Errorf("idle HTTP connections: got %s; want both closed", idle)
	}
	silent, _ := runAttack(t, n, attack.Streams{Conns: 1}, func(ta *attack.Tally) bool { return ta.Get("cut") == 1 })
	if !strings.Contains(silent.String(), "GOAWAY") || silent.Get("cut") != 1 {
		t.Errorf("gRPC connection without a call: got %s; want a GOAWAY, then closed", silent)
	}
}

// TestTokenBeforeAnything: a call without the token is refused before the
// node reads its request or starts a goroutine for it, with a message
// that says how to send the token.
func TestTokenBeforeAnything(t *testing.T) {
	t.Parallel()
	const token = "abuse-test-token"
	n := startNode(t, Config{APIToken: token})

	for _, tc := range []struct {
		name, auth, want string
	}{
		{"missing", "", msgNoToken},
		{"other scheme", "Basic " + token, msgBadScheme},
		{"wrong", "Bearer not-" + token, msgWrongToken},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		if tc.auth != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tc.auth)
		}
		_, err := n.api.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E"})
		cancel()
		if s := status.Convert(err); s.Code() != codes.Unauthenticated || s.Message() != tc.want {
			t.Errorf("%s token: got %v; want UNAUTHENTICATED %q", tc.name, err, tc.want)
		}
	}

	// A request that does not even decode: refused for its token, never
	// read.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	garbage := []byte{0xff, 0xff, 0xff, 0xff, 0x0f}
	var resp []byte
	err := n.conn.Invoke(ctx, "/switchboard.v1.SwitchboardService/EmitMessage", &garbage, &resp, grpc.ForceCodec(rawBytes{}))
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("undecodable request without a token: got %v; want UNAUTHENTICATED", err)
	}

	// Streams that never send a body: each answered at once, no goroutine
	// held, and the connection closed once the address has made too many
	// refused calls.
	before := runtime.NumGoroutine()
	var most atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				if g := int64(runtime.NumGoroutine()); g > most.Load() {
					most.Store(g)
				}
			}
		}
	}()
	tally, _ := runAttack(t, n, attack.Streams{Conns: 1, Streams: 5000}, func(ta *attack.Tally) bool { return ta.Get("cut") == 1 })
	close(stop)
	// The answers may be lost to the reset that ends the connection.
	if tally.Get("cut") != 1 {
		t.Errorf("5000 streams without a body or a token: got %s; want them refused, then the connection cut", tally)
	}
	// Other tests run meanwhile: the bound is loose, a goroutine per
	// stream would pass it.
	if grown := most.Load() - int64(before); grown > 2500 {
		t.Errorf("goroutines grew by %d during the streams; want them refused without one each", grown)
	}
	if got := n.srv.Rejections(); got[LimitAPIToken] < 100 || got[LimitGRPCRefusals] < 1 {
		t.Errorf("Rejections: got %s %d, %s %d; want at least 100, 1", LimitAPIToken, got[LimitAPIToken], LimitGRPCRefusals, got[LimitGRPCRefusals])
	}
}

// rawBytes sends a request as it is.
type rawBytes struct{}

func (rawBytes) Marshal(v any) ([]byte, error)      { return *v.(*[]byte), nil }
func (rawBytes) Unmarshal(data []byte, v any) error { *v.(*[]byte) = data; return nil }
func (rawBytes) Name() string                       { return "proto" }

// TestGRPCStreamLimit: calls in progress on one connection are bounded.
func TestGRPCStreamLimit(t *testing.T) {
	t.Parallel()
	const token = "abuse-test-token"
	n := startNode(t, Config{APIToken: token, Limits: Limits{MaxGRPCStreams: 10}})
	tally, _ := runAttack(t, n, attack.Streams{Conns: 1, Streams: 50, Token: token}, func(ta *attack.Tally) bool {
		return ta.Get("RST_STREAM REFUSED_STREAM") >= 40
	})
	if got := tally.Get("RST_STREAM REFUSED_STREAM"); got != 40 {
		t.Errorf("50 streams with 10 allowed: got %s; want 40 refused", tally)
	}
}

// TestMetadataLimit: a header indexed once and referenced many times,
// megabytes once decoded, resets the stream at the header list limit.
func TestMetadataLimit(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	tally, _ := runAttack(t, n, attack.Metadata{Streams: 5}, func(ta *attack.Tally) bool {
		return ta.Get("RST_STREAM FRAME_SIZE_ERROR") == 5
	})
	if tally.Get("RST_STREAM FRAME_SIZE_ERROR") != 5 {
		t.Errorf("health Watch streams with 6 MB of metadata each: got %s; want each reset", tally)
	}
}

// TestRequestSizeFromDataLimit: the gRPC request size follows the data
// limit, so that data far past it is refused before it is decoded.
func TestRequestSizeFromDataLimit(t *testing.T) {
	t.Parallel()
	if got, want := maxRecvMsgSize(0), 4*64<<10+64<<10; got != want {
		t.Errorf("maxRecvMsgSize(default): got %d; want %d", got, want)
	}
	if got, want := maxRecvMsgSize(1<<20), 4<<20+64<<10; got != want {
		t.Errorf("maxRecvMsgSize(1 MiB): got %d; want %d", got, want)
	}
	n := startNode(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := n.api.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E", Data: structpb.NewStringValue(strings.Repeat("x", 1<<20))})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("1 MiB of data: got %v; want RESOURCE_EXHAUSTED", err)
	}
}

// TestRefusalLogs: refusals repeated by one client write a line a second,
// with a count, and a client's values are cut short.
func TestRefusalLogs(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	n := startNode(t, Config{APIToken: "abuse-test-token", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer wrong")
	for range 300 {
		n.api.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "E"})
	}
	origin := "Origin: https://" + strings.Repeat("o", 10<<10) + ".example"
	for range 100 {
		rawStatus(t, n.srv.HTTPAddr(), (&hostile{addr: n.srv.HTTPAddr(), n: n}).upgradeRequest([]string{origin}))
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	var refusedCalls, refusedUpgrades, long int
	for _, l := range lines {
		if len(l) > 2<<10 {
			if long++; long == 1 {
				t.Errorf("a log line of %d bytes: %.200s…", len(l), l)
			}
		}
		refusedCalls += strings.Count(l, "refused gRPC calls without a valid API token")
		refusedUpgrades += strings.Count(l, "refused websocket upgrades")
	}
	if long > 1 {
		t.Errorf("%d log lines over 2 KiB; want none", long)
	}
	// A line a second at most; the run takes a few.
	if refusedCalls < 1 || refusedCalls > 10 || refusedUpgrades < 1 || refusedUpgrades > 10 {
		t.Errorf("log lines for 300 refused calls and 100 refused upgrades: got %d and %d; want a few each", refusedCalls, refusedUpgrades)
	}
	if len(logs.String()) > 32<<10 {
		t.Errorf("log: %d bytes for 400 refusals; want a few KiB", len(logs.String()))
	}
}

// TestRapidReset: streams opened and cancelled at once, without a token,
// get the connection closed once the address is past its budget of
// refused calls; a caller that reconnects gets little for each
// connection.
func TestRapidReset(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{APIToken: "abuse-test-token"})
	tally, stopReset := runAttack(t, n, attack.RapidReset{Conns: 1}, func(ta *attack.Tally) bool { return ta.Get("connections") >= 3 })
	stopReset()
	// The attacker connects again when the node cuts its connection.
	if tally.Get("connections") < 3 {
		t.Errorf("rapid reset: got %s; want the node to cut the connections", tally)
	}
}

// TestHeaderLimit: request headers past MaxHeaderBytes get 431.
func TestHeaderLimit(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	h := &hostile{n: n, addr: n.srv.HTTPAddr()}
	pad := "X-Pad: " + strings.Repeat("p", 64<<10)
	if got := rawStatus(t, h.addr, h.upgradeRequest([]string{pad})); got != "431" {
		t.Errorf("an upgrade with 64 KiB of headers: got %s; want 431", got)
	}
	pad = "X-Pad: " + strings.Repeat("p", 8<<10)
	if got := rawStatus(t, h.addr, h.upgradeRequest([]string{pad})); got != "101" {
		t.Errorf("an upgrade with 8 KiB of headers: got %s; want 101", got)
	}
}

// TestPublicMetrics: the public /metrics renders a few times a second at
// most however often it is asked, leaves out the namespace's network
// counters, and can be left to the admin listener.
func TestPublicMetrics(t *testing.T) {
	t.Parallel()
	var renders atomic.Int64
	c := &metricsCache{rate: 5, burst: 10, h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		renders.Add(1)
		fmt.Fprintf(w, "render %d %s\n", renders.Load(), r.Header.Get("Accept-Encoding"))
	})}
	start := time.Now()
	for range 500 {
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Body.String(), "render ") {
			t.Fatalf("scrape: got %d %q", rec.Code, rec.Body.String())
		}
	}
	if most := 10 + 5*time.Since(start).Seconds() + 1; float64(renders.Load()) > most {
		t.Errorf("renders for 500 scrapes: got %d; want at most %.0f", renders.Load(), most)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip, deflate")
	c.ServeHTTP(rec, req)
	if !strings.HasSuffix(rec.Body.String(), " gzip\n") {
		t.Errorf("a gzip scrape: got %q; want a rendering of its own", rec.Body.String())
	}

	n := startNode(t, Config{AdminAddr: "127.0.0.1:0"})
	if body := n.metrics(t); strings.Contains(body, "process_network_") || !strings.Contains(body, "process_open_fds") {
		t.Errorf("/metrics: want process metrics without process_network_*")
	}
	private := startNode(t, Config{AdminAddr: "127.0.0.1:0", PrivateMetrics: true})
	if code, err := private.get("/metrics"); err != nil || code != http.StatusNotFound {
		t.Errorf("public /metrics with PrivateMetrics: got %d, %v; want 404", code, err)
	}
	if body := scrape(t, private.hc, "http://"+private.srv.AdminAddr()+"/metrics"); !strings.Contains(body, "\nswitchboard_connections 0\n") {
		t.Errorf("admin /metrics with PrivateMetrics: lacks switchboard_connections")
	}
}

// TestGuardPastBudget: past its address's budget a call without the token
// is still UNAUTHENTICATED, saying why the connection closes; a call that
// needs no token gets RESOURCE_EXHAUSTED.
func TestGuardPastBudget(t *testing.T) {
	t.Parallel()
	g := &grpcGuard{
		token:    []byte("t"),
		budget:   ratelimit.NewKeyed(0.001, 1, 0),
		onReject: func(string) {},
		logs:     lograte.New(slog.New(slog.DiscardHandler), 0),
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4000}})
	call := func(method string) *status.Status {
		_, err := g.tap(ctx, &tap.Info{FullMethodName: method, Header: metadata.MD{}})
		return status.Convert(err)
	}
	if st := call("/switchboard.v1.SwitchboardService/EmitMessage"); st.Code() != codes.Unauthenticated || st.Message() != msgNoToken {
		t.Errorf("first call without a token: got %v; want UNAUTHENTICATED %q", st, msgNoToken)
	}
	if st := call("/switchboard.v1.SwitchboardService/EmitMessage"); st.Code() != codes.Unauthenticated || !strings.HasPrefix(st.Message(), msgNoToken) || !strings.HasSuffix(st.Message(), msgTooManyRefs) {
		t.Errorf("call without a token past the budget: got %v; want UNAUTHENTICATED, saying both", st)
	}
	if st := call("/grpc.health.v1.Health/Check"); st.Code() != codes.ResourceExhausted || st.Message() != msgTooManyRefs {
		t.Errorf("health check past the budget: got %v; want RESOURCE_EXHAUSTED %q", st, msgTooManyRefs)
	}
	if g.admits(netip.MustParseAddr("192.0.2.1")) {
		t.Error("admits an address past its budget; want it refused at accept")
	}
	if !g.admits(netip.MustParseAddr("192.0.2.2")) {
		t.Error("refuses another address; want it admitted")
	}
}

// fromConn is a connection that comes from addr.
type fromConn struct {
	net.Conn
	addr net.Addr
}

func (c fromConn) RemoteAddr() net.Addr { return c.addr }
func (fromConn) Close() error           { return nil }

// TestTrustedProxiesAtAccept: a trusted proxy, named by its network or
// by its one address, IPv6 ones too, counts only towards the total at
// accept; other peers of the same /64 count under its key.
func TestTrustedProxiesAtAccept(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := newConnLimiter(ln, slog.New(slog.DiscardHandler), func(string) {})
	l.perIP, l.total, l.address = 1, LimitHTTPConns, LimitHTTPConnsPerIP
	l.exempt = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::7/128")}

	admitted := func(ip string) bool {
		return l.admit(fromConn{addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 1000}}) != nil
	}
	for _, ip := range []string{"10.1.2.3", "2001:db8::7"} {
		for i := range 3 {
			if !admitted(ip) {
				t.Errorf("connection %d of trusted proxy %s refused; want it admitted", i+1, ip)
			}
		}
	}
	if !admitted("2001:db8::8") {
		t.Error("first connection of 2001:db8::8 refused")
	}
	if admitted("2001:db8::9") {
		t.Error("a second connection from the /64 of 2001:db8::8 admitted past a limit of 1 per address")
	}
}
