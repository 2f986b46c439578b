package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-rt/switchboard/internal/browsertest"
	"github.com/switchboard-rt/switchboard/internal/natstest"
	"github.com/switchboard-rt/switchboard/internal/nodetest"
	"github.com/switchboard-rt/switchboard/pkg/client"
	"github.com/switchboard-rt/switchboard/pkg/cluster"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

// These tests open the operator's page of real nodes in headless Chromium,
// with browsers connected through client.js and messages emitted over gRPC,
// and read what the page shows.

// startNode runs a node with an admin listener that pages served by
// httptest may connect to.
func startNode(t *testing.T, cfg server.Config) *nodetest.Node {
	t.Helper()
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.AllowedOrigins = []string{"127.0.0.1:*"}
	return nodetest.Start(t, cfg)
}

// openPage opens the operator's page of n in the browser.
func openPage(t *testing.T, browser context.Context, n *nodetest.Node) context.Context {
	t.Helper()
	tab, _ := browsertest.Tab(t, browser, "http://"+n.AdminAddr()+"/")
	return tab
}

// conn is one browser connection: the node it connects to and the
// channels it joins.
type conn struct {
	node     *nodetest.Node
	channels []string
}

// openBrowsers opens a tab whose page makes each of conns with client.js
// (loaded from the first one's node); closing the tab ends them.
func openBrowsers(t *testing.T, browser context.Context, conns ...conn) context.CancelFunc {
	t.Helper()
	type spec struct {
		URL      string   `json:"url"`
		Channels []string `json:"channels"`
	}
	var specs []spec
	for _, c := range conns {
		specs = append(specs, spec{"ws://" + c.node.HTTPAddr() + "/ws", c.channels})
	}
	js, _ := json.Marshal(specs)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><meta charset="utf-8"><title>browsers</title>
<script src="http://%s/client.js"></script>
<script>
window.conns = %s.map(c => {
  const sb = Switchboard.connect(c.url);
  for (const ch of c.channels || []) sb.subscribe(ch);
  return sb;
});
</script>`, conns[0].node.HTTPAddr(), js)
	}))
	t.Cleanup(web.Close)
	_, closeTab := browsertest.Tab(t, browser, web.URL)
	return closeTab
}

// waitJS waits until expr is true on the page of tab.
func waitJS(t *testing.T, tab context.Context, expr string) {
	t.Helper()
	if _, err := chromedp.Run(tab, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		dump, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.body.innerText + "\n" + JSON.stringify(window.lastState)`))
		t.Fatalf("gave up waiting for %s; the page shows:\n%s\n(%v)", expr, dump, err)
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

// shows is an expression: the element with id shows text.
func shows(id, text string) string {
	return fmt.Sprintf("document.getElementById(%q).textContent === %q", id, text)
}

// memberRows is an expression: the members table as "name role
// connections [self]" lines, in order.
const memberRows = `[...document.querySelectorAll("#members tr")].map(tr =>
  [tr.dataset.name, ...[...tr.cells].slice(1, 3).map(td => td.textContent)].join(" ") + (tr.classList.contains("self") ? " self" : ""))`

func membersAre(rows ...string) string {
	b, _ := json.Marshal(rows)
	return fmt.Sprintf("JSON.stringify(%s) === %q", memberRows, string(b))
}

// chartAboveZero is an expression: the chart's line has a point above its
// baseline and the peak it names is above zero.
const chartAboveZero = `(() => {
  const d = document.getElementById("line").getAttribute("d") || "";
  const ys = [...d.matchAll(/[ML][\d.-]+,([\d.-]+)/g)].map(m => +m[1]);
  return ys.some(y => y < 149) && Number(document.getElementById("rate-peak").textContent.replace(/,/g, "")) > 0;
})()`

