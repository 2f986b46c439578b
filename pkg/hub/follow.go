package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/msglog"
)

// A follower is another node that holds a copy of this hub's log: a
// standby. The hub hands it every message it takes, and commits a message
// (appends it to its own log and delivers it) only once the follower has
// acknowledged holding it, so that a message any browser has seen, and
// any emit acknowledged to its caller, survives the death of either node.
// A follower that stops acknowledging is dropped after
// Config.FollowTimeout, and the hub goes on alone. The hub has at most one
// follower.
//
// On the other side, the following hub takes the entries with Apply,
// after starting from the followed hub's Snapshot with Restore.

// Follower is what the hub needs from a node that follows its log.
type Follower interface {
	// Append hands e to the follower. The hub calls it in offset order,
	// under its emit lock: it must not block.
	Append(e msglog.Entry)
	// Stop tells the follower the hub no longer waits for it, and why.
	// The hub calls it at most once, after the last Append.
	Stop(err error)
}

// Snapshot is what a follower starts from: the log and the idempotency
// keys of the followed hub.
type Snapshot struct {
	Log  msglog.State
	Keys []IdempotencyKey
}

// ErrFollowerReplaced is the reason a follower is stopped when another
// one takes its place.
var ErrFollowerReplaced = errors.New("another follower took its place")

// followState is the attached follower and the emits waiting for it.
type followState struct {
	f       Follower
	pending []*pendingEmit // oldest first
	timer   *time.Timer    // runs followTimedOut once the oldest has waited FollowTimeout
}

// pendingEmit is an emit waiting for the follower.
type pendingEmit struct {
	entry msglog.Entry
	key   *keyEntry // nil without an idempotency key
	done  chan struct{}
	res   Emitted // set before done is closed
}

// add queues e for the follower; h.emitMu must be held.
func (fs *followState) add(e msglog.Entry, ke *keyEntry, timeout time.Duration) *pendingEmit {
	p := &pendingEmit{entry: e, key: ke, done: make(chan struct{})}
	fs.pending = append(fs.pending, p)
	if len(fs.pending) == 1 {
		fs.timer.Reset(timeout)
	}
	fs.f.Append(e)
	return p
}

// Follow attaches f as the hub's follower, stopping the one before it,
// and returns the snapshot f must start from: every message the hub
// takes from now on goes to f. The snapshot's frames are shared: treat
// them as read-only.
func (h *Hub) Follow(f Follower) Snapshot {
	h.emitMu.Lock()
	old, slow := h.detachLocked()
	snap := Snapshot{Log: h.msgs.State(), Keys: h.keys.snapshot()}
	fs := &followState{f: f}
	fs.timer = time.AfterFunc(time.Hour, func() { h.followTimedOut(fs) })
	fs.timer.Stop()
	h.follow = fs
	h.emitMu.Unlock()
	dropAll(slow)
	if old != nil {
		old.Stop(ErrFollowerReplaced)
	}
	return snap
}

// Acked records that f holds every message up to offset: those are
// committed.
func (h *Hub) Acked(f Follower, offset uint64) {
	h.emitMu.Lock()
	fs := h.follow
	if fs == nil || fs.f != f {
		h.emitMu.Unlock()
		return
	}
	n := 0
	for n < len(fs.pending) && fs.pending[n].entry.Offset <= offset {
		n++
	}
	slow := h.commitPendingLocked(fs, n)
	if len(fs.pending) > 0 {
		wait := h.cfg.FollowTimeout - time.Since(fs.pending[0].entry.Time)
		fs.timer.Reset(max(0, wait))
	} else {
		fs.timer.Stop()
	}
	h.emitMu.Unlock()
	dropAll(slow)
}

// Unfollow detaches f, if it is the hub's follower, committing what waited
// for it: the hub goes on alone. The follower's transport calls it when
// the follower has gone.
func (h *Hub) Unfollow(f Follower) {
	h.emitMu.Lock()
	if h.follow == nil || h.follow.f != f {
		h.emitMu.Unlock()
		return
	}
	_, slow := h.detachLocked()
	h.emitMu.Unlock()
	dropAll(slow)
}

// Following reports whether the hub has a follower.
func (h *Hub) Following() bool {
	h.emitMu.Lock()
	defer h.emitMu.Unlock()
	return h.follow != nil
}

