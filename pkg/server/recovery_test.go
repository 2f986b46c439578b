package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/types/known/structpb"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// dialQuery connects a reading browser to /ws with query q.
func (n *node) dialQuery(t testing.TB, q url.Values) *browser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	b, _, err := dialBrowser(ctx, n.hc, n.ws+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatalf("websocket.Dial(?%s): got %v; want nil", q.Encode(), err)
	}
	t.Cleanup(b.closeNow)
	b.read()
	return b
}

// welcome waits for the browser's welcome frame.
func (b *browser) welcome(t testing.TB) frameIn {
	t.Helper()
	var w frameIn
	eventually(t, waitTimeout, func() (bool, string) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.welcomes) == 0 {
			return false, "no welcome frame"
		}
		w = b.welcomes[0]
		return true, ""
	})
	return w
}

func (n *node) emitText(t testing.TB, channel, text string) *switchboardv1.EmitMessageResponse {
	t.Helper()
	return n.emit(t, &switchboardv1.EmitMessageRequest{Event: "ShowMessage", Channel: channel, Data: structpb.NewStringValue(text)})
}

func texts(msgs []frameIn) []string {
	out := []string{}
	for _, m := range msgs {
		var s string
		if json.Unmarshal(m.Data, &s) != nil {
			s = string(m.Data)
		}
		out = append(out, s)
	}
	return out
}

// TestResumeOverWebSocket: a page whose socket drops misses 100 emits (to
// everyone, to its channel and to another); when it comes back with its
// position it gets exactly the ones it is a recipient of, in order, once,
// and then the live ones.
func TestResumeOverWebSocket(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	page := n.dialQuery(t, url.Values{"channel": {"page"}})
	w := page.welcome(t)
	if w.Offset != 0 || w.Recovered != nil {
		t.Fatalf("first welcome: got %+v; want offset 0, no recovered", w)
	}
	first := n.emitText(t, "page", "before")
	if first.GetOffset() != 1 {
		t.Fatalf("first emit: got offset %d; want 1", first.GetOffset())
	}
	seen := page.waitMessage(t, first.GetId())
	if seen[0].Offset != 1 {
		t.Fatalf("first message frame: got offset %d; want 1", seen[0].Offset)
	}
	page.closeNow()
	n.waitCount(t, "", 0)

	var want []string
	for i := range 100 {
		ch := []string{"", "page", "other"}[i%3]
		text := fmt.Sprintf("missed %d to %q", i, ch)
		n.emitText(t, ch, text)
		if ch != "other" {
			want = append(want, text)
		}
	}
	back := n.dialQuery(t, url.Values{"channel": {"page"}, "epoch": {w.Epoch}, "offset": {"1"}})
	if w2 := back.welcome(t); w2.Recovered == nil || !*w2.Recovered || w2.Offset != 101 || w2.Epoch != w.Epoch {
		t.Errorf("welcome on resume: got %+v; want recovered at offset 101 of epoch %s", w2, w.Epoch)
	}
	live := n.emitText(t, "page", "live")
	want = append(want, "live")
	got := back.waitMessage(t, live.GetId())
	if !slices.Equal(texts(got), want) {
		t.Errorf("after resuming: got %d messages %v; want %d, %v", len(got), texts(got), len(want), want)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Offset <= got[i-1].Offset {
			t.Errorf("offsets out of order: %d after %d", got[i].Offset, got[i-1].Offset)
		}
	}
	if got := n.count(t, "page"); got != 1 {
		t.Errorf("subscribers of page after resuming: got %d; want 1", got)
	}
	if m := n.metrics(t); !strings.Contains(m, `switchboard_resumes_total{outcome="recovered"} 1`) || !strings.Contains(m, "switchboard_history_messages 102") {
		t.Errorf("metrics: want one recovered resume and 102 messages held; got\n%s", grepLines(m, "switchboard_resumes_total", "switchboard_history"))
	}
}

