package wsedge

import (
	"bytes"
	"net"
	"strconv"
	"sync"
	"testing"
)

// countingConn records every write that reaches the socket.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	buf    bytes.Buffer
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return c.buf.Write(p)
}

func TestCorkWriterBatches(t *testing.T) {
	t.Parallel()
	conn := &countingConn{}
	w := &corkWriter{conn: conn}

	w.Write([]byte("a"))
	w.cork()
	for i := range 10 {
		w.Write([]byte(strconv.Itoa(i)))
	}
	if conn.writes != 1 {
		t.Fatalf("writes while corked reached the socket: got %d writes; want 1", conn.writes)
	}
	if err := w.uncork(); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("z"))
	if got, want := conn.buf.String(), "a0123456789z"; got != want {
		t.Errorf("bytes: got %q; want %q", got, want)
	}
	if conn.writes != 3 {
		t.Errorf("socket writes: got %d; want 3 (before, the batch, after)", conn.writes)
	}
	if err := w.uncork(); err != nil {
		t.Errorf("a second uncork: got %v; want nil", err)
	}
}

// TestCorkWriterKeepsOrder writes from two goroutines, as the hub's writer
// and the library's pong do, corking and uncorking meanwhile: every write
// must reach the socket whole and in the order the writes were made.
func TestCorkWriterKeepsOrder(t *testing.T) {
	t.Parallel()
	conn := &countingConn{}
	w := &corkWriter{conn: conn}
	var mu sync.Mutex // serialises writes, as the library's frame lock does
	var order []string
	write := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, s)
		w.Write([]byte(s))
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 200 {
			w.cork()
			write("[m" + strconv.Itoa(i) + "]")
			write("[n" + strconv.Itoa(i) + "]")
			w.uncork()
		}
	})
	wg.Go(func() {
		for i := range 200 {
			write("[p" + strconv.Itoa(i) + "]")
		}
	})
	wg.Wait()
	w.uncork()
	var want bytes.Buffer
	for _, s := range order {
		want.WriteString(s)
	}
	if got := conn.buf.String(); got != want.String() {
		t.Errorf("socket bytes differ from the order of writes:\ngot  %.120s…\nwant %.120s…", got, want.String())
	}
}
