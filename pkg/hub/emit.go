package hub

import (
	"context"
	"strconv"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/frame"
	"github.com/switchboard-rt/switchboard/pkg/msglog"
)

// Emitting a message takes three steps, all in the log's order, under
// emitMu: the message gets the next offset and is encoded once as the
// frame browsers receive; it is committed, that is appended to the log
// and queued to every local recipient; and the emit returns. Without a
// follower (see follow.go) the three happen at once. With one, the
// message waits between the first two until the follower holds it, so
// that no browser ever sees a message that the death of this node could
// take from the log.

// Emit assigns m an ID and an offset and commits it. It returns what
// Emitted describes. It never blocks on a client; with a follower it
// waits until the follower holds the message (see Follow), with a
// Sequencer until the shared log does.
func (h *Hub) Emit(ctx context.Context, m Message) (Emitted, error) {
	if h.cfg.Sequencer != nil {
		return h.appendShared(ctx, "", m)
	}
	return h.emit(ctx, nil, m)
}

// emit runs an emit, with the idempotency key entry ke if it has a key
// (then ke.key is the message's ID). ke is finished once the message is
// committed, or at once if the hub refuses it.
func (h *Hub) emit(ctx context.Context, ke *keyEntry, m Message) (Emitted, error) {
	h.emitMu.Lock()
	if err := h.refuse(); err != nil {
		h.emitMu.Unlock()
		if ke != nil {
			h.keys.finish(ke, Emitted{}, false)
		}
		return Emitted{}, err
	}
	if ke != nil {
		m.ID = ke.key
	} else {
		m.ID = h.idPrefix + strconv.FormatUint(h.nextID.Add(1), 36)
	}
	h.assigned++
	e := msglog.Entry{
		Offset:  h.assigned,
		Channel: m.Channel,
		ID:      m.ID,
		Frame:   frame.AppendMessage(nil, m.ID, h.assigned, m.Event, m.Channel, m.Data),
		Time:    time.Now(),
	}
	if ke != nil {
		e.Key = ke.key
	}
	h.stats.Emitted.Add(1)
	if h.follow != nil {
		p := h.follow.add(e, ke, h.cfg.FollowTimeout)
		h.emitMu.Unlock()
		return awaitCommit(ctx, p)
	}
	f := h.commitLocked(e)
	h.emitMu.Unlock()
	f.finish(h)
	res := Emitted{ID: m.ID, Offset: e.Offset, Recipients: f.queued}
	if ke != nil {
		h.keys.finish(ke, res, true)
	}
	return res, nil
}

// commitLocked appends e to the log and queues its frame to every local
// recipient; h.emitMu must be held. The caller runs the returned fan-out's
// finish once it has released emitMu.
func (h *Hub) commitLocked(e msglog.Entry) fanout {
	if err := h.msgs.Append(e); err != nil {
		// Offsets are assigned under emitMu, one by one from the
		// log's head: this is a bug, not bad input.
		panic(err)
	}
	return h.fanoutLocked(e.Channel, e.Frame)
}

// fanoutLocked queues frame to every local recipient of channel (every
// client for ""); h.emitMu must be held.
func (h *Hub) fanoutLocked(channel string, frame []byte) fanout {
	f := fanout{pool: &h.pool, frame: frame}
	if channel == "" {
		for i := range h.clients {
			s := &h.clients[i]
			s.mu.RLock()
			f.queue(s.clients)
			s.mu.RUnlock()
		}
	} else {
		s := h.channelShard(channel)
		s.mu.RLock()
		f.queue(s.channels[channel])
		s.mu.RUnlock()
	}
	f.startWriters()
	return f
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

// finish counts the fan-out's outcomes and drops the recipients whose
// queue overflowed; it runs outside the hub's locks.
func (f *fanout) finish(h *Hub) {
	f.tally(h)
	dropAll(f.slow)
}

// tally counts the fan-out's deliveries and the recipients it found
// closing.
func (f *fanout) tally(h *Hub) {
	h.stats.Delivered.Add(int64(f.queued))
	h.stats.DroppedClosed.Add(f.dropped)
}
