package wsedge

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestIdleConnectionsHoldNoGoroutine checks that the poller, not a
// goroutine each, watches idle connections, and that they still answer
// pings, take subscriptions and end when the browser leaves.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	// Not parallel: it counts the process's goroutines.
	const n = 200
	const keepAlive = time.Second
	e := startEdge(t, Config{KeepAlive: keepAlive})
	before := runtime.NumGoroutine()

	// A client answers pings only while it reads: every client reads, in
	// a goroutine of the test's.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, n)
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		ws := e.dial(t, nil)
		conns[i] = ws
		go func() {
			for {
				if _, _, err := ws.Read(ctx); err != nil {
					done <- err
					return
				}
			}
		}()
	}
	e.waitCount(t, n)
	// The hub's writers linger for 2 s after the count frames.
	eventually(t, func() (bool, string) {
		extra := runtime.NumGoroutine() - before - n
		return extra < n/10, fmt.Sprintf("%d goroutines more than before %d idle connections, besides the clients'; want fewer than %d", extra, n, n/10)
	})

	time.Sleep(3 * keepAlive)
	if got := e.hub.Count(""); got != n {
		t.Fatalf("count after three keep-alive rounds: got %d; want %d", got, n)
	}
	sub := []byte(`{"type":"subscribe","channel":"news"}`)
	for _, ws := range conns[:n/2] {
		if err := ws.Write(ctx, websocket.MessageText, sub); err != nil {
			t.Fatalf("subscribe: %v", err)
		}
	}
	eventually(t, func() (bool, string) {
		got := e.hub.Count("news")
		return got == n/2, fmt.Sprintf("subscribers: got %d; want %d", got, n/2)
	})
	for _, ws := range conns[n/2:] {
		ws.Close(websocket.StatusNormalClosure, "")
	}
	e.waitCount(t, n/2)
	cancel()
	for range n {
		<-done
	}
}
