package hub

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// discardTransport drops what it is given, counting the message frames.
type discardTransport struct {
	messages atomic.Int64
}

var messagePrefix = []byte(`{"type":"message"`)

func (d *discardTransport) Write(frames [][]byte) (bool, error) {
	var n int64
	for _, p := range frames {
		if bytes.HasPrefix(p, messagePrefix) {
			n++
		}
	}
	if n > 0 {
		d.messages.Add(n)
	}
	return false, nil
}

func (d *discardTransport) Flush() error { return nil }
func (d *discardTransport) Abort()       {}
func (d *discardTransport) Close(Reason) {}

// fanoutWindow is how many emits BenchmarkFanout lets run ahead of the
// slowest writer: the steady state of a busy node, whose queues hold a
// few frames each, rather than a backlog that grows with b.N.
const fanoutWindow = 64

// BenchmarkFanout emits one message per iteration to every client; the
// timer runs until every client's writer has handed over every message.
func BenchmarkFanout(b *testing.B) {
	for _, recipients := range []int{1, 10, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("recipients=%d", recipients), func(b *testing.B) {
			h, err := New(Config{
				Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
				QueueFrames:   2 * fanoutWindow,
				QueueBytes:    1 << 30,
				CountInterval: time.Hour,
			})
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			ts := make([]*discardTransport, recipients)
			for i := range ts {
				ts[i] = &discardTransport{}
				if _, err := h.Register(ts[i]); err != nil {
					b.Fatal(err)
				}
			}
			m := Message{Event: "ShowMessage", Data: []byte(`{"text":"hello, world"}`)}
			ctx := context.Background()
			emit := func() {
				if res, err := h.Emit(ctx, m); err != nil || res.Recipients != recipients {
					b.Fatalf("Emit: got %d, %v; want %d, nil", res.Recipients, err, recipients)
				}
			}
			// Warm up: writers started, queues grown to their working size.
			for range fanoutWindow {
				emit()
			}
			waitDelivered(ts, fanoutWindow)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				emit()
				if done := i + 1; done%fanoutWindow == 0 || done == b.N {
					waitDelivered(ts, int64(fanoutWindow+done))
				}
			}
			b.StopTimer()
			if got := h.Stats().SlowDisconnects.Load(); got != 0 {
				b.Fatalf("SlowDisconnects: got %d; want 0", got)
			}
			b.ReportMetric(float64(b.N)*float64(recipients)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// waitDelivered waits until every transport has received n messages.
func waitDelivered(ts []*discardTransport, n int64) {
	for _, t := range ts {
		for t.messages.Load() < n {
			runtime.Gosched()
		}
	}
}
