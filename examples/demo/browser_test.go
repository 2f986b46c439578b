package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-rt/switchboard/examples/webserver/site"
	"github.com/switchboard-rt/switchboard/internal/browsertest"
	"github.com/switchboard-rt/switchboard/internal/freeport"
	"github.com/switchboard-rt/switchboard/internal/nodetest"
	"github.com/switchboard-rt/switchboard/pkg/client"
	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

func testLogger(t *testing.T) *slog.Logger { return nodetest.Logger(t, slog.LevelWarn) }

// startDemo runs the demo on free ports and returns its web servers' URLs,
// read from its "web: " lines as a user would.
func startDemo(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, config{httpAddr: "127.0.0.1:0", grpcAddr: "127.0.0.1:0", webAddrs: []string{"127.0.0.1:0", "127.0.0.1:0"}}, pw, testLogger(t))
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo: %v", err)
		}
	})
	var webs []string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		t.Log(line)
		if u, ok := strings.CutPrefix(line, "web: "); ok {
			webs = append(webs, u)
		}
		if strings.HasPrefix(line, "Open the web") {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if len(webs) != 2 {
		t.Fatalf("got web servers %q; want 2", webs)
	}
	return webs
}

// waitJS polls a JavaScript predicate in the tab until it is true.
func waitJS(t *testing.T, tab context.Context, what, expr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 20*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		state, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector('[data-testid=state]').textContent + " / count " + document.querySelector('[data-testid=online-count]').textContent`))
		t.Fatalf("%s: gave up waiting for %s (page: %s): %v", what, expr, state, err)
	}
}

func countIs(n int) string {
	return fmt.Sprintf(`document.querySelector('[data-testid=online-count]').textContent === %q`, strconv.Itoa(n))
}

func hasMessage(text string) string {
	return fmt.Sprintf(`Array.from(document.querySelectorAll('[data-testid=message]')).some(e => e.textContent.includes(%q))`, text)
}

func post(t *testing.T, url string, body any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: got %s %v; want 200", url, resp.Status, out)
	}
	return out
}

// TestDemoInBrowser drives the demo the way a person would: pages on both
// web servers, the shared count, a posted message, a channel.
func TestDemoInBrowser(t *testing.T) {
	webs := startDemo(t)
	browser := browsertest.Browser(t)

	a, _ := browsertest.Tab(t, browser, webs[0])
	b, _ := browsertest.Tab(t, browser, webs[0])
	c, closeC := browsertest.Tab(t, browser, webs[1]+"/?quotes=0")
	tabs := []context.Context{a, b, c}
	for i, tab := range tabs {
		waitJS(t, tab, fmt.Sprintf("page %d", i), countIs(3))
	}
	// One browser, three tabs on two web servers: one visitor, whose token
	// both web servers mint from the same cookie.
	for i, tab := range tabs {
		waitJS(t, tab, fmt.Sprintf("page %d: one visitor", i), `document.querySelector('[data-testid=visitor-count]').textContent === "1"`)
	}
	other, _ := browsertest.Tab(t, browsertest.Browser(t), webs[1])
	for i, tab := range append(tabs, other) {
		waitJS(t, tab, fmt.Sprintf("page %d: a second browser is a second visitor", i), `document.querySelector('[data-testid=visitor-count]').textContent === "2"`)
	}
	waitJS(t, a, "4 tabs", countIs(4))
	chromedp.Cancel(other)
	for i, tab := range tabs {
		waitJS(t, tab, fmt.Sprintf("page %d: the second browser gone", i), `document.querySelector('[data-testid=visitor-count]').textContent === "1"`+` && `+countIs(3))
	}

	closeC()
	for i, tab := range tabs[:2] {
		waitJS(t, tab, fmt.Sprintf("page %d after a close", i), countIs(2))
	}
	c, _ = browsertest.Tab(t, browser, webs[1]+"/?quotes=0")
	tabs[2] = c
	for i, tab := range tabs {
		waitJS(t, tab, fmt.Sprintf("page %d after a reopen", i), countIs(3))
	}

	// A POST to one web server reaches the pages of both.
	for _, web := range webs {
		text := "hello from " + web
		sent := time.Now()
		res := post(t, web+"/api/messages", map[string]string{"text": text})
		if got := res["recipients"]; got != float64(3) {
			t.Errorf("POST %s: got recipients %v; want 3", web, got)
		}
		for i, tab := range tabs {
			waitJS(t, tab, fmt.Sprintf("page %d", i), hasMessage(text))
			at, err := chromedp.Run(tab, chromedp.Evaluate[string](fmt.Sprintf(
				`Array.from(document.querySelectorAll('[data-testid=message]')).find(e => e.textContent.includes(%q)).dataset.receivedAt`, text)))
			if err != nil {
				t.Fatal(err)
			}
			ms, _ := strconv.ParseInt(at, 10, 64)
			t.Logf("emit to text on page %d: %v (from the POST to %s)", i, time.UnixMilli(ms).Sub(sent).Round(time.Millisecond), web)
		}
	}

	// A quotation reaches the "quotes" subscribers only.
	q := post(t, webs[1]+"/api/quote", nil)
	if got := q["recipients"]; got != float64(2) {
		t.Errorf("quote: got recipients %v; want 2 (the pages subscribed to quotes)", got)
	}
	author, _ := q["author"].(string)
	for i, tab := range tabs[:2] {
		waitJS(t, tab, fmt.Sprintf("page %d", i), quoteHas(author))
	}
	post(t, webs[0]+"/api/messages", map[string]string{"text": "after the quote"})
	waitJS(t, c, "unsubscribed page", hasMessage("after the quote"))
	quote, err := chromedp.Run(c, chromedp.Evaluate[string](`document.querySelector('[data-testid=quote]').textContent`))
	if err != nil {
		t.Fatal(err)
	}
	if quote != "" {
		t.Errorf("page without the quotes channel shows the quotation %q; want none", quote)
	}

	// A page opened after the quotation shows it at once, bottom left.
	d, _ := browsertest.Tab(t, browser, webs[0])
	waitJS(t, d, "page opened after the quote", quoteHas(author))
	pos, err := chromedp.Run(d, chromedp.Evaluate[string](`(() => { const r = document.querySelector('[data-testid=quote]').getBoundingClientRect();
		return (r.left < innerWidth / 2) + "," + (r.bottom > innerHeight / 2) + "," + getComputedStyle(document.querySelector('[data-testid=quote]')).position; })()`))
	if err != nil {
		t.Fatal(err)
	}
	if pos != "true,true,fixed" {
		t.Errorf("quotation box: left half, bottom half, position: got %s; want true,true,fixed (bottom left, in place)", pos)
	}
	if n, _ := chromedp.Run(d, chromedp.Evaluate[int](`document.querySelectorAll('[data-testid=message]').length`)); n != 0 {
		t.Errorf("page opened later shows %d messages; want none: only the current quotation is sent at once", n)
	}
}

func quoteHas(text string) string {
	return fmt.Sprintf(`document.querySelector('[data-testid=quote]').textContent.includes(%q)`, text)
}

// messageTexts is the list of messages on a page, oldest first.
const messageTexts = `Array.from(document.querySelectorAll('[data-testid=message]')).map(e => e.textContent).reverse()`

// TestPageKeepsEveryMessageAcrossAReconnect: the node closes the page's
// connection (a hand-back) and messages are posted before it is back: the
// page shows every one, once, in order, and no gap.
func TestPageKeepsEveryMessageAcrossAReconnect(t *testing.T) {
	n := nodetest.Start(t, server.Config{AllowedOrigins: []string{"127.0.0.1:*"}})
	sb, err := client.Dial(n.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	web := httptest.NewServer(site.New(site.Config{
		Switchboard: sb,
		PublicURLs:  func() []string { return []string{"ws://" + n.HTTPAddr() + "/ws"} },
		Logger:      testLogger(t),
	}))
	defer web.Close()
	tab, _ := browsertest.Tab(t, browsertest.Browser(t), web.URL)
	waitJS(t, tab, "page", countIs(1))
	post(t, web.URL+"/api/messages", map[string]string{"text": "first"})
	waitJS(t, tab, "page", hasMessage("first"))

	// Going away (1001) makes the page back off before it reconnects:
	// the posts land while it is away.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Hub().Disconnect(ctx, hub.ReasonShutdown, 0); err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"second", "third", "fourth"} {
		post(t, web.URL+"/api/messages", map[string]string{"text": text})
	}
	waitJS(t, tab, "page after the reconnect", hasMessage("fourth"))
	post(t, web.URL+"/api/messages", map[string]string{"text": "fifth"})
	waitJS(t, tab, "page", hasMessage("fifth"))
	got, err := chromedp.Run(tab, chromedp.Evaluate[[]string](messageTexts))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"first", "second", "third", "fourth", "fifth"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("messages on the page: got %q; want %q", got, want)
	}
	if gaps, _ := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll('[data-testid=gap]').length`)); gaps != 0 {
		t.Errorf("gap notes: got %d; want none, nothing was missed", gaps)
	}
}

