package wsedge

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/wsframe"
	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// rawPeer is a browser that speaks WebSocket by hand: it answers nothing
// on its own, neither pings nor close frames, and may keep sending after
// the server said goodbye, as a hostile or broken client would.
type rawPeer struct {
	conn net.Conn
	br   *bufio.Reader
	wmu  sync.Mutex
}

func (e *edge) dialRaw(t *testing.T) *rawPeer {
	t.Helper()
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(waitTimeout))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", e.srv.Listener.Addr())
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: got %s; want 101", resp.Status)
	}
	return &rawPeer{conn: conn, br: br}
}

// header writes a masked frame header for an n-byte payload, with a zero
// masking key, so the payload goes as it is.
func (p *rawPeer) header(op byte, n int) error {
	b := wsframe.AppendHeader(nil, op, n, true)
	_, err := p.conn.Write(append(b, 0, 0, 0, 0))
	return err
}

// send writes one whole masked frame.
func (p *rawPeer) send(op byte, payload string) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.header(op, len(payload)); err != nil {
		return err
	}
	_, err := io.WriteString(p.conn, payload)
	return err
}

// readClose reads the server's frames until its close frame, and returns
// the close code and reason.
func (p *rawPeer) readClose() (int, string, error) {
	for {
		var h [2]byte
		if _, err := io.ReadFull(p.br, h[:]); err != nil {
			return 0, "", err
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(p.br, b[:]); err != nil {
				return 0, "", err
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(p.br, b[:]); err != nil {
				return 0, "", err
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(p.br, payload); err != nil {
			return 0, "", err
		}
		if h[0]&0x0f == wsframe.OpClose {
			if len(payload) < 2 {
				return 0, "", errors.New("close frame without a code")
			}
			return int(binary.BigEndian.Uint16(payload)), string(payload[2:]), nil
		}
	}
}

// TestClosingConnectionLeavesAtOnce checks that a connection leaves the
// count, its channels and every fan-out by the time the server's close
// frame reaches the browser, however the browser behaves next: this one
// never answers the close (the server would wait up to 5 s for it), and
// the one over the size limit keeps sending.
func TestClosingConnectionLeavesAtOnce(t *testing.T) {
	t.Parallel()
	subscribe := `{"type":"subscribe","channel":"c"}`
	tests := []struct {
		name       string
		cfg        Config
		misbehave  func(p *rawPeer) error
		code       int
		reason     string
		keepAlive  bool // no close frame: the connection is cut
		byTheHub   func(e *edge) error
		keepsGoing bool // the peer streams a huge frame meanwhile
	}{
		{name: "frame too big", keepsGoing: true, code: 1009, reason: "frame larger than 4096 bytes"},
		{name: "bad JSON", misbehave: func(p *rawPeer) error { return p.send(wsframe.OpText, `{"type":`) }, code: 1008},
		{name: "unknown type", misbehave: func(p *rawPeer) error { return p.send(wsframe.OpText, `{"type":"shout"}`) }, code: 1008},
		{name: "binary frame", misbehave: func(p *rawPeer) error { return p.send(wsframe.OpBinary, subscribe) }, code: 1008, reason: "binary frames are not supported"},
		{name: "invalid channel", misbehave: func(p *rawPeer) error {
			return p.send(wsframe.OpText, `{"type":"subscribe","channel":"a b"}`)
		}, code: 1008},
		{name: "too many subscriptions", misbehave: func(p *rawPeer) error {
			for i := range 65 {
				if err := p.send(wsframe.OpText, fmt.Sprintf(`{"type":"subscribe","channel":"s%d"}`, i)); err != nil {
					return err
				}
			}
			return nil
		}, code: 1008, reason: "too many subscriptions"},
		{name: "rate limit", cfg: Config{FrameRate: 1, FrameBurst: 2}, misbehave: func(p *rawPeer) error {
			// The subscribe took one of the burst's two frames: the
			// second of these trips the limit, and nothing follows it
			// (a write after the node closed could reset the connection
			// and wipe the close frame).
			for range 2 {
				if err := p.send(wsframe.OpText, `{"type":"unsubscribe","channel":"x"}`); err != nil {
					return err
				}
			}
			return nil
		}, code: 1008, reason: "rate limit exceeded"},
		{name: "shutdown", byTheHub: func(e *edge) error {
			go e.hub.Disconnect(context.Background(), hub.ReasonShutdown, 0)
			return nil
		}, code: 1001, reason: hub.ReasonShutdown.String()},
		{name: "hand back", byTheHub: func(e *edge) error {
			go e.hub.HandBack(context.Background(), 0)
			return nil
		}, code: 1012, reason: hub.ReasonHandBack.String()},
		{name: "keep-alive", cfg: Config{KeepAlive: 400 * time.Millisecond}, keepAlive: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := startEdge(t, tc.cfg)
			p := e.dialRaw(t)
			if err := p.send(wsframe.OpText, subscribe); err != nil {
				t.Fatalf("subscribe: %v", err)
			}
			eventually(t, func() (bool, string) {
				return e.hub.Count("c") == 1, "not subscribed"
			})
			switch {
			case tc.keepsGoing:
				// A 10 MiB frame, streamed until the server cuts the
				// connection.
				go func() {
					p.wmu.Lock()
					defer p.wmu.Unlock()
					if p.header(wsframe.OpText, 10<<20) != nil {
						return
					}
					chunk := make([]byte, 16<<10)
					for range 10 << 20 / len(chunk) {
						if _, err := p.conn.Write(chunk); err != nil {
							return
						}
					}
				}()
			case tc.byTheHub != nil:
				if err := tc.byTheHub(e); err != nil {
					t.Fatal(err)
				}
			case tc.misbehave != nil:
				if err := tc.misbehave(p); err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			if tc.keepAlive {
				// The peer never answers pings: it is cut without a
				// close frame once the keep-alive runs out.
				start := time.Now()
				eventually(t, func() (bool, string) {
					return e.hub.Count("") == 0, "the silent peer still counts"
				})
				if _, _, err := p.readClose(); err == nil {
					t.Errorf("silent peer: got a close frame; want the connection cut")
				}
				t.Logf("left the count %v after its last frame (KeepAlive %v)", time.Since(start).Round(time.Millisecond), tc.cfg.KeepAlive)
			} else {
				code, reason, err := p.readClose()
				if err != nil {
					t.Fatalf("reading the close frame: %v", err)
				}
				if code != tc.code || (tc.reason != "" && reason != tc.reason) || reason == "" {
					t.Errorf("close: got %d %q; want %d %q", code, reason, tc.code, tc.reason)
				}
			}
			// The close frame has arrived, and the peer has not answered
			// it: the connection must count no more, anywhere.
			if got := e.hub.Count(""); got != 0 {
				t.Errorf("Count: got %d; want 0", got)
			}
			if got := e.hub.Count("c"); got != 0 {
				t.Errorf("Count(c): got %d; want 0", got)
			}
			ctx := context.Background()
			if res, err := e.hub.EmitOnce(ctx, "", hub.Message{Event: "e", Channel: "c", Data: []byte(`1`)}); err != nil || res.Recipients != 0 {
				t.Errorf("Emit to c: got %d recipients, %v; want 0, nil", res.Recipients, err)
			}
			if res, err := e.hub.EmitOnce(ctx, "", hub.Message{Event: "e", Data: []byte(`1`)}); err != nil || res.Recipients != 0 {
				t.Errorf("Emit to all: got %d recipients, %v; want 0, nil", res.Recipients, err)
			}
		})
	}
}

// TestReadLimitReason checks that the 1009 close names the limit itself.
func TestReadLimitReason(t *testing.T) {
	t.Parallel()
	e := startEdge(t, Config{ReadLimit: 100})
	p := e.dialRaw(t)
	if err := p.send(wsframe.OpText, strings.Repeat(" ", 101)); err != nil {
		t.Fatalf("send: %v", err)
	}
	code, reason, err := p.readClose()
	if err != nil || code != 1009 || reason != "frame larger than 100 bytes" {
		t.Errorf("close: got %d %q, %v; want 1009 \"frame larger than 100 bytes\"", code, reason, err)
	}
}

// TestSlowConnectionLeavesAtOnce checks that a browser that stops reading
// leaves the count and its channels within the emit that overflows its
// queue.
func TestSlowConnectionLeavesAtOnce(t *testing.T) {
	t.Parallel()
	e := startEdge(t, Config{})
	p := e.dialRaw(t) // never reads
	if err := p.send(wsframe.OpText, `{"type":"subscribe","channel":"c"}`); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	eventually(t, func() (bool, string) {
		return e.hub.Count("c") == 1, "not subscribed"
	})
	data := []byte(`"` + strings.Repeat("x", 60<<10) + `"`)
	for i := 0; ; i++ {
		res, err := e.hub.EmitOnce(context.Background(), "", hub.Message{Event: "e", Channel: "c", Data: data})
		if err != nil {
			t.Fatalf("Emit: %v", err)
		}
		if res.Recipients == 0 {
			t.Logf("dropped as slow at emit %d", i)
			break
		}
		if i == 10_000 {
			t.Fatalf("still a recipient after %d emits of %d bytes", i, len(data))
		}
	}
	if got := e.hub.Count(""); got != 0 {
		t.Errorf("Count: got %d; want 0", got)
	}
	if got := e.hub.Count("c"); got != 0 {
		t.Errorf("Count(c): got %d; want 0", got)
	}
}
