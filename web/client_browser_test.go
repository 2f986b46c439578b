package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-rt/switchboard/internal/browsertest"
	"github.com/switchboard-rt/switchboard/internal/nodetest"
	"github.com/switchboard-rt/switchboard/pkg/client"
	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

// page loads client.js from the node and records everything the library
// reports in window.log.
const page = `<!doctype html><meta charset="utf-8"><title>client.js test</title>
<script src="http://%s/client.js"></script>
<script>
window.log = {states: [], counts: [], events: [], all: []};
window.sb = Switchboard.connect(%s, {minDelay: 50, maxDelay: 500});
sb.onState(s => log.states.push(s));
sb.onCount(n => log.counts.push(n));
window.offA = sb.on("A", (data, msg) => log.events.push("A:" + JSON.stringify(data) + ":" + msg.channel));
sb.on("*", (data, msg) => log.all.push(msg.event));
</script>`

// startNode runs a node that pages served by httptest may connect to.
func startNode(t *testing.T) *nodetest.Node {
	t.Helper()
	return nodetest.Start(t, server.Config{AllowedOrigins: []string{"127.0.0.1:*"}})
}

func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func waitJS(t *testing.T, tab context.Context, expr string) {
	t.Helper()
	if _, err := chromedp.Run(tab, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		dump, _ := chromedp.Run(tab, chromedp.Evaluate[string](`JSON.stringify(window.log)`))
		t.Fatalf("gave up waiting for %s (log %s): %v", expr, dump, err)
	}
}

func evalJS[T any](t *testing.T, tab context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(tab, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// TestClientLibrary runs client.js in headless Chromium against a real node.
func TestClientLibrary(t *testing.T) {
	node := startNode(t)
	sb, err := client.Dial(node.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	ctx := context.Background()
	emit := func(event, channel string, data any) {
		t.Helper()
		var opts []client.EmitOption
		if channel != "" {
			opts = append(opts, client.ToChannel(channel))
		}
		if _, err := sb.Emit(ctx, event, data, opts...); err != nil {
			t.Fatalf("emit %s: %v", event, err)
		}
	}

	// The first URL is dead: the library must move on to the second.
	urls, _ := json.Marshal([]string{"ws://" + deadAddr(t) + "/ws", "http://" + node.HTTPAddr() + "/ws"})
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, page, node.HTTPAddr(), urls)
	}))
	defer web.Close()

	browser := browsertest.Browser(t)
	tab, _ := browsertest.Tab(t, browser, web.URL)

	t.Run("fails over to the next URL", func(t *testing.T) {
		waitJS(t, tab, `sb.state === "open" && log.counts.at(-1) === 1`)
		states := evalJS[[]string](t, tab, `log.states`)
		if len(states) < 3 || states[0] != "connecting" || states[1] != "reconnecting" || states[len(states)-1] != "open" {
			t.Errorf("states: got %v; want connecting, reconnecting, …, open", states)
		}
		if n := node.Hub().Count(""); n != 1 {
			t.Errorf("node count: got %d; want 1", n)
		}
	})

	t.Run("events and handlers", func(t *testing.T) {
		emit("A", "", map[string]any{"x": 1})
		emit("B", "", nil)
		waitJS(t, tab, `log.all.length === 2`)
		if got := evalJS[[]string](t, tab, `log.events`); len(got) != 1 || got[0] != `A:{"x":1}:` {
			t.Errorf(`on("A"): got %q; want [A:{"x":1}:]`, got)
		}
		if got := evalJS[[]string](t, tab, `log.all`); len(got) != 2 || got[0] != "A" || got[1] != "B" {
			t.Errorf(`on("*"): got %q; want [A B]`, got)
		}
		evalJS[bool](t, tab, `offA(), true`)
		emit("A", "", 2)
		waitJS(t, tab, `log.all.length === 3`)
		if got := evalJS[int](t, tab, `log.events.length`); got != 1 {
			t.Errorf("a removed handler ran: got %d events; want 1", got)
		}
	})

	t.Run("channels", func(t *testing.T) {
		evalJS[bool](t, tab, `sb.on("C", (d, m) => log.events.push("C:" + d)), sb.subscribe("news"), true`)
		// The subscribe frame races the emit: wait until the node has it.
		deadline := time.Now().Add(10 * time.Second)
		for node.Hub().Count("news") != 1 {
			if time.Now().After(deadline) {
				t.Fatal("the node never saw the subscription")
			}
			time.Sleep(10 * time.Millisecond)
		}
		emit("C", "news", "one")
		waitJS(t, tab, `log.events.includes("C:one")`)
		evalJS[bool](t, tab, `sb.unsubscribe("news"), true`)
		for node.Hub().Count("news") != 0 {
			if time.Now().After(deadline) {
				t.Fatal("the node never saw the unsubscription")
			}
			time.Sleep(10 * time.Millisecond)
		}
		emit("C", "news", "two")
		emit("C", "", "marker")
		waitJS(t, tab, `log.events.includes("C:marker")`)
		if evalJS[bool](t, tab, `log.events.includes("C:two")`) {
			t.Error("a message to an unsubscribed channel arrived")
		}
	})

	t.Run("resubscribes after a reconnect", func(t *testing.T) {
		evalJS[bool](t, tab, `sb.subscribe("news"), log.states = [], true`)
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := node.Hub().Disconnect(dctx, hub.ReasonHandBack, 0); err != nil {
			t.Fatal(err)
		}
		waitJS(t, tab, `log.states.includes("reconnecting") && sb.state === "open"`)
		deadline := time.Now().Add(10 * time.Second)
		for node.Hub().Count("news") != 1 {
			if time.Now().After(deadline) {
				t.Fatal("the library did not resubscribe after reconnecting")
			}
			time.Sleep(10 * time.Millisecond)
		}
		emit("C", "news", "three")
		waitJS(t, tab, `log.events.includes("C:three")`)
	})

	t.Run("close", func(t *testing.T) {
		evalJS[bool](t, tab, `sb.close(), true`)
		waitJS(t, tab, `sb.state === "closed"`)
		deadline := time.Now().Add(10 * time.Second)
		for node.Hub().Count("") != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("node count after close: got %d; want 0", node.Hub().Count(""))
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // longer than the test's maxDelay
		if n := node.Hub().Count(""); n != 0 {
			t.Errorf("the library reconnected after close: count %d", n)
		}
	})
}

