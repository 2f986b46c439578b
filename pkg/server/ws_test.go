package server

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/types/known/structpb"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// TestCountFrameAfterUpgrade checks that a count frame is the first frame
// after the upgrade and that a change of the count reaches the others.
func TestCountFrameAfterUpgrade(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})

	for i, want := range []int64{1, 2} {
		b := n.dial(t)
		var frames []frameIn
		for range 2 {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			typ, p, err := b.ws.Read(ctx)
			cancel()
			if err != nil {
				t.Fatalf("browser %d: Read: got %v; want nil", i, err)
			}
			var f frameIn
			if err := json.Unmarshal(p, &f); err != nil || typ != websocket.MessageText {
				t.Fatalf("browser %d: frame %q (type %v): got %v; want a JSON text frame", i, p, typ, err)
			}
			f.raw = p
			frames = append(frames, f)
		}
		if w := frames[0]; w.Type != "welcome" || w.Epoch == "" || w.Offset != 0 || w.Recovered != nil {
			t.Errorf("browser %d: first frame: got %s; want a welcome at offset 0", i, w.raw)
		}
		if got := string(frames[1].raw); got != fmt.Sprintf(`{"type":"count","connections":%d,"visitors":%[1]d}`, want) {
			t.Errorf("browser %d: second frame: got %s; want a count of %d", i, got, want)
		}
		b.read()
	}
}

// TestCountAfterConnectStorm opens 1,000 connections at once, drops a
// random part of them (some with a close handshake, some by cutting the
// TCP connection) and checks the count over gRPC and in the count frames
// of every survivor. It does not run in parallel: its 4,000 goroutines and
// 2,000 sockets under -race would skew the timing tests beside it.
func TestCountAfterConnectStorm(t *testing.T) {
	const total = 1000
	n := startNode(t, Config{})

	browsers := make([]*browser, total)
	errs := make(chan error, total)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	for i := range browsers {
		wg.Go(func() {
			b, _, err := dialBrowser(ctx, n.hc, n.ws, nil)
			if err != nil {
				errs <- err
				return
			}
			b.read()
			browsers[i] = b
		})
	}
	wg.Wait()
	close(errs)
	for _, b := range browsers {
		if b != nil {
			t.Cleanup(b.closeNow)
		}
	}
	for err := range errs {
		t.Fatalf("dial: got %v; want nil", err)
	}
	n.waitCount(t, "", total)
	// Count frames are coalesced: the first browser saw the whole storm, yet
	// it must not get anything like one frame per connect.
	for _, b := range browsers {
		b.waitCount(t, total)
	}
	var most int64
	for _, b := range browsers {
		most = max(most, b.counts.Load())
	}
	if most > total/5 {
		t.Errorf("a browser got %d count frames during a storm of %d connects; want far fewer (coalesced)", most, total)
	}
	t.Logf("storm of %d connects: at most %d count frames per browser", total, most)

	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(browsers), func(i, j int) { browsers[i], browsers[j] = browsers[j], browsers[i] })
	gone := 300 + rng.IntN(400)
	for i, b := range browsers[:gone] {
		wg.Go(func() {
			if i%2 == 0 {
				b.ws.Close(websocket.StatusNormalClosure, "bye")
			}
			b.closeNow()
		})
	}
	wg.Wait()
	want := int64(total - gone)
	n.waitCount(t, "", want)
	for _, b := range browsers[gone:] {
		b.waitCount(t, want)
	}
	t.Logf("%d connected, %d left, %d counted", total, gone, want)
}

