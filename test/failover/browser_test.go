package failover

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-rt/switchboard/internal/browsersim"
	"github.com/switchboard-rt/switchboard/internal/browsertest"
)

// TestBrowserFailover: a real page, served by a web server through nginx,
// whose client.js connects to nginx's /ws. When the primary is killed the
// page says "reconnecting", then shows the standby's count and a message
// posted afterwards, without a reload.
func TestBrowserFailover(t *testing.T) {
	c := startCluster(t, clusterOptions{})
	browser := browsertest.Browser(t)
	// A few Go clients besides the page, so the count is not just 1.
	const others = 3
	browsersim.Start(t, others, c.wsURL(), c.origin())
	want := int64(others + 1)

	tab, _ := browsertest.Tab(t, browser, "http://"+c.nginxHTTP+"/?quotes=0")
	waitJS(t, tab, "page before the kill", countIs(want))
	waitCount(t, "primary with the page", c.counter(c.primaryGRPC), want, waitTimeout)
	// Record every state the page goes through, and mark the document: a
	// reload would lose both.
	if _, err := chromedp.Run(tab, chromedp.Evaluate[bool](
		`window.__states = []; window.__marker = "no reload"; sb.onState(s => window.__states.push(s)); true`)); err != nil {
		t.Fatal(err)
	}

	killed := c.killPrimary()
	waitJS(t, tab, "page after the kill", `window.__states.includes("reconnecting")`)
	t.Logf("kill -9 -> page shows reconnecting: %v", time.Since(killed).Round(time.Millisecond))
	waitCount(t, "standby after the kill", c.counter(c.standbyGRPC), want, waitTimeout)
	waitJS(t, tab, "page after the kill", countIs(want)+` && document.querySelector('[data-testid=state]').textContent === "open"`)
	t.Logf("kill -9 -> page open again with count %d: %v", want, time.Since(killed).Round(time.Millisecond))

	e := c.mustPost(t, "hello after the fail-over", want)
	waitJS(t, tab, "page after the kill", hasMessage("hello after the fail-over"))
	states, err := chromedp.Run(tab, chromedp.Evaluate[string](`window.__marker + ": " + window.__states.join(" > ")`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("page states: %s; message %s shown", states, e.ID)
	n, err := chromedp.Run(tab, chromedp.Evaluate[int](fmt.Sprintf(
		`document.querySelectorAll('[data-testid=message][data-id=%q]').length`, e.ID)))
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("page shows message %s %d times; want once", e.ID, n)
	}
	marker, _ := chromedp.Run(tab, chromedp.Evaluate[string](`String(window.__marker)`))
	if marker != "no reload" {
		t.Errorf("page lost its marker (%q): it reloaded", marker)
	}
}

// waitJS polls a JavaScript predicate in the tab until it is true.
func waitJS(t *testing.T, tab context.Context, what, expr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, waitTimeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(waitTimeout))); err != nil {
		page, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector('[data-testid=state]').textContent + " / count " + document.querySelector('[data-testid=online-count]').textContent`))
		t.Fatalf("%s: gave up waiting for %s (page: %s): %v", what, expr, page, err)
	}
}

func countIs(n int64) string {
	return fmt.Sprintf(`document.querySelector('[data-testid=online-count]').textContent === %q`, strconv.FormatInt(n, 10))
}

func hasMessage(text string) string {
	return fmt.Sprintf(`Array.from(document.querySelectorAll('[data-testid=message]')).some(e => e.textContent.includes(%q))`, text)
}
