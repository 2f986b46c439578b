package hub

import (
	"context"
	"sync"
	"time"
)

// Emitted describes one emit.
type Emitted struct {
	// ID is the message's id: the idempotency key, if it has one.
	ID string
	// Offset is the message's position in the log.
	Offset uint64
	// Recipients is the number of local connections the message (the
	// first emit, for a duplicate) was queued to.
	Recipients int
	// Duplicate reports that the key was seen before, within the window,
	// and the message was not delivered again.
	Duplicate bool
}

// IdempotencyKey is a key the hub remembers, with the result of the emit
// that used it: what a follower must know to answer a retry as the
// followed node would.
type IdempotencyKey struct {
	Key    string
	Time   time.Time
	Result Emitted
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

// record remembers k as a finished emit, as the node that made it does.
func (s *keyStore) record(k IdempotencyKey) {
	e := &keyEntry{key: k.Key, at: k.Time, done: make(chan struct{}), ok: true, res: k.Result}
	close(e.done)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.byKey[k.Key]; ok && !old.finished() {
		return // an emit of this node's own holds it
	}
	s.byKey[k.Key] = e
	s.queue = append(s.queue, e)
	s.evict(time.Now())
}

// snapshot returns the finished keys within the window, oldest first.
func (s *keyStore) snapshot() []IdempotencyKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.evict(now)
	var out []IdempotencyKey
	for _, e := range s.queue[s.head:] {
		if s.byKey[e.key] == e && e.finished() && e.ok {
			out = append(out, IdempotencyKey{Key: e.key, Time: e.at, Result: e.res})
		}
	}
	return out
}

// reset forgets every key.
func (s *keyStore) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.byKey)
	clear(s.queue)
	s.queue, s.head = s.queue[:0], 0
}

// finished reports whether e's emit has finished.
func (e *keyEntry) finished() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
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
// drains or is paused) is forgotten, so its retry may deliver. An emit
// whose context ends while it waits for a follower keeps its key: the
// message is in the log and will be delivered. The caller validates key;
// the hub only requires it to be non-empty.
func (h *Hub) EmitOnce(ctx context.Context, key string, m Message) (Emitted, error) {
	if key == "" {
		return h.Emit(ctx, m)
	}
	if h.cfg.Sequencer != nil {
		// The shared log de-duplicates, for the whole cluster.
		return h.appendShared(ctx, key, m)
	}
	for {
		if err := h.refuse(); err != nil {
			return Emitted{}, err
		}
		e, mine := h.keys.claim(key, time.Now())
		if mine {
			return h.emit(ctx, e, m)
		}
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
}
