package hub

import (
	"testing"
	"time"
)

// TestWriterPoolLastCore checks when the pool starts its last writer: only
// once the queue has stopped growing for writerLag and its oldest client
// has waited as long, and never beyond max.
func TestWriterPoolLastCore(t *testing.T) {
	t.Parallel()
	const now = time.Hour
	old, recent := now-2*writerLag, now-writerLag/2
	tests := []struct {
		name    string
		running int
		queued  []time.Duration // when each waiting client was queued
		last    time.Duration   // the last push
		want    bool
	}{
		{name: "left to drain", running: 1, queued: []time.Duration{old, old}, last: old, want: true},
		{name: "emits keep arriving", running: 1, queued: []time.Duration{old, recent}, last: recent},
		{name: "oldest client waited briefly", running: 1, queued: []time.Duration{recent}, last: recent},
		{name: "queue empty", running: 1, last: old},
		{name: "every core writing", running: 2, queued: []time.Duration{old}, last: old},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writerPool{eager: 1, max: 2, running: tt.running, last: tt.last}
			for _, at := range tt.queued {
				p.ready = append(p.ready, readyClient{at: at})
			}
			if got := p.wantAnother(now); got != tt.want {
				t.Errorf("wantAnother: got %v; want %v", got, tt.want)
			}
		})
	}
}

// TestWriterPoolEagerWriters checks how many writers a push starts: one
// per chunk of waiting clients, up to eager running at once.
func TestWriterPoolEagerWriters(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		running, queued int
		want            int
	}{
		{name: "one client", queued: 1, want: 1},
		{name: "a chunk", queued: writerChunk, want: 1},
		{name: "over two chunks", queued: 2*writerChunk + 1, want: 3},
		{name: "beyond eager", queued: 10 * writerChunk, want: 3},
		{name: "one already running", running: 1, queued: 2 * writerChunk, want: 1},
		{name: "eager running", running: 3, queued: 10 * writerChunk},
		{name: "the last core too", running: 4, queued: 10 * writerChunk},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writerPool{eager: 3, max: 4, running: tt.running, ready: make([]readyClient, tt.queued)}
			if got := p.eagerToStart(); got != tt.want {
				t.Errorf("eagerToStart: got %d; want %d", got, tt.want)
			}
		})
	}
}