// TestEmit checks delivery to everyone and to a channel: every recipient
// gets each message exactly once and in emit order, non-subscribers get
// nothing, unsubscribing stops delivery, recipients is right and the frame
// holds exactly the contract's fields.
func TestEmit(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	a, b, c := n.dialReading(t), n.dialReading(t), n.dialReading(t)
	a.send(t, `{"type":"subscribe","channel":"quotes"}`)
	b.send(t, `{"type":"subscribe","channel":"quotes"}`)
	b.send(t, `{"type":"subscribe","channel":"quotes"}`) // twice is harmless
	n.waitCount(t, "quotes", 2)
	n.waitCount(t, "", 3)

	// 100 messages, even ones to everyone, odd ones to "quotes".
	var all, even []string
	for i := range 100 {
		channel, want := "", int64(3)
		if i%2 == 1 {
			channel, want = "quotes", 2
		}
		resp := n.emit(t, &switchboardv1.EmitMessageRequest{
			Event:   "Tick",
			Channel: channel,
			Data:    structpb.NewNumberValue(float64(i)),
		})
		if resp.GetRecipients() != want {
			t.Errorf("emit %d to %q: recipients: got %d; want %d", i, channel, resp.GetRecipients(), want)
		}
		if resp.GetId() == "" || slices.Contains(all, resp.GetId()) {
			t.Fatalf("emit %d: id %q is empty or not unique", i, resp.GetId())
		}
		all = append(all, resp.GetId())
		if channel == "" {
			even = append(even, resp.GetId())
		}
	}
	marker := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "Marker"}).GetId()
	for _, tc := range []struct {
		name string
		b    *browser
		want []string
	}{
		{"subscriber a", a, slices.Concat(all, []string{marker})},
		{"subscriber b", b, slices.Concat(all, []string{marker})},
		{"non-subscriber c", c, slices.Concat(even, []string{marker})},
	} {
		got := ids(tc.b.waitMessage(t, marker))
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: ids: got %v; want %v", tc.name, got, tc.want)
		}
	}

	// Unsubscribing stops delivery; the others still get it.
	b.send(t, `{"type":"unsubscribe","channel":"quotes"}`)
	b.send(t, `{"type":"unsubscribe","channel":"never-joined"}`) // harmless
	n.waitCount(t, "quotes", 1)
	before := len(b.messages())
	resp := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "AfterUnsub", Channel: "quotes"})
	if resp.GetRecipients() != 1 {
		t.Errorf("emit after unsubscribe: recipients: got %d; want 1", resp.GetRecipients())
	}
	marker2 := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "Marker"}).GetId()
	if got, want := ids(b.waitMessage(t, marker2)[before:]), []string{marker2}; !slices.Equal(got, want) {
		t.Errorf("unsubscribed b after the channel emit: got %v; want %v", got, want)
	}
	if got, want := ids(a.waitMessage(t, marker2)), slices.Concat(all, []string{marker, resp.GetId(), marker2}); !slices.Equal(got, want) {
		t.Errorf("subscriber a after the channel emit: got %v; want %v", got, want)
	}

	// The frame has exactly the contract's fields, with data as sent.
	data, err := structpb.NewValue(map[string]any{"text": "hi <b>&</b>", "n": 1.5, "list": []any{true, nil, "x"}})
	if err != nil {
		t.Fatal(err)
	}
	resp = n.emit(t, &switchboardv1.EmitMessageRequest{Event: "ShowMessage", Channel: "quotes", Data: data})
	msgs := a.waitMessage(t, resp.GetId())
	raw := msgs[len(msgs)-1].raw
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatalf("frame %s: got %v; want a JSON object", raw, err)
	}
	if got, want := slices.Sorted(maps.Keys(fields)), []string{"channel", "data", "event", "id", "offset", "type"}; !slices.Equal(got, want) {
		t.Errorf("frame %s: fields: got %v; want %v", raw, got, want)
	}
	if got := msgs[len(msgs)-1].Offset; got == 0 || got != resp.GetOffset() {
		t.Errorf("frame offset: got %d; want the response's %d", got, resp.GetOffset())
	}
	for _, f := range []struct{ name, want string }{
		{"type", `"message"`},
		{"id", `"` + resp.GetId() + `"`},
		{"event", `"ShowMessage"`},
		{"channel", `"quotes"`},
	} {
		if got := string(fields[f.name]); got != f.want {
			t.Errorf("frame field %s: got %s; want %s", f.name, got, f.want)
		}
	}
	if got, want := jsonValue(t, fields["data"]), jsonValue(t, mustJSON(t, data)); !reflect.DeepEqual(got, want) {
		t.Errorf("frame data: got %s; want %s", fields["data"], mustJSON(t, data))
	}
}

func ids(msgs []frameIn) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func mustJSON(t testing.TB, v *structpb.Value) []byte {
	t.Helper()
	b, err := v.MarshalJSON()
	if err != nil {
		t.Fatalf("MarshalJSON: %v", err)
	}
	return b
}

func jsonValue(t testing.TB, p []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(p, &v); err != nil {
		t.Fatalf("json.Unmarshal(%s): %v", p, err)
	}
	return v
}

