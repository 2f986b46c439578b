package hub

import (
	"context"
	"testing"
	"time"
)

// TestDetach checks that a detached client counts no more and receives
// nothing at once, while the write in progress goes on until Close, and
// that the hub never closes its transport.
func TestDetach(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{WriteTimeout: time.Hour})
	ft := newFake()
	ft.block = true
	c, err := h.Register(ft)
	if err != nil {
		t.Fatalf("Register: got %v; want nil", err)
	}
	if err := c.Subscribe("c"); err != nil {
		t.Fatalf("Subscribe: got %v; want nil", err)
	}
	<-ft.stalled // the count frame's write waits on the peer
	other, otherFT := register(t, h)
	defer other.Close()

	c.Detach()
	if got := h.Count(""); got != 1 {
		t.Errorf("Count: got %d; want 1", got)
	}
	if got := h.Count("c"); got != 0 {
		t.Errorf("Count(c): got %d; want 0", got)
	}
	if got := h.Stats().Subscriptions.Load(); got != 0 {
		t.Errorf("Stats().Subscriptions: got %d; want 0", got)
	}
	ctx := context.Background()
	if res, err := h.EmitOnce(ctx, "", Message{Event: "e", Channel: "c", Data: []byte(`1`)}); err != nil || res.Recipients != 0 {
		t.Errorf("Emit to c: got %d recipients, %v; want 0, nil", res.Recipients, err)
	}
	if res, err := h.EmitOnce(ctx, "", Message{Event: "e", Data: []byte(`1`)}); err != nil || res.Recipients != 1 {
		t.Errorf("Emit to all: got %d recipients, %v; want 1, nil", res.Recipients, err)
	}
	if err := c.Subscribe("d"); err == nil {
		t.Errorf("Subscribe after Detach: got nil; want an error")
	}
	waitFor(t, "the other client's count of 1", func() bool { return otherFT.lastCount() == 1 })
	if ft.isAborted() {
		t.Errorf("Detach aborted the write in progress; want it left to finish")
	}

	c.Close()
	select {
	case <-c.done:
	case <-time.After(waitTimeout):
		t.Fatal("timed out waiting for the writer to end after Close")
	}
	if !ft.isAborted() {
		t.Errorf("Close did not abort the stalled write")
	}
	if got := ft.closeReasons(); len(got) != 0 {
		t.Errorf("Transport.Close calls: got %v; want none", got)
	}
	if got := h.Count(""); got != 1 {
		t.Errorf("Count after Close: got %d; want 1", got)
	}
	ft.check(t)
}

// TestDetachKeepsTheHubsReason checks that a client the hub is closing
// keeps its reason when its transport detaches it meanwhile.
func TestDetachKeepsTheHubsReason(t *testing.T) {
	t.Parallel()
	h := newHub(t, Config{})
	closing := make(chan struct{})
	ft := newFake()
	ft.onClose = func(Reason) { close(closing) }
	c, err := h.Register(ft)
	if err != nil {
		t.Fatalf("Register: got %v; want nil", err)
	}
	c.kick(ReasonHandBack)
	c.Detach()
	<-closing
	c.Close()
	<-c.done
	if got := ft.closeReasons(); len(got) != 1 || got[0] != ReasonHandBack {
		t.Errorf("Transport.Close calls: got %v; want [%v]", got, ReasonHandBack)
	}
}
