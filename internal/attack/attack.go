// Package attack holds hostile clients: each one loads a node the way an
// attacker who can reach its ports would, from one address and without a
// token, and tallies what the node answered. Bystander, Publisher and
// Sampler measure what the attack costs everyone else meanwhile. The load
// tool (swbench -attack) and the hostile-load tests (test/hostile) run
// them against a real node process.
package attack

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Target is the node under attack.
type Target struct {
	// HTTP is the host:port of its HTTP listener (/ws, /healthz, /metrics).
	HTTP string
	// GRPC is the host:port of its gRPC listener.
	GRPC string
	// From is the source address of every attack connection, such as
	// 127.0.0.1; empty lets the system choose. On loopback, a bystander
	// from 127.0.0.2 then counts as another address.
	From string
}

// dial opens a TCP connection to addr from t.From.
func (t Target) dial(ctx context.Context, addr string) (net.Conn, error) {
	return dialFrom(ctx, t.From, addr)
}

// dialFrom opens a TCP connection to addr from the address from, if set.
func dialFrom(ctx context.Context, from, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if from != "" {
		ip := net.ParseIP(from)
		if ip == nil {
			return nil, fmt.Errorf("invalid source address %q", from)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return d.DialContext(ctx, "tcp", addr)
}

// Attack is one kind of hostile load.
type Attack interface {
	// Run attacks t until ctx ends, holding what it opened until then,
	// and tallies the node's answers in tally. It returns an error only
	// when the attack could not be carried out at all.
	Run(ctx context.Context, t Target, tally *Tally) error
}

// Tally counts outcomes by name: an HTTP status, a gRPC code, a close
// code, "cut" for a connection closed without an answer, "open" for
// connections held. It is safe for concurrent use.
type Tally struct {
	mu sync.Mutex
	n  map[string]int64
}

// Add counts n outcomes named what.
func (t *Tally) Add(what string, n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == nil {
		t.n = make(map[string]int64)
	}
	t.n[what] += n
}

// Get returns the count of what.
func (t *Tally) Get(what string) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n[what]
}

// Counts returns a copy of every count.
func (t *Tally) Counts() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.n)
}

// String lists the counts, largest first.
func (t *Tally) String() string {
	m := t.Counts()
	keys := slices.Collect(maps.Keys(m))
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s: %d", k, m[k])
	}
	return b.String()
}

// hold keeps conns open until ctx ends, then closes them.
func hold(ctx context.Context, conns []net.Conn) {
	<-ctx.Done()
	for _, c := range conns {
		c.Close()
	}
}

// workers runs fn on n goroutines until each returns.
func workers(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}

// Modes lists the attacks by the names swbench -attack takes, each with
// its default size; the load tool sizes them from its flags.
var Modes = []string{
	"slow-readers", "idle-http", "grpc-streams", "grpc-metadata", "grpc-big-requests",
	"bad-token", "bad-origin", "continuation-flood", "ping-flood", "pong-flood",
	"metrics-scrape", "rapid-reset", "big-headers",
}

// Size sets the scale of an attack chosen by name; zero fields take the
// mode's default, which reproduces the figures of the README's limits
// section.
type Size struct {
	// Conns is the number of connections.
	Conns int
	// Streams is the number of streams per connection (grpc-streams,
	// grpc-metadata).
	Streams int
	// Workers is the number of requests in flight at once.
	Workers int
	// Bytes is the size of what each request carries: the Origin
	// (bad-origin), the headers (big-headers), or the request (grpc-big-requests).
	Bytes int
}

// New returns the attack named mode, sized by s.
func New(mode string, s Size) (Attack, error) {
	def := func(v, d int) int {
		if v > 0 {
			return v
		}
		return d
	}
	switch mode {
	case "slow-readers":
		return SlowReaders{Conns: def(s.Conns, 1000)}, nil
	case "idle-http":
		return IdleHTTP{Conns: def(s.Conns, 20000)}, nil
	case "grpc-streams":
		return Streams{Conns: def(s.Conns, 1), Streams: def(s.Streams, 100000)}, nil
	case "grpc-metadata":
		return Metadata{Streams: def(s.Streams, 100)}, nil
	case "grpc-big-requests":
		return BigRequests{Workers: def(s.Workers, 16), Bytes: def(s.Bytes, 4<<20)}, nil
	case "bad-token":
		return BadToken{Workers: def(s.Workers, 16)}, nil
	case "bad-origin":
		return BadOrigin{Workers: def(s.Workers, 4), Bytes: def(s.Bytes, 900<<10)}, nil
	case "continuation-flood":
		return FrameFlood{Conns: def(s.Conns, 4), Kind: Continuation}, nil
	case "ping-flood":
		return FrameFlood{Conns: def(s.Conns, 4), Kind: Ping}, nil
	case "pong-flood":
		return FrameFlood{Conns: def(s.Conns, 4), Kind: Pong}, nil
	case "metrics-scrape":
		return Scrape{Workers: def(s.Workers, 8), Gzip: true}, nil
	case "rapid-reset":
		return RapidReset{Conns: def(s.Conns, 1)}, nil
	case "big-headers":
		return BigHeaders{Conns: def(s.Conns, 500), Bytes: def(s.Bytes, 1<<20)}, nil
	}
	return nil, fmt.Errorf("unknown attack %q: want one of %s", mode, strings.Join(Modes, ", "))
}
