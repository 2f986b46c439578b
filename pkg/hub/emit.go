package hub

import (
	"context"
	"strconv"

	"github.com/switchboard-rt/switchboard/pkg/frame"
)

// Emit assigns m an ID, queues it to every recipient on this node and hands
// it to the broker for the other nodes. It returns the ID and the number of
// local connections it was queued to. It never blocks on a client.
func (h *Hub) Emit(ctx context.Context, m Message) (id string, recipients int, err error) {
	if err := h.refuse(); err != nil {
		return "", 0, err
	}
	m.ID = h.idPrefix + strconv.FormatUint(h.nextID.Add(1), 36)
	recipients = h.deliver(m)
	h.stats.Emitted.Add(1)
	if err := h.broker.Publish(ctx, m); err != nil {
		return m.ID, recipients, err
	}
	return m.ID, recipients, nil
}

// HandleMessage delivers a message published by another node.
func (h *Hub) HandleMessage(m Message) {
	if h.draining.Load() {
		return
	}
	h.deliver(m)
}

// deliver encodes m once and queues the same bytes to every local
// recipient.
func (h *Hub) deliver(m Message) int {
	f := fanout{pool: &h.pool, frame: frame.AppendMessage(nil, m.ID, m.Event, m.Channel, m.Data)}
	h.emitMu.Lock()
	if m.Channel == "" {
		for i := range h.clients {
			s := &h.clients[i]
			s.mu.RLock()
			f.queue(s.clients)
			s.mu.RUnlock()
		}
	} else {
		s := h.channelShard(m.Channel)
		s.mu.RLock()
		f.queue(s.channels[m.Channel])
		s.mu.RUnlock()
	}
	f.startWriters()
	h.emitMu.Unlock()
	h.stats.Delivered.Add(int64(f.queued))
	h.stats.DroppedClosed.Add(f.dropped)
	for _, c := range f.slow {
		h.stats.SlowDisconnects.Add(1)
		c.drop()
	}
	return f.queued
}

// fanout queues one frame to sets of clients and tallies the outcomes.
type fanout struct {
	pool    *writerPool
	frame   []byte
	queued  int
	dropped int64     // recipients already closing
	slow    []*Client // recipients whose queue overflowed, to drop outside the locks
	// idle holds recipients that need a writer, pushed to the pool a
	// chunk at a time: one lock for many clients, and writing starts
	// while the fan-out goes on.
	idle  [writerChunk]*Client
	nidle int
}

func (f *fanout) queue(clients map[*Client]struct{}) {
	for c := range clients {
		switch c.enqueue(f.frame) {
		case queued:
			f.queued++
		case idle:
			f.queued++
			f.idle[f.nidle] = c
			if f.nidle++; f.nidle == len(f.idle) {
				f.startWriters()
			}
		case skipped:
			f.dropped++
		case overflow:
			f.slow = append(f.slow, c)
		}
	}
}

// startWriters pushes the recipients that need a writer to the pool.
func (f *fanout) startWriters() {
	f.pool.push(f.idle[:f.nidle]...)
	clear(f.idle[:f.nidle])
	f.nidle = 0
}
