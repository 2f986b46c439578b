package hub

import (
	"context"
	"sync"
	"time"
)

// Emitted describes one emit made with EmitOnce.
type Emitted struct {
	// ID is the message's id: the idempotency key.
	ID string
	// Recipients is the number of local connections the first emit with
	// this key was queued to.
	Recipients int
	// Duplicate reports that the key was seen before, within the window,
	// and the message was not delivered again.
	Duplicate bool
}

// keyEntry is one remembered idempotency key. done is closed once the emit
// that made it has finished; ok then says whether it was delivered.
type keyEntry struct {
	key  string
	at   time.Time
	done chan struct{}
	ok   bool
	res  Emitted
}

// keyStore remembers recent idempotency keys in a map, and the order they
// came in in a queue, so that forgetting the oldest costs O(1) per emit
// and no goroutine.
type keyStore struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	byKey map[string]*keyEntry
	queue []*keyEntry // oldest first, from head
	head  int
}

func (s *keyStore) init(max int, ttl time.Duration) {
	s.max, s.ttl = max, ttl
	s.byKey = make(map[string]*keyEntry)
}

// claim returns the entry for key and whether the caller made it, and so
// must emit and then call finish. Otherwise the caller waits on the
// entry's done.
func (s *keyStore) claim(key string, now time.Time) (*keyEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byKey[key]; ok && now.Sub(e.at) < s.ttl {
		return e, false
	}
	e := &keyEntry{key: key, at: now, done: make(chan struct{})}
	s.byKey[key] = e
	s.queue = append(s.queue, e)
	s.evict(now)
	return e, true
}

// evict forgets the oldest keys past the TTL or beyond max. Each entry is
// queued once and dequeued once, so the cost is O(1) per emit amortized.
func (s *keyStore) evict(now time.Time) {
	for s.head < len(s.queue) {
		e := s.queue[s.head]
		if len(s.queue)-s.head <= s.max && now.Sub(e.at) < s.ttl {
			break
		}
		if s.byKey[e.key] == e {
			delete(s.byKey, e.key)
		}
		s.queue[s.head] = nil
		s.head++
	}
	// Compact once half the backing array is dead.
	if s.head > 1024 && s.head*2 >= len(s.queue) {
		n := copy(s.queue, s.queue[s.head:])
		clear(s.queue[n:])
		s.queue = s.queue[:n]
		s.head = 0
	}
}

// finish records the outcome of e's emit and wakes its waiters. A failed
// emit forgets the key, so that a retry may deliver.
func (s *keyStore) finish(e *keyEntry, res Emitted, ok bool) {
	s.mu.Lock()
	e.res, e.ok = res, ok
	if !ok && s.byKey[e.key] == e {
		delete(s.byKey, e.key)
	}
	s.mu.Unlock()
	close(e.done)
}

// EmitOnce is Emit with an idempotency key: the key becomes the message's
// ID, and an emit whose key this hub has seen within
// Config.IdempotencyTTL (and among the last Config.IdempotencyKeys keys)
// is not delivered again: it returns the first emit's result with
// Duplicate set. Of concurrent emits with one key exactly one delivers;
// the others wait for it. An emit that fails before delivering (the hub
// drains or is paused) is forgotten, so its retry may deliver. The caller
// validates key; the hub only requires it to be non-empty.
func (h *Hub) EmitOnce(ctx context.Context, key string, m Message) (Emitted, error) {
	if key == "" {
		id, n, err := h.Emit(ctx, m)
		return Emitted{ID: id, Recipients: n}, err
	}
	for {
		if err := h.refuse(); err != nil {
			return Emitted{}, err
		}
		e, mine := h.keys.claim(key, time.Now())
		if !mine {
			select {
			case <-e.done:
			case <-ctx.Done():
				return Emitted{}, ctx.Err()
			}
			if !e.ok {
				continue // the first attempt failed: try again
			}
			res := e.res
			res.Duplicate = true
			return res, nil
		}
		if err := h.refuse(); err != nil {
			h.keys.finish(e, Emitted{}, false)
			return Emitted{}, err
		}
		m.ID = key
		n := h.deliver(m)
		h.stats.Emitted.Add(1)
		res := Emitted{ID: key, Recipients: n}
		// Delivered locally: the key stays taken even if the broker
		// fails, since a retry would deliver a second copy here.
		h.keys.finish(e, res, true)
		if err := h.broker.Publish(ctx, m); err != nil {
			return res, err
		}
		return res, nil
	}
}
