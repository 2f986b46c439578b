package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/browsertest"
	"github.com/switchboard-rt/switchboard/internal/nodetest"
	"github.com/switchboard-rt/switchboard/internal/proxytest"
	"github.com/switchboard-rt/switchboard/pkg/client"
	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

// recoveryPage shows ShowMessage texts and quotations, and records each
// reconnect's outcome.
const recoveryPage = `<!doctype html><meta charset="utf-8"><title>client.js recovery</title>
<script src="http://%s/client.js"></script>
<script>
window.log = {texts: [], quotes: [], reconnects: [], offsets: []};
window.sb = Switchboard.connect(%s, {minDelay: 50, maxDelay: 300});
sb.on("ShowMessage", (d, m) => { log.texts.push(d); log.offsets.push(m.offset); });
sb.on("Quote", d => log.quotes.push(d));
sb.onReconnect(ok => log.reconnects.push(ok));
sb.subscribe("page");
sb.subscribe("quotes", {last: 1});
</script>`

// recoveryRig is a node, a proxy in front of its WebSocket listener that
// can cut the page's connection, and a web server serving recoveryPage.
type recoveryRig struct {
	node  *nodetest.Node
	proxy *proxytest.Proxy
	api   *client.Client
	url   string
}

func newRecoveryRig(t *testing.T, cfg hub.Config) *recoveryRig {
	t.Helper()
	node := nodetest.Start(t, server.Config{AllowedOrigins: []string{"127.0.0.1:*"}, Hub: cfg})
	p := proxytest.Start(t, node.HTTPAddr())
	api, err := client.Dial(node.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	urls, _ := json.Marshal([]string{"ws://" + p.Addr() + "/ws"})
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, recoveryPage, node.HTTPAddr(), urls)
	}))
	t.Cleanup(web.Close)
	return &recoveryRig{node: node, proxy: p, api: api, url: web.URL}
}

func (r *recoveryRig) emit(t *testing.T, event, channel, text string) {
	t.Helper()
	var opts []client.EmitOption
	if channel != "" {
		opts = append(opts, client.ToChannel(channel))
	}
	if _, err := r.api.Emit(context.Background(), event, text, opts...); err != nil {
		t.Fatalf("emit %s %q: %v", event, text, err)
	}
}

// waitHub polls the node's hub until cond holds.
func waitHub(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cut drops the page's connection and keeps it away while fn runs.
func (r *recoveryRig) cut(t *testing.T, fn func()) {
	t.Helper()
	r.proxy.Cut(true)
	waitHub(t, "the node to see the page leave", func() bool { return r.node.Hub().Count("") == 0 })
	fn()
	r.proxy.Accept()
}

// TestPageResumesAfterACut cuts a page's socket while five messages it is
// a recipient of are emitted (and one it is not): once back, it shows all
// five, in order, once, and says it recovered.
func TestPageResumesAfterACut(t *testing.T) {
	r := newRecoveryRig(t, hub.Config{})
	tab, _ := browsertest.Tab(t, browsertest.Browser(t), r.url)
	waitJS(t, tab, `sb.state === "open"`)
	waitHub(t, "the page's subscriptions", func() bool { return r.node.Hub().Count("page") == 1 && r.node.Hub().Count("quotes") == 1 })
	r.emit(t, "ShowMessage", "", "before")
	waitJS(t, tab, `log.texts.length === 1`)

	r.cut(t, func() {
		r.emit(t, "ShowMessage", "", "one")
		r.emit(t, "ShowMessage", "page", "two")
		r.emit(t, "ShowMessage", "elsewhere", "not for the page")
		r.emit(t, "ShowMessage", "", "three")
		r.emit(t, "ShowMessage", "page", "four")
		r.emit(t, "ShowMessage", "", "five")
	})
	waitJS(t, tab, `log.reconnects.length === 1 && log.texts.length >= 6`)
	r.emit(t, "ShowMessage", "page", "live")
	waitJS(t, tab, `log.texts.length >= 7`)
	time.Sleep(100 * time.Millisecond) // room for a duplicate to show up
	want := []string{"before", "one", "two", "three", "four", "five", "live"}
	if got := evalJS[[]string](t, tab, `log.texts`); !slices.Equal(got, want) {
		t.Errorf("texts: got %q; want %q", got, want)
	}
	if got := evalJS[[]bool](t, tab, `log.reconnects`); !slices.Equal(got, []bool{true}) {
		t.Errorf("onReconnect: got %v; want [true]", got)
	}
	offsets := evalJS[[]int](t, tab, `log.offsets`)
	for i := 1; i < len(offsets); i++ {
		if offsets[i] <= offsets[i-1] {
			t.Errorf("offsets: got %v; want them increasing", offsets)
			break
		}
	}
}

// TestPageShowsTheCurrentQuoteAtOnce opens a page after a quotation: it
// shows it without waiting for the next one.
func TestPageShowsTheCurrentQuoteAtOnce(t *testing.T) {
	r := newRecoveryRig(t, hub.Config{})
	r.emit(t, "Quote", "quotes", "an old quote")
	r.emit(t, "Quote", "quotes", "the current quote")
	r.emit(t, "ShowMessage", "", "not a quote")
	tab, _ := browsertest.Tab(t, browsertest.Browser(t), r.url)
	waitJS(t, tab, `log.quotes.length >= 1`)
	time.Sleep(100 * time.Millisecond)
	if got := evalJS[[]string](t, tab, `log.quotes`); !slices.Equal(got, []string{"the current quote"}) {
		t.Errorf("quotes: got %q; want only the current one", got)
	}
	if got := evalJS[[]string](t, tab, `log.texts`); len(got) != 0 {
		t.Errorf("texts: got %q; want none: a new page is not sent old messages", got)
	}
}

// TestPageThatCannotRecoverIsTold: with a history too short for what the
// page missed, it hears recovered=false, and gets the current quote again.
func TestPageThatCannotRecoverIsTold(t *testing.T) {
	r := newRecoveryRig(t, hub.Config{HistorySize: 3})
	tab, _ := browsertest.Tab(t, browsertest.Browser(t), r.url)
	waitJS(t, tab, `sb.state === "open"`)
	waitHub(t, "the page's subscriptions", func() bool { return r.node.Hub().Count("quotes") == 1 })
	r.cut(t, func() {
		for i := range 4 {
			r.emit(t, "ShowMessage", "", fmt.Sprint("lost ", i))
		}
		r.emit(t, "Quote", "quotes", "new quote")
	})
	waitJS(t, tab, `log.reconnects.length === 1 && log.quotes.length === 1`)
	if got := evalJS[[]bool](t, tab, `log.reconnects`); !slices.Equal(got, []bool{false}) {
		t.Errorf("onReconnect: got %v; want [false]", got)
	}
	if got := evalJS[[]string](t, tab, `log.quotes`); !slices.Equal(got, []string{"new quote"}) {
		t.Errorf("quotes: got %q; want the current one, asked for again", got)
	}
	if got := evalJS[[]string](t, tab, `log.texts`); len(got) != 0 {
		t.Errorf("texts: got %q; want none: nothing old is replayed after recovered=false", got)
	}
}