// TestPagesSurviveRestart stops and restarts Switchboard under open pages:
// they show "reconnecting", then the right count again, with no reload.
// countDimmed and countBright check that a page shows its count dimmed
// while it is not connected, as it may be stale, and at full strength
// once connected.
const (
	countDimmed = ` && getComputedStyle(document.querySelector('[data-testid=online-count]')).opacity < 0.5`
	countBright = ` && getComputedStyle(document.querySelector('[data-testid=online-count]')).opacity === "1"`
)

func TestPagesSurviveRestart(t *testing.T) {
	// The node stops and starts again on the same addresses.
	cfg := server.Config{HTTPAddr: freeport.Addr(t), GRPCAddr: freeport.Addr(t), AllowedOrigins: []string{"127.0.0.1:*"}}
	n := nodetest.Start(t, cfg)

	sb, err := client.Dial(cfg.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	web := httptest.NewServer(site.New(site.Config{
		Switchboard: sb,
		PublicURLs:  func() []string { return []string{"ws://" + cfg.HTTPAddr + "/ws"} },
		Logger:      testLogger(t),
	}))
	defer web.Close()

	browser := browsertest.Browser(t)
	a, _ := browsertest.Tab(t, browser, web.URL)
	b, _ := browsertest.Tab(t, browser, web.URL)
	for i, tab := range []context.Context{a, b} {
		waitJS(t, tab, fmt.Sprintf("page %d", i), countIs(2)+countBright)
		if _, err := chromedp.Run(tab, chromedp.Evaluate[bool](`window.notReloaded = true`)); err != nil {
			t.Fatal(err)
		}
	}

	n.Stop()
	for i, tab := range []context.Context{a, b} {
		waitJS(t, tab, fmt.Sprintf("page %d while the node is down", i), `document.querySelector('[data-testid=state]').textContent === "reconnecting"`+countDimmed)
	}
	nodetest.Start(t, cfg)
	for i, tab := range []context.Context{a, b} {
		waitJS(t, tab, fmt.Sprintf("page %d after the restart", i), countIs(2)+` && document.querySelector('[data-testid=state]').textContent === "open" && window.notReloaded === true`+countBright)
	}
	// A restarted node's log is a new one: the pages cannot know what
	// they missed, and say so.
	for i, tab := range []context.Context{a, b} {
		waitJS(t, tab, fmt.Sprintf("page %d after the restart", i), `document.querySelectorAll('[data-testid=gap]').length === 1`)
	}
	res := post(t, web.URL+"/api/messages", map[string]string{"text": "after the restart"})
	if got := res["recipients"]; got != float64(2) {
		t.Errorf("got recipients %v; want 2", got)
	}
	for i, tab := range []context.Context{a, b} {
		waitJS(t, tab, fmt.Sprintf("page %d", i), hasMessage("after the restart"))
	}
}
