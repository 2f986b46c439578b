// Package proxytest is a TCP proxy for tests that need a network that
// fails: it can cut every connection at once, refuse new ones, or
// blackhole traffic while keeping the sockets open, as a vanished network
// does.
package proxytest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy forwards connections from its address to a target.
type Proxy struct {
	ln         net.Listener
	target     string
	blackholed atomic.Bool
	refusing   atomic.Bool
	wg         sync.WaitGroup

	mu     sync.Mutex
	conns  []net.Conn
	closed bool
}

// Start returns a proxy to target on a free loopback port, closed when the
// test ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen: got %v; want nil", err)
	}
	p := &Proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Addr returns the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Blackhole drops everything in both directions from now on, keeping every
// socket open: neither side hears anything, not even an end.
func (p *Proxy) Blackhole() { p.blackholed.Store(true) }

// Cut closes every connection in progress, and, while refuse is true,
// every new one as soon as it is accepted.
func (p *Proxy) Cut(refuse bool) {
	p.refusing.Store(refuse)
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Accept lets new connections through again after Cut(true).
func (p *Proxy) Accept() { p.refusing.Store(false) }

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.refusing.Load() {
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(s, c)
		go p.pipe(c, s)
	}
}

// pipe copies src to dst until src ends. While blackholed it reads and
// drops, and it does not pass an end on: the other side hears nothing.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if p.blackholed.Load() {
			if err != nil {
				return
			}
			continue
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			return
		}
	}
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
