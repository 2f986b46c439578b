package hub

import (
	"runtime"
	"sync"
	"time"
)

// The hub writes to its clients from a small pool of goroutines rather than
// one per client. A client with frames to send waits in the pool's ready
// queue until a pool writer takes it and hands all its frames to the
// transport at once. Transports write without blocking: they give the
// socket what it takes and keep the rest. A client whose socket is full (a
// slow browser) gets a goroutine of its own for as long as the transport
// takes to flush what it kept, bounded by WriteTimeout, and then goes back
// to the queue. So a fan-out readies clients rather than goroutines, frames
// queued while a client waits its turn join its next write, and only slow
// browsers cost a goroutine each.
//
// On a machine with several cores, one is left to the rest of the node
// while emits keep arriving: Go polls the network only when a core runs
// out of goroutines to run, so writers busy on every core would hold back
// the next emit until a fan-out's writes are done. With a core free the
// next emit is taken at once, and its frames share the writes of the
// clients not yet written. When no emit has arrived for writerLag and
// clients have waited that long, a fan-out is left to drain alone, and the
// last core joins it.

// writerChunk is how many ready clients a pool writer takes at once.
const writerChunk = 32

// writerLag is how long the ready queue must have stopped growing, with
// its oldest client waiting as long, before the last core joins the
// writers.
const writerLag = 10 * time.Millisecond

// writerPool queues the clients that have frames to write and runs the
// goroutines that write them. Its writers start when clients are queued
// and return when the queue is empty.
type writerPool struct {
	eager int // writers started as soon as there is work for them
	max   int // writers at most

	mu      sync.Mutex
	ready   []readyClient // clients waiting for a writer, from ready[head]
	head    int
	running int           // writers running
	last    time.Duration // when push last ran, on clock
}

// readyClient is a client in the ready queue, with when it was queued.
type readyClient struct {
	c  *Client
	at time.Duration // on clock
}

var clockStart = time.Now()

// clock reads the monotonic clock.
func clock() time.Duration { return time.Since(clockStart) }

// newWriterPool returns a pool sized for the cores Go runs on.
func newWriterPool() writerPool {
	n := runtime.GOMAXPROCS(0)
	return writerPool{eager: max(1, n-1), max: n}
}

// push queues clients whose writing flag the caller set; the pool owns
// them until a writer clears it.
func (p *writerPool) push(cs ...*Client) {
	if len(cs) == 0 {
		return
	}
	p.mu.Lock()
	if p.head > 0 && p.head >= len(p.ready)/2 {
		n := copy(p.ready, p.ready[p.head:])
		clear(p.ready[n:])
		p.ready, p.head = p.ready[:n], 0
	}
	now := clock()
	p.last = now
	for _, c := range cs {
		p.ready = append(p.ready, readyClient{c, now})
	}
	start := p.eagerToStart()
	p.running += start
	p.mu.Unlock()
	for range start {
		go p.run()
	}
}

// run is a pool writer: it writes for queued clients, a chunk at a time,
// until the queue is empty, and starts the last writer when the queue has
// stopped growing but still waits.
func (p *writerPool) run() {
	var (
		chunk [writerChunk]*Client
		batch [][]byte
	)
	for {
		p.mu.Lock()
		n := min(len(chunk), len(p.ready)-p.head)
		if n == 0 {
			p.ready, p.head = p.ready[:0], 0
			p.running--
			p.mu.Unlock()
			return
		}
		for i := range n {
			chunk[i] = p.ready[p.head+i].c
		}
		clear(p.ready[p.head : p.head+n])
		p.head += n
		another := p.wantAnother(clock())
		if another {
			p.running++
		}
		p.mu.Unlock()
		if another {
			go p.run()
		}
		for _, c := range chunk[:n] {
			batch = c.write(batch)
		}
		clear(chunk[:n])
	}
}

// wantAnother reports whether another writer should start at now: the
// pool may run more, and the queue has stopped growing for writerLag while
// its oldest client has waited as long. p.mu must be held.
func (p *writerPool) wantAnother(now time.Duration) bool {
	return p.running < p.max && p.head < len(p.ready) &&
		now-p.ready[p.head].at > writerLag && now-p.last > writerLag
}

// eagerToStart returns how many writers to start now that clients were
// queued: one per chunk of waiting clients, up to eager running. p.mu must
// be held.
func (p *writerPool) eagerToStart() int {
	chunks := (len(p.ready) - p.head + writerChunk - 1) / writerChunk
	return max(0, min(p.eager, chunks)-p.running)
}
