package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/types/known/structpb"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/internal/freeport"
)

// waitFollowing waits until the standby holds the primary's log and
// follows it.
func waitFollowing(t testing.TB, primary, standby *node) {
	t.Helper()
	eventually(t, waitTimeout, func() (bool, string) {
		p, s := primary.srv.hub.Position(), standby.srv.hub.Position()
		return primary.srv.hub.Following() && standby.srv.standby.link.Following() && p == s,
			fmt.Sprintf("primary at %+v following %v, standby at %+v following %v", p, primary.srv.hub.Following(), s, standby.srv.standby.link.Following())
	})
}

// TestPairSharesOneLog runs a pair through a fail-over and back: the
// standby holds the primary's log (offsets, epoch, keys) while it
// follows; a browser that moves to it resumes with nothing missed; the
// primary that returns takes the standby's log before it serves, and
// counts the standby's browsers while they are handed back.
func TestPairSharesOneLog(t *testing.T) {
	t.Parallel()
	primaryAddr := freeport.Addr(t)
	primary := startNode(t, Config{GRPCAddr: primaryAddr, StandbyWait: 5 * time.Second})
	standby := startNode(t, Config{PrimaryAddr: primaryAddr, HandBackSpread: 2 * time.Second})
	standby.checkPassive(t)
	waitFollowing(t, primary, standby)
	if m := primary.metrics(t); !strings.Contains(m, "\nswitchboard_log_followed 1\n") {
		t.Errorf("primary /metrics: want switchboard_log_followed 1; got\n%s", grepLines(m, "switchboard_log_followed"))
	}

	page := primary.dialQuery(t, nil)
	epoch := page.welcome(t).Epoch
	var last *switchboardv1.EmitMessageResponse
	for i := range 10 {
		last = primary.emit(t, &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: fmt.Sprint("k", i)})
	}
	page.waitMessage(t, last.GetId())
	if p, s := primary.srv.hub.Position(), standby.srv.hub.Position(); p != s || p.Offset != 10 {
		t.Fatalf("after 10 acknowledged emits: primary %+v, standby %+v; want both at 10", p, s)
	}

	// The primary goes: the page resumes on the standby, which retries
	// acknowledge as duplicates.
	primary.stop(t)
	standby.waitActive(t)
	moved := standby.dialQuery(t, url.Values{"epoch": {epoch}, "offset": {"8"}})
	if w := moved.welcome(t); w.Recovered == nil || !*w.Recovered || w.Offset != 10 || w.Epoch == epoch {
		t.Errorf("welcome on the standby: got %+v; want recovered at 10, in a new epoch (the standby forked)", w)
	}
	if got := ids(moved.waitMessage(t, last.GetId())); strings.Join(got, ",") != "k8,k9" {
		t.Errorf("resumed on the standby from 8: got %v; want [k8 k9]", got)
	}
	retry := standby.emit(t, &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: "k9"})
	if !retry.GetDuplicate() || retry.GetOffset() != 10 {
		t.Errorf("a retry on the standby of an emit the primary acknowledged: got %v; want a duplicate at offset 10", retry)
	}
	during := standby.emit(t, &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: "during"})
	browsers := []*browser{moved}
	for range 3 {
		browsers = append(browsers, standby.dialReading(t))
	}
	standby.waitCount(t, "", 4)
	onStandby := standby.srv.hub.Position()

	// The primary returns: it takes the standby's log, then serves; the
	// standby hands its browsers back, and until they have gone the
	// primary counts them.
	back := startNodeAt(t, Config{GRPCAddr: primaryAddr, StandbyWait: 5 * time.Second})
	if got := back.srv.hub.Position(); got != onStandby {
		t.Errorf("returning primary's log: got %+v; want the standby's %+v", got, onStandby)
	}
	eventually(t, waitTimeout, func() (bool, string) {
		local := standby.srv.hub.LocalCount()
		got := back.count(t, "")
		return got == local && local > 0, fmt.Sprintf("primary counts %d; want the %d browsers still on the standby", got, local)
	})
	again := back.emit(t, &switchboardv1.EmitMessageRequest{Event: "E", IdempotencyKey: "during"})
	if !again.GetDuplicate() || again.GetOffset() != during.GetOffset() {
		t.Errorf("a retry on the returned primary of an emit the standby acknowledged: got %v; want a duplicate at %d", again, during.GetOffset())
	}
	for i, b := range browsers {
		ce, ok := closeError(b.waitClosed(t, waitTimeout))
		if !ok || ce.Code != websocket.StatusServiceRestart {
			t.Errorf("browser %d on the standby: closed with %v; want 1012", i, b.readErr())
		}
	}
	home := back.dialQuery(t, url.Values{"epoch": {onStandby.Epoch}, "offset": {strconv.FormatUint(onStandby.Offset-1, 10)}})
	if w := home.welcome(t); w.Recovered == nil || !*w.Recovered {
		t.Errorf("welcome on the returned primary: got %+v; want recovered", w)
	}
	if got := ids(home.waitMessage(t, "during")); strings.Join(got, ",") != "during" {
		t.Errorf("resumed on the returned primary: got %v; want [during]", got)
	}
	waitFollowing(t, back, standby)
	eventually(t, waitTimeout, func() (bool, string) {
		got := back.count(t, "")
		return got == 1, fmt.Sprintf("primary count once the hand-back is over: got %d; want 1", got)
	})
}

