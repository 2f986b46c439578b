package hub

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// discardTransport drops what it is given, counting the message frames, and
// tells a WaitGroup once it has seen want of them.
type discardTransport struct {
	want     int64
	messages atomic.Int64
	wg       *sync.WaitGroup
}

var messagePrefix = []byte(`{"type":"message"`)

func (d *discardTransport) Write(frames [][]byte) error {
	var n int64
	for _, p := range frames {
		if bytes.HasPrefix(p, messagePrefix) {
			n++
		}
	}
	if n > 0 && d.messages.Add(n) == d.want {
		d.wg.Done()
	}
	return nil
}

func (d *discardTransport) Abort()       {}
func (d *discardTransport) Close(Reason) {}

// BenchmarkFanout emits one message per iteration to every client; the
// timer runs until every client's writer has handed over every message.
func BenchmarkFanout(b *testing.B) {
	for _, recipients := range []int{1, 10, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("recipients=%d", recipients), func(b *testing.B) {
			h, err := New(Config{
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
				// Room for every message: the benchmark measures fan-out,
				// not slow-client drops.
				QueueFrames:   b.N + 1,
				QueueBytes:    1 << 30,
				CountInterval: time.Hour,
			})
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			var wg sync.WaitGroup
			wg.Add(recipients)
			for range recipients {
				if _, err := h.Register(&discardTransport{want: int64(b.N), wg: &wg}); err != nil {
					b.Fatal(err)
				}
			}
			m := Message{Event: "ShowMessage", Data: []byte(`{"text":"hello, world"}`)}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, n, err := h.Emit(ctx, m); err != nil || n != recipients {
					b.Fatalf("Emit: got %d, %v; want %d, nil", n, err, recipients)
				}
			}
			wg.Wait()
			b.StopTimer()
			if got := h.Stats().SlowDisconnects.Load(); got != 0 {
				b.Fatalf("SlowDisconnects: got %d; want 0", got)
			}
			b.ReportMetric(float64(b.N)*float64(recipients)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}
