package wsedge

import (
	"bytes"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestPoller checks that the poller reports a watched socket's input once
// per arming, with the whole 64-bit id, and that closing it logs nothing.
func TestPoller(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	woken := make(chan uint64, 4)
	p, err := newPoller(func(id uint64) { woken <- id }, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("newPoller: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	rc, err := server.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}

	const id = 1<<40 | 7
	if err := p.watch(rc, id); err != nil {
		t.Fatalf("watch: %v", err)
	}
	expectWake := func(what string) {
		t.Helper()
		select {
		case got := <-woken:
			if got != id {
				t.Fatalf("%s: woken with id %#x; want %#x", what, got, uint64(id))
			}
		case <-time.After(waitTimeout):
			t.Fatalf("%s: not woken", what)
		}
	}
	expectQuiet := func(what string) {
		t.Helper()
		select {
		case got := <-woken:
			t.Fatalf("%s: woken with id %#x; want no event", what, got)
		case <-time.After(100 * time.Millisecond):
		}
	}
	expectQuiet("no input yet")
	client.Write([]byte("a"))
	expectWake("input")
	client.Write([]byte("b"))
	expectQuiet("input while not re-armed")
	// Re-arming a socket that still has input reports it at once.
	if err := p.rearm(rc, id); err != nil {
		t.Fatalf("rearm: %v", err)
	}
	expectWake("re-armed with unread input")

	p.close()
	if logs.Len() > 0 {
		t.Errorf("close logged: %s", logs.String())
	}
}
