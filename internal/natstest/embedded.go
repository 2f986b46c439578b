package natstest

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/switchboard-rt/switchboard/internal/freeport"
)

// Embedded is a NATS server with JetStream in the test's own process, for
// tests that need no process of their own: it starts in milliseconds and
// stops with the test.
type Embedded struct {
	t    testing.TB
	opts *server.Options
	ns   *server.Server
}

// StartEmbedded runs a NATS server with JetStream on a free loopback port,
// its store in a directory of the test's, until the test ends.
func StartEmbedded(t testing.TB) *Embedded {
	t.Helper()
	_, port, _ := net.SplitHostPort(freeport.Addr(t))
	p, _ := strconv.Atoi(port)
	e := &Embedded{t: t, opts: &server.Options{Host: "127.0.0.1", Port: p, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir()}}
	e.Start()
	t.Cleanup(e.Stop)
	return e
}

// URL returns the server's client URL.
func (e *Embedded) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(e.opts.Port) }

// Start starts the server again after Stop, on the same port and store.
func (e *Embedded) Start() {
	e.t.Helper()
	var err error
	if e.ns, err = server.NewServer(e.opts); err != nil {
		e.t.Fatal(err)
	}
	go e.ns.Start()
	if !e.ns.ReadyForConnections(10 * time.Second) {
		e.t.Fatal("embedded NATS server not ready")
	}
}

// Stop shuts the server down and waits for it; the clients see it go.
func (e *Embedded) Stop() {
	e.ns.Shutdown()
	e.ns.WaitForShutdown()
}
