package wsedge

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"

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

func TestWriteTextBatches(t *testing.T) {
	t.Parallel()
	conn := &recordingConn{}
	s := &socket{conn: conn}
	if sent, err := s.writeText([][]byte{[]byte("ab"), []byte("c")}); !sent || err != nil {
		t.Fatalf("writeText: got %v, %v; want true, nil", sent, err)
	}
	if got, want := conn.buf.Bytes(), []byte{0x81, 2, 'a', 'b', 0x81, 1, 'c'}; !bytes.Equal(got, want) {
		t.Errorf("bytes: got % x; want % x", got, want)
	}
	if conn.writes != 1 {
		t.Errorf("socket writes: got %d; want 1 for the whole batch", conn.writes)
	}

	// Once the library has sent its close frame, no data frame follows.
	s.Write([]byte{0x88, 2, 0x03, 0xe8})
	if sent, err := s.writeText([][]byte{[]byte("late")}); sent || err != nil {
		t.Errorf("writeText after a close frame: got %v, %v; want false, nil", sent, err)
	}
	if strings.Contains(conn.buf.String(), "late") {
		t.Error("a data frame followed the close frame")
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
	if _, _, err := ws.Read(ctx); err != nil { // the count frame
		t.Fatal(err)
	}
	sizes := []int{0, 100, 125, 126, 1000, 65535, 65536, 200000}
	for _, n := range sizes {
		data, _ := json.Marshal(strings.Repeat("x", n))
		if _, _, err := e.hub.Emit(ctx, hub.Message{Event: "E" + strconv.Itoa(n), Data: data}); err != nil {
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