// TestClientDropsRepeatedIDs replays a fail-over: a web server's emit is
// retried on the standby after the page already got it from the primary.
// The idempotency key is the message id, so the page shows it once.
func TestClientDropsRepeatedIDs(t *testing.T) {
	primary := startNode(t)
	standby := startNode(t)
	urls, _ := json.Marshal([]string{"ws://" + primary.HTTPAddr() + "/ws", "ws://" + standby.HTTPAddr() + "/ws"})
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, page, primary.HTTPAddr(), urls)
	}))
	defer web.Close()
	tab, _ := browsertest.Tab(t, browsertest.Browser(t), web.URL)
	waitJS(t, tab, `sb.state === "open"`)

	ctx := context.Background()
	emit := func(node *nodetest.Node, key string, data any) {
		t.Helper()
		c, err := client.Dial(node.GRPCAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Emit(ctx, "A", data, client.WithIdempotencyKey(key)); err != nil {
			t.Fatalf("emit %s: %v", key, err)
		}
	}
	emit(primary, "k-1", "first")
	waitJS(t, tab, `log.events.length === 1`)

	primary.Stop()
	waitJS(t, tab, `sb.state === "open" && log.states.includes("reconnecting")`)
	if n := standby.Hub().Count(""); n != 1 {
		t.Fatalf("standby count: got %d; want 1", n)
	}
	emit(standby, "k-1", "first")  // the retry
	emit(standby, "k-2", "second") // a marker behind it
	waitJS(t, tab, `log.all.length >= 2 && log.events.at(-1) === 'A:"second":'`)
	if got := evalJS[[]string](t, tab, `log.events`); len(got) != 2 {
		t.Errorf("events: got %q; want first and second once each", got)
	}
}