// followTimedOut drops fs's follower if its oldest pending emit has waited
// FollowTimeout.
func (h *Hub) followTimedOut(fs *followState) {
	h.emitMu.Lock()
	if h.follow != fs || len(fs.pending) == 0 {
		h.emitMu.Unlock()
		return
	}
	if wait := h.cfg.FollowTimeout - time.Since(fs.pending[0].entry.Time); wait > 0 {
		fs.timer.Reset(wait)
		h.emitMu.Unlock()
		return
	}
	_, slow := h.detachLocked()
	h.emitMu.Unlock()
	dropAll(slow)
	h.stats.FollowerDrops.Add(1)
	err := fmt.Errorf("no acknowledgement within %v", h.cfg.FollowTimeout)
	h.log.Warn("standby dropped from following: going on alone", "err", err)
	fs.f.Stop(err)
}

// detachLocked commits every emit waiting for the follower and detaches
// it; it returns the follower, if any, and the clients to drop as slow.
// h.emitMu must be held.
func (h *Hub) detachLocked() (Follower, []*Client) {
	fs := h.follow
	if fs == nil {
		return nil, nil
	}
	fs.timer.Stop()
	slow := h.commitPendingLocked(fs, len(fs.pending))
	h.follow = nil
	return fs.f, slow
}

// commitPendingLocked commits the n oldest pending emits of fs and wakes
// their callers; it returns the clients to drop as slow. h.emitMu must be
// held.
func (h *Hub) commitPendingLocked(fs *followState, n int) []*Client {
	var slow []*Client
	for _, p := range fs.pending[:n] {
		f := h.commitLocked(p.entry)
		f.tally(h)
		slow = append(slow, f.slow...)
		p.res = Emitted{ID: p.entry.ID, Offset: p.entry.Offset, Recipients: f.queued}
		if p.key != nil {
			h.keys.finish(p.key, p.res, true)
		}
		close(p.done)
	}
	clear(fs.pending[:n])
	fs.pending = fs.pending[n:]
	return slow
}

// awaitCommit waits until p is committed or ctx ends. A message whose
// caller has gone is still committed, and its key kept.
func awaitCommit(ctx context.Context, p *pendingEmit) (Emitted, error) {
	select {
	case <-p.done:
		return p.res, nil
	case <-ctx.Done():
		return Emitted{}, ctx.Err()
	}
}

// Apply takes the next entry of the log this hub follows: it appends it,
// remembers its idempotency key and delivers it to this node's clients.
// Entries must come one by one after the log's head.
func (h *Hub) Apply(e msglog.Entry) error {
	h.emitMu.Lock()
	if h.follow != nil {
		h.emitMu.Unlock()
		return errors.New("a followed hub cannot follow another")
	}
	if err := h.msgs.Append(e); err != nil {
		h.emitMu.Unlock()
		return err
	}
	h.assigned = e.Offset
	f := h.fanoutLocked(e.Channel, e.Frame)
	if e.Key != "" {
		h.keys.record(IdempotencyKey{Key: e.Key, Time: e.Time, Result: Emitted{ID: e.ID, Offset: e.Offset, Recipients: f.queued}})
	}
	h.emitMu.Unlock()
	f.finish(h)
	return nil
}

// Restore replaces the hub's log and idempotency keys with s, to follow
// the node s comes from. It fails while the hub has a follower itself.
func (h *Hub) Restore(s Snapshot) error {
	h.emitMu.Lock()
	defer h.emitMu.Unlock()
	if h.follow != nil {
		return errors.New("a followed hub cannot follow another")
	}
	if err := h.msgs.Restore(s.Log); err != nil {
		return fmt.Errorf("failed to restore the log: %w", err)
	}
	h.assigned = s.Log.Head
	h.keys.reset()
	for _, k := range s.Keys {
		h.keys.record(k)
	}
	return nil
}

// Handover pauses the hub (see Pause) and returns its snapshot: no message
// enters the log after it, so another node that starts from it misses
// nothing this one took.
func (h *Hub) Handover() Snapshot {
	h.Pause()
	h.emitMu.Lock()
	defer h.emitMu.Unlock()
	return Snapshot{Log: h.msgs.State(), Keys: h.keys.snapshot()}
}

// ForkLog starts a new epoch of the hub's log that continues the current
// one (see msglog.Log.Fork): a node that takes over from another whose log
// it followed forks, since the other may have taken messages it never
// received.
func (h *Hub) ForkLog() {
	h.emitMu.Lock()
	defer h.emitMu.Unlock()
	h.msgs.Fork()
}

func dropAll(slow []*Client) {
	for _, c := range slow {
		c.h.stats.SlowDisconnects.Add(1)
		c.drop()
	}
}