// TestBadInput checks that every protocol violation closes the offending
// connection with the right code and a reason, and that a bystander stays
// connected and keeps receiving emits.
func TestBadInput(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	bystander := n.dialReading(t)
	bystander.send(t, `{"type":"subscribe","channel":"news"}`)
	n.waitCount(t, "news", 1)

	subscribeMany := func(b *browser) error {
		for i := range 65 { // one over hub.Config.MaxSubscriptions' default
			err := b.ws.Write(context.Background(), websocket.MessageText, fmt.Appendf(nil, `{"type":"subscribe","channel":"c%d"}`, i))
			if err != nil {
				return err
			}
		}
		return nil
	}
	text := func(s string) func(*browser) error {
		return func(b *browser) error { return b.ws.Write(context.Background(), websocket.MessageText, []byte(s)) }
	}
	tests := []struct {
		name string
		send func(*browser) error
		want websocket.StatusCode
	}{
		{"invalid JSON", text(`{"type":"subscribe",`), websocket.StatusPolicyViolation},
		{"not an object", text(`["subscribe","news"]`), websocket.StatusPolicyViolation},
		{"unknown type", text(`{"type":"publish","channel":"news"}`), websocket.StatusPolicyViolation},
		{"unknown field", text(`{"type":"subscribe","channel":"news","x":1}`), websocket.StatusPolicyViolation},
		{"no channel", text(`{"type":"subscribe"}`), websocket.StatusPolicyViolation},
		{"empty channel", text(`{"type":"subscribe","channel":""}`), websocket.StatusPolicyViolation},
		{"channel with a space", text(`{"type":"subscribe","channel":"a b"}`), websocket.StatusPolicyViolation},
		{"channel too long", text(`{"type":"subscribe","channel":"` + strings.Repeat("x", 129) + `"}`), websocket.StatusPolicyViolation},
		{"two values", text(`{"type":"subscribe","channel":"news"} {}`), websocket.StatusPolicyViolation},
		{"binary frame", func(b *browser) error {
			return b.ws.Write(context.Background(), websocket.MessageBinary, []byte(`{"type":"subscribe","channel":"news"}`))
		}, websocket.StatusPolicyViolation},
		{"invalid UTF-8", text("{\"type\":\"subscribe\",\"channel\":\"\xff\xfe\"}"), websocket.StatusPolicyViolation},
		{"oversized frame", text(`{"type":"subscribe","channel":"` + strings.Repeat("x", 5000) + `"}`), websocket.StatusMessageTooBig},
		{"too many subscriptions", subscribeMany, websocket.StatusPolicyViolation},
	}
	t.Run("group", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				b := n.dialReading(t)
				if err := tc.send(b); err != nil {
					t.Fatalf("send: got %v; want nil", err)
				}
				err := b.waitClosed(t, waitTimeout)
				ce, ok := closeError(err)
				if !ok {
					t.Fatalf("read error: got %v; want a close frame %d", err, tc.want)
				}
				if ce.Code != tc.want {
					t.Errorf("close code: got %d (%q); want %d", ce.Code, ce.Reason, tc.want)
				}
				if ce.Reason == "" {
					t.Errorf("close reason: got %q; want a reason", ce.Reason)
				}
				t.Logf("closed with %d %q", ce.Code, ce.Reason)
			})
		}
	})

	// The bystander is still there and still receives.
	n.waitCount(t, "", 1)
	resp := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "StillThere", Channel: "news"})
	if resp.GetRecipients() != 1 {
		t.Errorf("recipients after the bad browsers: got %d; want 1", resp.GetRecipients())
	}
	bystander.waitMessage(t, resp.GetId())
	if err := bystander.readErr(); err != nil {
		t.Errorf("bystander: got %v; want still connected", err)
	}
}

