package wsedge

import (
	"net"
	"sync"
	"time"
)

// corkWriter sits between a connection's buffered writer and the socket.
// The WebSocket library flushes every frame it writes; while the writer is
// corked, those flushes collect in a pooled buffer, and uncork sends them
// in one write, so a batch of queued frames costs one syscall instead of
// one each. Every write, corked or not, happens in call order under mu,
// so frames written meanwhile by other goroutines (pongs, the close
// frame) stay whole and in order.
type corkWriter struct {
	conn net.Conn

	mu  sync.Mutex
	buf *[]byte // non-nil while corked
}

var corkBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledCork keeps a rare huge batch from pinning its buffer in the pool.
const maxPooledCork = 64 << 10

func (w *corkWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf != nil {
		*w.buf = append(*w.buf, p...)
		return len(p), nil
	}
	return w.conn.Write(p)
}

// cork starts collecting writes.
func (w *corkWriter) cork() {
	w.mu.Lock()
	if w.buf == nil {
		w.buf = corkBuffers.Get().(*[]byte)
	}
	w.mu.Unlock()
}

// uncork writes what was collected in one write and stops collecting.
func (w *corkWriter) uncork() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.buf
	if b == nil {
		return nil
	}
	w.buf = nil
	_, err := w.conn.Write(*b)
	if cap(*b) <= maxPooledCork {
		*b = (*b)[:0]
		corkBuffers.Put(b)
	}
	return err
}

// expire makes a write blocked on the socket fail at once.
func (w *corkWriter) expire() {
	w.conn.SetWriteDeadline(time.Unix(1, 0))
}
