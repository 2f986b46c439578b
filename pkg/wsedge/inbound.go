package wsedge

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/switchboard-rt/switchboard/internal/ratelimit"
	"github.com/switchboard-rt/switchboard/internal/wsframe"
)

// errFrameRate ends the reads of a browser that sent frames faster than
// its limit allows.
var errFrameRate = errors.New("rate limit exceeded")

// frameCounter is what the edge and the WebSocket library read a
// browser's stream through: it counts every frame as its first byte
// arrives, whatever its kind (data, continuation, ping, pong, close), and
// charges it to the connection's rate limit. The library reads the frames
// of one message, and answers pings, inside a single read, so counting
// messages would let a message that never ends, or a flood of pings or
// pongs, through for free. Once the limit is exceeded, every read fails
// with errFrameRate and the connection ends with 1008.
//
// One reader at a time reads it, as the connection's buffered reader is
// read.
type frameCounter struct {
	src io.Reader
	// pending holds bytes read past the upgrade request before the
	// connection was hijacked; they are read first.
	pending []byte

	limited bool
	bucket  ratelimit.Bucket
	frames  int   // counted before the limit was set
	err     error // sticky once set
	// over is set once the limit is exceeded; the reader asks after a
	// read the library made, which may be the library's close handshake,
	// on another goroutine.
	over atomic.Bool

	// Where the stream is: inside a header (hdr holds its first hlen
	// bytes) or skipping a payload.
	hdr  [wsframe.MaxHeader]byte
	hlen int
	skip uint64
}

// limit starts charging frames to a bucket of rate frames a second and
// burst at once, the frames counted so far included.
func (f *frameCounter) limit(rate float64, burst int, now time.Time) {
	f.limited = true
	f.bucket = ratelimit.NewBucket(rate, burst, now)
	for ; f.frames > 0; f.frames-- {
		if !f.bucket.Allow(now) {
			f.err = errFrameRate
			f.over.Store(true)
			return
		}
	}
}

// exceeded reports whether the browser went past its limit.
func (f *frameCounter) exceeded() bool { return f.over.Load() }

func (f *frameCounter) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	var n int
	var err error
	if len(f.pending) > 0 {
		n = copy(p, f.pending)
		f.pending = f.pending[n:]
	} else {
		n, err = f.src.Read(p)
	}
	if n > 0 && !f.count(p[:n], time.Now()) {
		// The connection is over: what was read goes nowhere.
		f.err = errFrameRate
		f.over.Store(true)
		return 0, f.err
	}
	return n, err
}

// count follows the frames through b, charging each new one; it reports
// false once one is over the limit.
func (f *frameCounter) count(b []byte, now time.Time) bool {
	for len(b) > 0 {
		if f.skip > 0 {
			k := uint64(len(b))
			if k > f.skip {
				k = f.skip
			}
			f.skip -= k
			b = b[k:]
			continue
		}
		if f.hlen == 0 {
			if !f.limited {
				f.frames++
			} else if !f.bucket.Allow(now) {
				return false
			}
		}
		f.hdr[f.hlen] = b[0]
		f.hlen++
		b = b[1:]
		if f.hlen < 2 {
			continue
		}
		size := 2
		switch f.hdr[1] & 0x7f {
		case 126:
			size += 2
		case 127:
			size += 8
		}
		if f.hdr[1]&wsframe.MaskBit != 0 {
			size += 4
		}
		if f.hlen < size {
			continue
		}
		switch n := f.hdr[1] & 0x7f; n {
		case 126:
			f.skip = uint64(f.hdr[2])<<8 | uint64(f.hdr[3])
		case 127:
			for _, c := range f.hdr[2:10] {
				f.skip = f.skip<<8 | uint64(c)
			}
		default:
			f.skip = uint64(n)
		}
		f.hlen = 0
	}
	return true
}

// buffered reports whether bytes read before the hijack wait to be read.
func (f *frameCounter) buffered() bool { return len(f.pending) > 0 }

// countedConn is the connection the WebSocket library gets: its reads go
// through the frameCounter.
type countedConn struct {
	net.Conn
	in *frameCounter
}

func (c *countedConn) Read(p []byte) (int, error) { return c.in.Read(p) }
