package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/browsertest"
	"github.com/switchboard-rt/switchboard/internal/nodetest"
	"github.com/switchboard-rt/switchboard/pkg/client"
	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/identity"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

// visitorPage connects with the options in %s and records the counts,
// as "connections/visitors".
const visitorPage = `<!doctype html><meta charset="utf-8"><title>visitors</title>
<script>%s</script>
<script src="http://%s/client.js"></script>
<script>
window.log = {counts: []};
window.sb = Switchboard.connect(%s, {minDelay: 50, maxDelay: 500, %s});
sb.onCount((n, v) => log.counts.push(n + "/" + v));
</script>`

// refuseStorage makes localStorage throw, as a browser that refuses
// storage to the page does.
const refuseStorage = `Object.defineProperty(window, "localStorage", {get() { throw new DOMException("denied", "SecurityError"); }});`

const tokenSecret = "the-site-and-its-nodes"

func serveVisitorPage(t *testing.T, node *nodetest.Node, minted *atomic.Int64) *httptest.Server {
	t.Helper()
	urls, _ := json.Marshal([]string{"http://" + node.HTTPAddr() + "/ws"})
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/token":
			minted.Add(1)
			tok, err := client.MintToken(tokenSecret, r.URL.Query().Get("sub"), time.Minute)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Access-Control-Allow-Origin", "*")
			fmt.Fprint(w, tok)
			return
		}
		pre, opt := "", ""
		if r.URL.Query().Has("refuse") {
			pre = refuseStorage
		}
		if sub := r.URL.Query().Get("sub"); sub != "" {
			opt = fmt.Sprintf(`token: () => fetch("/token?sub=%s").then(r => r.text())`, sub)
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, visitorPage, pre, node.HTTPAddr(), urls, opt)
	}))
	t.Cleanup(web.Close)
	return web
}

func waitOnline(t *testing.T, node *nodetest.Node, want hub.Online) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for node.Hub().Online("") != want {
		if time.Now().After(deadline) {
			t.Fatalf("node counts %+v; want %+v", node.Hub().Online(""), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTabsAreOneVisitor: two tabs of one browser profile are one visitor
// and two connections; a second profile is a second visitor; a visitor
// stays until their last tab closes.
func TestTabsAreOneVisitor(t *testing.T) {
	node := nodetest.Start(t, server.Config{AllowedOrigins: []string{"127.0.0.1:*"}})
	web := serveVisitorPage(t, node, new(atomic.Int64))

	first := browsertest.Browser(t)
	tab1, close1 := browsertest.Tab(t, first, web.URL)
	tab2, close2 := browsertest.Tab(t, first, web.URL)
	waitOnline(t, node, hub.Online{Connections: 2, Visitors: 1})
	waitJS(t, tab1, `log.counts.at(-1) === "2/1"`)
	waitJS(t, tab2, `log.counts.at(-1) === "2/1"`)
	if a, b := evalJS[string](t, tab1, `localStorage.getItem("switchboard.visitor")`), evalJS[string](t, tab2, `localStorage.getItem("switchboard.visitor")`); a == "" || a != b {
		t.Fatalf("anonymous ids of two tabs: %q and %q; want one, kept in localStorage", a, b)
	}

	second := browsertest.Browser(t) // its own user-data dir: another person
	tab3, _ := browsertest.Tab(t, second, web.URL)
	waitOnline(t, node, hub.Online{Connections: 3, Visitors: 2})
	waitJS(t, tab3, `log.counts.at(-1) === "3/2"`)
	waitJS(t, tab1, `log.counts.at(-1) === "3/2"`)

	close1()
	waitOnline(t, node, hub.Online{Connections: 2, Visitors: 2})
	waitJS(t, tab3, `log.counts.at(-1) === "2/2"`)
	close2()
	waitOnline(t, node, hub.Online{Connections: 1, Visitors: 1})
	waitJS(t, tab3, `log.counts.at(-1) === "1/1"`)
}

// TestTokenFunctionOnEveryConnect: a token function is called before every
// connect, so a reconnect carries a fresh token, and the browser counts as
// the token's subject; a browser that refuses storage keeps its anonymous
// id in memory.
func TestTokenFunctionOnEveryConnect(t *testing.T) {
	node := nodetest.Start(t, server.Config{AllowedOrigins: []string{"127.0.0.1:*"}, TokenSecret: tokenSecret})
	var minted atomic.Int64
	web := serveVisitorPage(t, node, &minted)

	browser := browsertest.Browser(t)
	signedIn, _ := browsertest.Tab(t, browser, web.URL+"?sub=user-7")
	refusing, _ := browsertest.Tab(t, browser, web.URL+"?refuse=1")
	waitOnline(t, node, hub.Online{Connections: 2, Visitors: 2})
	waitJS(t, signedIn, `log.counts.at(-1) === "2/2"`)
	waitJS(t, refusing, `log.counts.at(-1) === "2/2"`)
	keys := func() []string {
		page, _ := node.Hub().Presence("", "", 10)
		var out []string
		for _, v := range page {
			out = append(out, v.Visitor)
		}
		return out
	}
	before := keys()
	if !slices.Contains(before, identity.TokenKey("user-7")) || len(before) != 2 || !strings.HasPrefix(before[0], "a:") {
		t.Fatalf("visitors: got %q; want the token's user-7 and one anonymous id", before)
	}
	if n := minted.Load(); n != 1 {
		t.Fatalf("tokens fetched: got %d; want 1", n)
	}

	// A hand-back: both pages reconnect at once.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node.Hub().HandBack(ctx, 0)
	waitJS(t, signedIn, `sb.state === "open" && log.counts.length > 1`)
	waitOnline(t, node, hub.Online{Connections: 2, Visitors: 2})
	deadline := time.Now().Add(10 * time.Second)
	for minted.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := minted.Load(); n != 2 {
		t.Errorf("tokens fetched after a reconnect: got %d; want 2", n)
	}
	if after := keys(); !slices.Equal(after, before) {
		t.Errorf("visitors after the reconnect: got %q; want %q: the memory id and the token's subject kept", after, before)
	}
}
