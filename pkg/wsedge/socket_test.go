package wsedge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-rt/switchboard/internal/wsframe"
	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// recordingConn keeps every write that reaches the socket.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	buf    bytes.Buffer
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return c.buf.Write(p)
}

// TestWriteTextBatches writes a batch over a connection without a file
// descriptor (as with TLS): writeText keeps it all, flush sends it in one
// write, and nothing follows the library's close frame.
func TestWriteTextBatches(t *testing.T) {
	t.Parallel()
	conn := &recordingConn{}
	s := &socket{conn: conn}
	if kept, err := s.writeText([][]byte{[]byte("ab"), []byte("c")}); !kept || err != nil {
		t.Fatalf("writeText: got %v, %v; want true, nil", kept, err)
	}
	if conn.writes != 0 {
		t.Errorf("socket writes before flush: got %d; want 0", conn.writes)
	}
	if err := s.flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if got, want := conn.buf.Bytes(), []byte{0x81, 2, 'a', 'b', 0x81, 1, 'c'}; !bytes.Equal(got, want) {
		t.Errorf("bytes: got % x; want % x", got, want)
	}
	if conn.writes != 1 {
		t.Errorf("socket writes: got %d; want 1 for the whole batch", conn.writes)
	}

	// Once the library has sent its close frame, no data frame follows.
	s.Write([]byte{0x88, 2, 0x03, 0xe8})
	if kept, err := s.writeText([][]byte{[]byte("late")}); kept || err != nil {
		t.Errorf("writeText after a close frame: got %v, %v; want false, nil", kept, err)
	}
	if strings.Contains(conn.buf.String(), "late") {
		t.Error("a data frame followed the close frame")
	}
}

// tcpSocket returns a socket over a real TCP connection with a small send
// buffer, and the peer's end, which reads nothing until told to.
func tcpSocket(t *testing.T) (*socket, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	conn, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { conn.Close() })
	tc := conn.(*net.TCPConn)
	if err := tc.SetWriteBuffer(4096); err != nil {
		t.Fatal(err)
	}
	s := &socket{conn: tc}
	if s.raw, err = tc.SyscallConn(); err != nil {
		t.Fatal(err)
	}
	s.sendFn = s.trySend
	return s, peer
}

// fillUntilKept writes batch again and again to a socket whose peer does
// not read, until writeText keeps some of it, as it must once the socket's
// buffers are full.
func fillUntilKept(t *testing.T, s *socket, batch [][]byte) {
	t.Helper()
	for range 100 {
		kept, err := s.writeText(batch)
		if err != nil {
			t.Fatalf("writeText: %v", err)
		}
		if kept {
			return
		}
	}
	t.Fatal("the socket took 100 batches without the peer reading; want writeText to keep some")
}

// TestWriteTextKeepsWhatTheSocketRefuses fills a real socket whose peer
// does not read: writeText returns at once, keeping the rest, and a control
// frame written meanwhile goes out after the kept bytes, all intact.
func TestWriteTextKeepsWhatTheSocketRefuses(t *testing.T) {
	t.Parallel()
	s, peer := tcpSocket(t)
	payload := bytes.Repeat([]byte("x"), 60000)
	batch := [][]byte{payload, payload, payload, payload, payload, payload, payload, payload}
	fillUntilKept(t, s, batch)
	// Read everything while the ping waits for the kept bytes.
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	if err := s.writePing(); err != nil {
		t.Fatalf("writePing: %v", err)
	}
	if err := s.flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	s.conn.Close()
	b := <-got
	if !bytes.HasSuffix(b, pingFrame) {
		t.Fatalf("the stream does not end with the ping: last bytes % x", b[max(0, len(b)-8):])
	}
	b = b[:len(b)-len(pingFrame)]
	frame := wsframe.AppendHeader(nil, wsframe.OpText, len(payload), false)
	frame = append(frame, payload...)
	if len(b)%len(frame) != 0 || !bytes.Equal(b, bytes.Repeat(frame, len(b)/len(frame))) {
		t.Fatalf("the peer got %d bytes that are not whole frames of %d bytes in order", len(b), len(frame))
	}
}

// TestWriteTextDoesNotWaitForAnotherWrite: while another write holds the
// socket (a control frame waiting on a slow peer), writeText keeps its
// whole batch at once rather than wait, and flush sends it after.
func TestWriteTextDoesNotWaitForAnotherWrite(t *testing.T) {
	t.Parallel()
	s, peer := tcpSocket(t)
	s.mu.Lock()
	kept, err := s.writeText([][]byte{[]byte("ab")})
	s.mu.Unlock()
	if !kept || err != nil {
		t.Fatalf("writeText while the socket is held: got %v, %v; want true, nil", kept, err)
	}
	if err := s.flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	got := make([]byte, 4)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, []byte{0x81, 2, 'a', 'b'}) {
		t.Errorf("the peer got % x, %v; want 81 02 61 62", got, err)
	}
}

// TestExpireEndsStalledFlush: a flush blocked on a peer that never reads
// fails once the socket expires, as the hub's write timeout does.
func TestExpireEndsStalledFlush(t *testing.T) {
	t.Parallel()
	s, _ := tcpSocket(t)
	fillUntilKept(t, s, [][]byte{bytes.Repeat([]byte("x"), 1<<20)})
	done := make(chan error, 1)
	go func() { done <- s.flush() }()
	select {
	case err := <-done:
		t.Fatalf("flush returned %v while the peer reads nothing; want it to block", err)
	case <-time.After(50 * time.Millisecond):
	}
	s.expire()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("flush: got %v; want a deadline error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("flush still blocked after expire")
	}
}

// TestTransportFrameSizes sends messages of every header size through a
// real edge to a real client, which must read each intact.
func TestTransportFrameSizes(t *testing.T) {
	t.Parallel()
	e := startEdge(t, Config{})
	ws := e.dial(t, nil)
	ws.SetReadLimit(1 << 20)
	ctx := context.Background()
	for range 2 { // the welcome and the count
		if _, _, err := ws.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sizes := []int{0, 100, 125, 126, 1000, 65535, 65536, 200000}
	for _, n := range sizes {
		data, _ := json.Marshal(strings.Repeat("x", n))
		if _, err := e.hub.Emit(ctx, hub.Message{Event: "E" + strconv.Itoa(n), Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range sizes {
		typ, p, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("reading the %d-byte message: %v", n, err)
		}
		var f struct {
			Event string
			Data  string
		}
		if err := json.Unmarshal(p, &f); typ != websocket.MessageText || err != nil || f.Event != "E"+strconv.Itoa(n) || len(f.Data) != n {
			t.Errorf("message of %d bytes: got type %v, event %q, %d bytes of data, %v", n, typ, f.Event, len(f.Data), err)
		}
	}
}
