// Package browsertest starts headless Chromium for tests. Where no browser
// is installed the test is skipped, except under `make test` and CI,
// where a missing browser is a failure (see internal/testenv).
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-rt/switchboard/internal/testenv"
)

// Bin returns the path of a Chromium-like browser: $CHROME_BIN, or the
// first of chromium, chromium-browser, google-chrome and headless-shell on
// the PATH.
func Bin(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("CHROME_BIN"); b != "" {
		return b
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.Missing(t, "no Chromium found: install chromium (apt-get install chromium) or set CHROME_BIN")
	return ""
}

// Browser starts one headless browser for the test and returns a context
// for it; Tab opens pages in it. The browser stops when the test ends.
func Browser(t testing.TB) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(Bin(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// Background tabs must keep their timers and sockets running.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	if err := chromedp.Do(bctx); err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("failed to start Chromium: %v", err)
	}
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	return bctx
}

// Tab opens a new tab in the browser of ctx (from Browser) at url. Closing
// the returned cancel closes the tab.
func Tab(t testing.TB, browser context.Context, url string) (context.Context, context.CancelFunc) {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		cancel()
		t.Fatalf("failed to open %s: %v", url, err)
	}
	t.Cleanup(cancel)
	return ctx, cancel
}
