package hub

// Transport is what the hub needs from one connection.
type Transport interface {
	// Write sends frames, in order, each as one text message, without
	// waiting for the peer: it gives the connection what it takes at once
	// and keeps the rest, reporting whether it kept any. It must not
	// retain the slice frames after it returns, but may keep the frames
	// themselves, which the hub shares among recipients and never
	// changes, until its Flush returns. The hub calls Write and
	// Flush from one goroutine at a time, never while holding a lock, and
	// calls Flush before Write again whenever Write kept frames.
	Write(frames [][]byte) (kept bool, err error)
	// Flush waits until the frames that Write kept are written. It fails
	// once Abort is called.
	Flush() error
	// Abort makes the Flush in progress, if any, and every later Write and
	// Flush fail at once. The hub calls it when a write takes longer than
	// Config.WriteTimeout, when it drops the client as slow, when the
	// transport calls Client.Close, and when a drain runs out of time;
	// possibly more than once, and at the same time as Write.
	Abort()
	// Close ends the connection, telling the peer why. The hub calls it at
	// most once, after the last Write, and never once the transport has
	// called Client.Close.
	Close(r Reason)
}

// Reason says why the hub ended a connection, and so whether and where the
// client should reconnect. Transports map it to their own close codes.
type Reason uint8

// The reasons the hub ends connections.
const (
	// ReasonShutdown: the server is going away; reconnect, perhaps to
	// another node.
	ReasonShutdown Reason = iota + 1
	// ReasonHandBack: this node hands its clients to another; reconnect at
	// once.
	ReasonHandBack
	// ReasonSlow: the client did not read its frames fast enough and its
	// send queue overflowed; reconnect after a pause.
	ReasonSlow
)

// String describes r in words fit for a close reason.
func (r Reason) String() string {
	switch r {
	case ReasonShutdown:
		return "server shutting down"
	case ReasonHandBack:
		return "node handing over, reconnect"
	case ReasonSlow:
		return "send queue overflow: client too slow"
	}
	return "unknown"
}
