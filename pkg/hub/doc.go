// Package hub is Switchboard's core: the set of browser connections, their
// channel subscriptions, exact counts, change notifications and fan-out.
//
// The hub knows nothing of gRPC or WebSocket. A transport hands it each
// connection through Register, as a Transport; the hub gives every client a
// bounded send queue, written by a small pool of goroutines shared by all
// clients. Transports write without blocking and keep what the socket does
// not take; only then does a client get a goroutine of its own, to wait
// for the rest to be flushed. So a slow or dead browser never delays the
// others, and no lock is held while writing to a socket.
//
// Counts are of connections and of the distinct visitors behind them: a
// transport names each connection's visitor with an opaque key
// (Start.Visitor), and the hub counts each key once however many
// connections, here and on other nodes, hold it (see visitors.go).
//
// Every message gets an offset in the node's log (see package msglog) and is
// committed in that order. Counts from other nodes arrive through a Broker,
// whose default, Local, is a single node that needs nothing outside the
// process. In a cluster a Sequencer, a log the nodes share, orders the
// messages instead: an emit goes into it, and every node delivers what it
// hands back (Deliver).
//
// For fail-over, a standby node pauses its hub while its primary serves
// (Pause: no new clients, emits or watches; watches in progress end with
// ErrPaused) and hands its clients back (HandBack: close with
// ReasonHandBack, spread over a window). EmitOnce makes emits idempotent:
// a key seen recently is not delivered again.
package hub