// TestResumeNotRecovered: an unknown epoch, or a position older than the
// history, gets recovered:false and only live messages.
func TestResumeNotRecovered(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{Hub: hub.Config{HistorySize: 3}})
	var last *switchboardv1.EmitMessageResponse
	for i := range 5 {
		last = n.emitText(t, "", fmt.Sprint("old ", i))
	}
	epoch := n.dialQuery(t, nil).welcome(t).Epoch
	for _, q := range []url.Values{
		{"epoch": {"someothernode"}, "offset": {"5"}},
		{"epoch": {epoch}, "offset": {"1"}},
	} {
		b := n.dialQuery(t, q)
		if w := b.welcome(t); w.Recovered == nil || *w.Recovered || w.Offset != last.GetOffset() {
			t.Errorf("welcome for %v: got %+v; want recovered false at offset %d", q, w, last.GetOffset())
		}
		live := n.emitText(t, "", "live")
		if got := texts(b.waitMessage(t, live.GetId())); !slices.Equal(got, []string{"live"}) {
			t.Errorf("messages for %v: got %v; want only the live one", q, got)
		}
		last = live
	}
}

// TestBadQueryRefusedBeforeUpgrade: each bad parameter gets 400 with its
// reason, and nobody is counted.
func TestBadQueryRefusedBeforeUpgrade(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{Hub: hub.Config{MaxSubscriptions: 2}})
	for _, tt := range []struct{ query, reason string }{
		{"epoch=abc", `"epoch" and "offset" go together`},
		{"epoch=abc&offset=-2", `"offset" must be a non-negative integer`},
		{"epoch=a%20b&offset=1", `"epoch" may hold only`},
		{"channel=a%20b", "invalid channel parameter"},
		{"channel=a&channel=b&channel=c", "too many channels: at most 2"},
		{"channel=%zz", "invalid query string"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		_, resp, err := websocket.Dial(ctx, n.ws+"?"+tt.query, &websocket.DialOptions{HTTPClient: n.hc})
		cancel()
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("?%s: got %v, %v; want 400", tt.query, resp, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), tt.reason) {
			t.Errorf("?%s: body %q; want it to say %q", tt.query, body, tt.reason)
		}
	}
	if got := n.count(t, ""); got != 0 {
		t.Errorf("connections after refusals: got %d; want 0", got)
	}
	if got := n.srv.Rejections()["invalid_parameter"]; got != 6 {
		t.Errorf("invalid_parameter rejections: got %d; want 6", got)
	}
}

// TestSubscribeLastOverWebSocket: a page that opens between two quotations
// shows the current one at once; a bad "last" is closed with 1008.
func TestSubscribeLastOverWebSocket(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{})
	n.emitText(t, "quotes", "older quote")
	current := n.emitText(t, "quotes", "current quote")
	n.emitText(t, "", "not a quote")

	page := n.dialReading(t)
	page.send(t, `{"type":"subscribe","channel":"quotes","last":1}`)
	if got := texts(page.waitMessage(t, current.GetId())); !slices.Equal(got, []string{"current quote"}) {
		t.Errorf("on subscribing with last 1: got %v; want [current quote]", got)
	}
	next := n.emitText(t, "quotes", "next quote")
	if got := texts(page.waitMessage(t, next.GetId())); !slices.Equal(got, []string{"current quote", "next quote"}) {
		t.Errorf("then: got %v; want the live quote after it", got)
	}

	bad := n.dialReading(t)
	bad.send(t, `{"type":"subscribe","channel":"quotes","last":0}`)
	ce, ok := closeError(bad.waitClosed(t, waitTimeout))
	if !ok || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, `"last" must be an integer from 1 to 100`) {
		t.Errorf("last 0: got close %v (%v); want 1008 naming the bounds", ce, ok)
	}
}

// grepLines returns the lines of s that contain any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