// TestPrimaryWaitsForItsStandbyAtMostStandbyWait: with no standby, a
// primary told to wait for one says so on /readyz and serves once the wait
// is over.
func TestPrimaryWaitsForItsStandbyAtMostStandbyWait(t *testing.T) {
	t.Parallel()
	srv := newNode(t, Config{StandbyWait: 700 * time.Millisecond, Logger: testLogger(t, slog.LevelInfo)})
	start := time.Now()
	n := runNode(t, srv, plainClients)
	if took := time.Since(start); took < 700*time.Millisecond {
		t.Errorf("ready after %v; want after the 700ms wait", took)
	}
	code, body := n.readyz()
	if code != http.StatusOK {
		t.Errorf("GET /readyz after the wait: got %d %q; want 200", code, body)
	}
}

// TestSyncingPrimaryRefusesWork checks what a primary that waits for its
// standby's log answers meanwhile.
func TestSyncingPrimaryRefusesWork(t *testing.T) {
	t.Parallel()
	srv := newNode(t, Config{StandbyWait: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	hc := &http.Client{Timeout: waitTimeout}
	eventually(t, waitTimeout, func() (bool, string) {
		resp, err := hc.Get("http://" + srv.HTTPAddr() + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable, fmt.Sprintf("GET /readyz: got %d; want 503", resp.StatusCode)
	})
	n := &node{srv: srv, hc: hc, http: "http://" + srv.HTTPAddr(), ws: "ws://" + srv.HTTPAddr() + "/ws"}
	if code, body := n.readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "taking the message log from the standby") {
		t.Errorf("GET /readyz: got %d %q; want 503 saying it waits for the standby's log", code, body)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), waitTimeout)
	defer dcancel()
	if _, resp, err := dialBrowser(dctx, hc, n.ws, nil); resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("upgrade while syncing: got %v, %v; want 503", resp, err)
	}
}

// TestPairSharesTheToken: the log is behind the API token, which the
// standby sends; a standby with another token cannot follow, and says so.
func TestPairSharesTheToken(t *testing.T) {
	t.Parallel()
	primaryAddr := freeport.Addr(t)
	primary := startNode(t, Config{GRPCAddr: primaryAddr, APIToken: "pair-secret"})
	var logs strings.Builder
	var mu sync.Mutex
	wrong := runNode(t, newNode(t, Config{PrimaryAddr: primaryAddr, APIToken: "another-secret",
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelWarn}))}), plainClients)
	eventually(t, waitTimeout, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), "the primary refuses to share its message log"), "no warning logged: " + logs.String()
	})
	if wrong.srv.standby.link.Following() || primary.srv.hub.Following() {
		t.Error("a standby with another token follows the primary's log")
	}
	wrong.stop(t)

	right := startNode(t, Config{PrimaryAddr: primaryAddr, APIToken: "pair-secret"})
	waitFollowing(t, primary, right)
}

// lockedWriter serializes writes to a strings.Builder.
type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestPairCopiesALogOfLargeMessages: the log copy and the entries fit the
// nodes' message size limit, whatever the messages' size.
func TestPairCopiesALogOfLargeMessages(t *testing.T) {
	t.Parallel()
	primaryAddr := freeport.Addr(t)
	primary := startNode(t, Config{GRPCAddr: primaryAddr})
	big := structpb.NewStringValue(strings.Repeat("x", 60<<10))
	for i := range 40 {
		primary.emit(t, &switchboardv1.EmitMessageRequest{Event: "Big", Data: big, IdempotencyKey: fmt.Sprintf("%0128d", i)})
	}
	standby := startNode(t, Config{PrimaryAddr: primaryAddr})
	waitFollowing(t, primary, standby)
	for range 5 {
		primary.emit(t, &switchboardv1.EmitMessageRequest{Event: "Big", Data: big})
	}
	if p, s := primary.srv.hub.Position(), standby.srv.hub.Position(); p != s || p.Offset != 45 {
		t.Errorf("positions: primary %+v, standby %+v; want both at 45", p, s)
	}
}
