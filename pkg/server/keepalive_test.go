package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/proxytest"
)

// TestKeepAlive cuts one browser's network without a close or a FIN (a
// proxy that blackholes it) and checks that it leaves the count within the
// keep-alive window, while a healthy idle browser stays through several
// windows.
func TestKeepAlive(t *testing.T) {
	t.Parallel()
	const keepAlive = time.Second
	// The ping period is keepAlive/2 and a pong may take keepAlive/2, so a
	// vanished browser counts for at most keepAlive; slack covers -race and
	// a busy machine.
	const slack = 1500 * time.Millisecond
	n := startNode(t, Config{KeepAlive: keepAlive})
	p := proxytest.Start(t, n.srv.HTTPAddr())

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	doomed, _, err := dialBrowser(ctx, n.hc, "ws://"+p.Addr()+"/ws", nil)
	if err != nil {
		t.Fatalf("dial through the proxy: got %v; want nil", err)
	}
	t.Cleanup(doomed.closeNow)
	doomed.read()
	healthy := n.dialReading(t)
	n.waitCount(t, "", 2)

	// Both answer pings, so both stay over several keep-alive windows.
	idle := time.Now()
	for time.Since(idle) < 3*keepAlive {
		if got := n.count(t, ""); got != 2 {
			t.Fatalf("count %v after both connected and idle: got %d; want 2", time.Since(idle), got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for name, b := range map[string]*browser{"doomed": doomed, "healthy": healthy} {
		if got := b.pings.Load(); got < 3 {
			t.Errorf("%s browser: pings over 3 keep-alive windows: got %d; want at least 3", name, got)
		}
	}

	p.Blackhole()
	cut := time.Now()
	eventually(t, waitTimeout, func() (bool, string) {
		got := n.count(t, "")
		return got == 1, fmt.Sprintf("count after the blackhole: got %d; want 1", got)
	})
	took := time.Since(cut)
	t.Logf("a blackholed browser left the count %v after its network vanished (KeepAlive %v)", took.Round(time.Millisecond), keepAlive)
	if took > keepAlive+slack {
		t.Errorf("blackholed browser left the count after %v; want at most KeepAlive %v (+%v slack)", took, keepAlive, slack)
	}
	healthy.waitCount(t, 1)
	if err := healthy.readErr(); err != nil {
		t.Errorf("healthy browser: got %v; want still connected", err)
	}
}
