package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/switchboard-rt/switchboard/internal/browsertest"
	"github.com/switchboard-rt/switchboard/pkg/client"
)

// modulePage imports client.mjs from the node, another origin than the
// page's, in a module script; log.errors has what failed to load or run.
const modulePage = `<!doctype html><meta charset="utf-8"><title>client.mjs test</title>
<script>
window.log = {errors: [], states: [], counts: [], events: []};
addEventListener("error", e => log.errors.push(e.message || "failed to load " + e.target.src), true);
</script>
<script type="module">
import Switchboard, { connect, Client } from "http://%s/client.mjs";
window.sb = connect(%s, {minDelay: 50, maxDelay: 500});
log.same = Switchboard.connect === connect && sb instanceof Client && window.Switchboard === Switchboard;
sb.onState(s => log.states.push(s));
sb.onCount(n => log.counts.push(n));
sb.on("A", (data, msg) => log.events.push({data, id: msg.id, offset: msg.offset, channel: msg.channel}));
sb.subscribe("news", {last: 1});
</script>`

// TestClientModule runs client.mjs in headless Chromium against a real
// node: the import resolves, and the client it exports counts, subscribes
// with last K and receives messages.
func TestClientModule(t *testing.T) {
	node := startNode(t)
	api, err := client.Dial(node.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	ctx := context.Background()
	before, err := api.Emit(ctx, "A", "before", client.ToChannel("news"))
	if err != nil {
		t.Fatal(err)
	}

	urls, _ := json.Marshal([]string{"ws://" + node.HTTPAddr() + "/ws"})
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, modulePage, node.HTTPAddr(), urls)
	}))
	defer page.Close()
	tab, _ := browsertest.Tab(t, browsertest.Browser(t), page.URL)

	// last: 1 brings the message emitted before the page opened.
	waitJS(t, tab, `window.sb && sb.state === "open" && log.counts.at(-1) === 1 && log.events.length === 1`)
	if !evalJS[bool](t, tab, `log.same`) {
		t.Error("client.mjs's default, connect and Client are not client.js's Switchboard")
	}
	after, err := api.Emit(ctx, "A", "after", client.ToChannel("news"))
	if err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `log.events.length === 2`)
	type event struct {
		Data, ID, Channel string
		Offset            uint64
	}
	got := evalJS[[]event](t, tab, `log.events`)
	want := []event{{"before", before.ID, "news", before.Offset}, {"after", after.ID, "news", after.Offset}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("events: got %+v; want %+v", got, want)
	}
	evalJS[bool](t, tab, `sb.close(), true`)
	waitJS(t, tab, `sb.state === "closed"`)
}