// TestOrigin checks the browser origin policy.
func TestOrigin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		allowed []string
		origin  string // "self" is the node's own origin
		want    int
	}{
		{"default, no origin", nil, "", http.StatusSwitchingProtocols},
		{"default, same host", nil, "self", http.StatusSwitchingProtocols},
		{"default, cross-site", nil, "https://evil.example", http.StatusForbidden},
		{"host pattern, allowed", []string{"app.example.com"}, "https://app.example.com", http.StatusSwitchingProtocols},
		{"host pattern, other host", []string{"app.example.com"}, "https://evil.example", http.StatusForbidden},
		{"wildcard subdomain", []string{"*.example.com"}, "https://a.example.com", http.StatusSwitchingProtocols},
		{"scheme pattern, right scheme", []string{"https://app.example.com"}, "https://app.example.com", http.StatusSwitchingProtocols},
		{"scheme pattern, wrong scheme", []string{"https://app.example.com"}, "http://app.example.com", http.StatusForbidden},
		{"star", []string{"*"}, "https://evil.example", http.StatusSwitchingProtocols},
		{"star among others", []string{"app.example.com", "*"}, "https://anything.test", http.StatusSwitchingProtocols},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := startNode(t, Config{AllowedOrigins: tc.allowed})
			h := http.Header{}
			switch tc.origin {
			case "":
			case "self":
				h.Set("Origin", n.http)
			default:
				h.Set("Origin", tc.origin)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			b, resp, err := dialBrowser(ctx, n.hc, n.ws, h)
			if b != nil {
				b.closeNow()
			}
			if resp == nil {
				t.Fatalf("dial: got no response, err %v; want status %d", err, tc.want)
			}
			if resp.StatusCode != tc.want {
				t.Errorf("status: got %d (err %v); want %d", resp.StatusCode, err, tc.want)
			}
			if got, want := err == nil, tc.want == http.StatusSwitchingProtocols; got != want {
				t.Errorf("dial error: got %v; want error %v", err, !want)
			}
		})
	}
}

// TestSlowBrowser checks that a browser that never reads delays nobody:
// the bystanders get every message promptly and in order, the slow one
// leaves the count at once, is closed soon after and is counted as a slow
// disconnect.
func TestSlowBrowser(t *testing.T) {
	t.Parallel()
	// A long WriteTimeout and KeepAlive: the slow browser must overflow its
	// queue, not time out a write or miss a pong, however slowly a busy
	// machine emits.
	n := startNode(t, Config{KeepAlive: time.Hour, Hub: hub.Config{QueueFrames: 64, WriteTimeout: time.Hour}})
	slow := n.dial(t) // never reads until the end
	by1, by2 := n.dialReading(t), n.dialReading(t)
	n.waitCount(t, "", 3)

	data := structpb.NewStringValue(strings.Repeat("x", 16<<10))
	var sent []string
	var worst time.Duration
	const maxEmits = 3000 // 48 MiB: far more than loopback buffers hold
	stats := n.srv.Hub().Stats()
	for i := 0; i < maxEmits && stats.SlowDisconnects.Load()+stats.WriteFailures.Load() == 0; i++ {
		start := time.Now()
		id := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "Big", Data: data}).GetId()
		sent = append(sent, id)
		if i%50 == 0 { // sample how long a bystander waits for a message
			by1.waitMessage(t, id)
			worst = max(worst, time.Since(start))
		}
	}
	if got, fails := stats.SlowDisconnects.Load(), stats.WriteFailures.Load(); got != 1 || fails != 0 {
		t.Fatalf("after %d emits of 16 KiB: SlowDisconnects %d, WriteFailures %d; want 1 and 0", len(sent), got, fails)
	}
	t.Logf("slow browser dropped after %d emits; slowest sampled bystander delivery %v", len(sent), worst)
	if worst > 5*time.Second {
		t.Errorf("slowest bystander delivery: got %v; want well under 5s", worst)
	}
	n.waitCount(t, "", 2)
	last := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "After"}).GetId()
	for i, b := range []*browser{by1, by2} {
		if got, want := ids(b.waitMessage(t, last)), append(slices.Clone(sent), last); !slices.Equal(got, want) {
			t.Errorf("bystander %d: got %d messages; want %d, in order", i, len(got), len(want))
		}
		if bad := b.badFrames(); len(bad) > 0 {
			t.Errorf("bystander %d: unparsable frames: %q", i, bad)
		}
	}

	// The slow browser is closed: once it reads, it finds the end of the
	// connection after what was already on the wire.
	slow.read()
	err := slow.waitClosed(t, waitTimeout)
	if ce, ok := closeError(err); ok && ce.Code != websocket.StatusTryAgainLater {
		t.Errorf("slow browser close: got %d %q; want 1013 or a cut connection", ce.Code, ce.Reason)
	}
	if got := len(slow.messages()); got >= len(sent) {
		t.Errorf("slow browser received %d of %d messages; want fewer", got, len(sent))
	}
	t.Logf("slow browser: read %d messages, then %v", len(slow.messages()), err)
}