func emit(t *testing.T, n *nodetest.Node, count int, channel string) {
	t.Helper()
	c, err := client.Dial(n.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var opts []client.EmitOption
	if channel != "" {
		opts = append(opts, client.ToChannel(channel))
	}
	for i := range count {
		if _, err := c.Emit(context.Background(), "Tick", i, opts...); err != nil {
			t.Fatalf("emit: %v", err)
		}
	}
}

// TestPageOfASingleNode: the page follows a node's connections,
// channels, log and rate as browsers come and go and messages are
// emitted, shows channel names as text, and says when the node is gone.
func TestPageOfASingleNode(t *testing.T) {
	node := startNode(t, server.Config{})
	browser := browsertest.Browser(t)
	page := openPage(t, browser, node)
	name := node.Hub().Node()

	waitJS(t, page, shows("name", name)+" && "+shows("role", "single node")+" && "+shows("state", "active")+" && "+shows("conn-all", "0"))
	waitJS(t, page, membersAre(name+" single 0 self"))
	if evalJS[bool](t, page, chartAboveZero) {
		t.Error("the chart is above zero before any message")
	}

	const odd = "<i>x</i>"
	closeBrowsers := openBrowsers(t, browser, conn{node, []string{"quotes"}}, conn{node, []string{"quotes", odd}}, conn{node, nil})
	waitJS(t, page, shows("conn-all", "3")+" && "+shows("conn-node", "3")+" && "+shows("visitors", "1")+" && "+shows("chan-all", "2")+" && "+shows("subs-all", "3"))
	waitJS(t, page, membersAre(name+" single 3 self"))
	channels := evalJS[string](t, page, `[...document.querySelectorAll("#channels tr")].map(tr => tr.cells[0].textContent + "=" + tr.cells[1].textContent).join(" ")`)
	if want := "quotes=2 " + odd + "=1"; channels != want {
		t.Errorf("channels: got %q; want %q", channels, want)
	}
	if n := evalJS[int](t, page, `document.querySelectorAll("#channels i").length`); n != 0 {
		t.Errorf("a channel's name became markup: %d <i> elements; want it shown as text", n)
	}

	emit(t, node, 30, "")
	waitJS(t, page, shows("offset", "30")+" && "+shows("hist-msgs", "30"))
	waitJS(t, page, chartAboveZero)
	peak, _ := strconv.ParseFloat(evalJS[string](t, page, `document.getElementById("rate-peak").textContent`), 64)
	if peak <= 0 || peak > 30 {
		t.Errorf("peak: got %v/s; want above 0 and at most the 30 messages emitted", peak)
	}

	closeBrowsers()
	waitJS(t, page, shows("conn-all", "0")+" && "+shows("chan-all", "0"))

	node.Stop()
	waitJS(t, page, `!document.getElementById("error").hidden && document.body.classList.contains("stale")`)
	if msg := evalJS[string](t, page, `document.getElementById("error").textContent`); !strings.Contains(msg, "Cannot reach the node") {
		t.Errorf("error banner: got %q; want it to say the node cannot be reached", msg)
	}
}

// TestPageOfAPair: each node of a pair shows both, with its role and
// state, the browsers on the primary, and the shared log's rate.
func TestPageOfAPair(t *testing.T) {
	primary := startNode(t, server.Config{})
	standby := startNode(t, server.Config{PrimaryAddr: primary.GRPCAddr()})
	browser := browsertest.Browser(t)
	onPrimary, onStandby := openPage(t, browser, primary), openPage(t, browser, standby)
	p, s := primary.Hub().Node(), standby.Hub().Node()

	waitJS(t, onPrimary, shows("role", "primary of a pair")+" && "+shows("state", "active")+" && "+shows("log-shared", "the standby follows its log"))
	waitJS(t, onPrimary, membersAre(p+" primary 0 self", s+" standby 0"))
	waitJS(t, onStandby, shows("role", "standby of a pair")+" && "+shows("state", "passive")+" && "+shows("detail", "the primary is serving")+" && "+shows("log-shared", "follows the primary's log"))
	waitJS(t, onStandby, membersAre(s+" standby 0 self", p+" primary 0"))

	openBrowsers(t, browser, conn{primary, []string{"news"}}, conn{primary, nil})
	waitJS(t, onPrimary, membersAre(p+" primary 2 self", s+" standby 0")+" && "+shows("conn-all", "2"))
	waitJS(t, onStandby, membersAre(s+" standby 0 self", p+" primary 2")+" && "+shows("conn-all", "2")+" && "+shows("conn-node", "0")+" && "+shows("chan-all", "1"))

	emit(t, primary, 12, "news")
	for _, page := range []context.Context{onPrimary, onStandby} {
		waitJS(t, page, shows("offset", "12"))
		waitJS(t, page, chartAboveZero)
	}
	if a, b := evalJS[string](t, onPrimary, `document.getElementById("epoch").textContent`), evalJS[string](t, onStandby, `document.getElementById("epoch").textContent`); a != b || a == "" {
		t.Errorf("epochs: primary %q, standby %q; want one shared log", a, b)
	}
}

// TestPageOfACluster: a member's page lists every member, idle or not,
// with its connections, and charts the cluster's rate from emits made
// through another member.
func TestPageOfACluster(t *testing.T) {
	natsURL := natstest.StartEmbedded(t).URL()
	member := func(name string) *nodetest.Node {
		return startNode(t, server.Config{Cluster: cluster.Config{URLs: []string{natsURL}, Name: "dashtest", Member: name}})
	}
	a, b := member("a"), member("b")
	browser := browsertest.Browser(t)
	page := openPage(t, browser, a)

	waitJS(t, page, shows("name", "a")+" && "+shows("role", "cluster member")+" && "+shows("state", "ready")+" && "+shows("cluster", "cluster dashtest"))
	waitJS(t, page, membersAre("a member 0 self", "b member 0"))

	openBrowsers(t, browser, conn{a, nil}, conn{b, []string{"news"}}, conn{b, nil})
	waitJS(t, page, membersAre("a member 1 self", "b member 2")+" && "+shows("conn-all", "3")+" && "+shows("conn-node", "1")+" && "+shows("subs-all", "1"))

	emit(t, b, 8, "")
	waitJS(t, page, shows("offset", "8"))
	waitJS(t, page, chartAboveZero)
}
