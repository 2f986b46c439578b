package wsedge

import (
	"context"
	"net/url"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/attack"
)

// TestFrameFloods: every frame counts against the frame rate, not just
// messages: a message that never ends (empty continuation frames), pings
// and pongs each close the connection once past the burst.
func TestFrameFloods(t *testing.T) {
	t.Parallel()
	for _, kind := range []attack.FrameKind{attack.Continuation, attack.Ping, attack.Pong} {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			e := startEdge(t, Config{FrameRate: 20, FrameBurst: 80})
			u, _ := url.Parse(e.srv.URL)
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			var tally attack.Tally
			attack.FrameFlood{Conns: 1, Kind: kind}.Run(ctx, attack.Target{HTTP: u.Host}, &tally)
			// The close frame may be lost to the reset that ends a flood
			// the node stopped reading.
			if tally.Get("1008 rate limit exceeded")+tally.Get("cut") != 1 {
				t.Errorf("the flood ended with %s; want 1008 \"rate limit exceeded\" (or a cut)", tally.String())
			}
			if got := e.h.Rejections()[LimitFrameRate]; got != 1 {
				t.Errorf("Rejections()[%s]: got %d; want 1", LimitFrameRate, got)
			}
			e.waitCount(t, 0)
		})
	}
}

// TestFrameCounter follows frame boundaries across reads of any size.
func TestFrameCounter(t *testing.T) {
	t.Parallel()
	var stream []byte
	masked := func(op byte, n int) {
		h := []byte{op, 0x80 | byte(n)}
		switch {
		case n > 0xffff:
			h = []byte{op, 0x80 | 127, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
		case n > 125:
			h = []byte{op, 0x80 | 126, byte(n >> 8), byte(n)}
		}
		stream = append(append(stream, h...), 1, 2, 3, 4)
		stream = append(stream, make([]byte, n)...)
	}
	sizes := []int{0, 5, 125, 126, 1000, 70000, 0, 3}
	for _, n := range sizes {
		masked(0x81, n)
	}
	for _, chunk := range []int{1, 2, 7, 100, len(stream)} {
		f := &frameCounter{}
		now := time.Now()
		for b := stream; len(b) > 0; {
			k := min(chunk, len(b))
			if !f.count(b[:k], now) {
				t.Fatalf("chunk %d: over a limit it does not have", chunk)
			}
			b = b[k:]
		}
		if f.frames != len(sizes) || f.hlen != 0 || f.skip != 0 {
			t.Errorf("reads of %d bytes: got %d frames (%d header bytes, %d payload bytes pending); want %d, 0, 0", chunk, f.frames, f.hlen, f.skip, len(sizes))
		}
	}
	f := &frameCounter{}
	f.count(stream, time.Now())
	if f.limit(1, len(sizes)-1, time.Now()); !f.exceeded() {
		t.Errorf("%d frames counted before a burst of %d: got within the limit; want past it", len(sizes), len(sizes)-1)
	}
}

// TestSendBuffer: each connection's kernel send buffer is bounded, by
// default and as configured, so that a browser that stops reading cannot
// make the kernel hold megabytes for it.
func TestSendBuffer(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("SO_SNDBUF doubling is Linux's")
	}
	for _, tc := range []struct {
		name string
		set  int
		want int // what getsockopt reports: Linux doubles the value set
	}{
		{"default", 0, 2 * 64 << 10},
		{"configured", 16 << 10, 2 * 16 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := startEdge(t, Config{SendBuffer: tc.set})
			e.dial(t, nil)
			e.waitCount(t, 1)
			e.h.mu.Lock()
			var c *conn
			for _, oc := range e.h.open {
				c = oc
			}
			e.h.mu.Unlock()
			var got int
			var err error
			c.sock.tcp.Control(func(fd uintptr) {
				got, err = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
			})
			if err != nil || got != tc.want {
				t.Errorf("SO_SNDBUF: got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// The frames of a batch a slow browser did not take are not copied for
// it: sockets whose peers stopped reading, each keeping a batch of the
// same frames, hold little beyond the frames themselves, be they one
// large frame or many small ones.
func TestWriteTextKeepsReferences(t *testing.T) {
	const sockets = 64
	small := make([][]byte, 2000)
	for i := range small {
		small[i] = []byte(strings.Repeat("s", 300))
	}
	for _, tc := range []struct {
		name  string
		batch [][]byte
		most  int64 // heap growth allowed for all sockets
	}{
		{"one 1 MiB frame", [][]byte{[]byte(strings.Repeat("x", 1<<20))}, 8 << 20},
		{"2,000 frames of 300 B", small, 20 << 20},
	} {
		socks := make([]*socket, sockets)
		for i := range socks {
			socks[i], _ = tcpSocket(t)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for _, s := range socks {
			fillUntilKept(t, s, tc.batch)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		size := 0
		for _, p := range tc.batch {
			size += len(p)
		}
		t.Logf("%s: heap grew by %d KiB for %d sockets keeping a batch of %d KiB", tc.name, grown>>10, sockets, size>>10)
		if grown > tc.most {
			t.Errorf("%s: heap grew by %d MiB; want at most %d MiB, well under a copy per socket (%d MiB)", tc.name, grown>>20, tc.most>>20, sockets*size>>20)
		}
		runtime.KeepAlive(socks)
	}
}
