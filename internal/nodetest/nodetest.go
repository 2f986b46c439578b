// Package nodetest runs real Switchboard nodes in-process for the tests of
// the packages around the server: examples, the browser library, the
// command and the load tool.
package nodetest

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/server"
)

// Node is a node started by Start.
type Node struct {
	*server.Server
	t      testing.TB
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// Start builds a node from cfg and runs it until Stop or the end of the
// test. Empty addresses become free loopback ports, and a nil Logger
// writes warnings and errors to the test's log.
func Start(t testing.TB, cfg server.Config) *Node {
	t.Helper()
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = Logger(t, slog.LevelWarn)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{Server: srv, t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- srv.Run(ctx) }()
	t.Cleanup(n.Stop)
	return n
}

// Stop shuts the node down gracefully and waits for it; calling it again
// does nothing.
func (n *Node) Stop() {
	n.once.Do(func() {
		n.cancel()
		select {
		case err := <-n.done:
			if err != nil {
				n.t.Errorf("node: Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			n.t.Errorf("node: Run did not return within 30s of its context ending")
		}
	})
}

// Logger returns a logger that writes records at level and above to the
// test's log.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
