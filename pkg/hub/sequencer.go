package hub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/frame"
	"github.com/switchboard-rt/switchboard/pkg/msglog"
)

// A Sequencer is a message log that the nodes of a cluster share, such as
// a JetStream stream. With one, the hub commits nothing of its own accord:
// an emit enters the shared log with Append, which gives it its offset,
// and every node's hub takes every message of the log, its own included,
// in offset order, through Deliver. So every browser in the cluster sees
// one order, and a browser whose node died resumes on another.
type Sequencer interface {
	// Append adds m to the shared log and returns its offset. A message
	// whose ID the log has taken within its de-duplication window is not
	// added again: duplicate is then true, with the first one's offset.
	Append(ctx context.Context, m Message) (offset uint64, duplicate bool, err error)
}

// ErrNotNext is returned by Deliver for a message that does not follow the
// log's head: the caller must ResetLog to where the shared log is.
var ErrNotNext = errors.New("message does not follow the log's head")

// appendShared runs an emit through the Sequencer: the message is
// delivered when the shared log hands it back. Recipients is the count of
// the message's audience in the cluster as it enters the log.
func (h *Hub) appendShared(ctx context.Context, key string, m Message) (Emitted, error) {
	if err := h.refuse(); err != nil {
		return Emitted{}, err
	}
	m.ID = key
	if m.ID == "" {
		m.ID = h.idPrefix + strconv.FormatUint(h.nextID.Add(1), 36)
	}
	recipients := h.Count(m.Channel)
	off, dup, err := h.cfg.Sequencer.Append(ctx, m)
	if err != nil {
		return Emitted{}, err
	}
	if !dup {
		h.stats.Emitted.Add(1)
	}
	return Emitted{ID: m.ID, Offset: off, Recipients: int(recipients), Duplicate: dup}, nil
}

// Deliver takes the next message of the shared log (see Sequencer): it
// encodes its frame once, appends it to this node's log and queues it to
// this node's recipients. m.Offset must be one more than the log's head;
// otherwise Deliver takes nothing and returns an error wrapping ErrNotNext.
func (h *Hub) Deliver(m Message, at time.Time) error {
	e := msglog.Entry{
		Offset:  m.Offset,
		Channel: m.Channel,
		ID:      m.ID,
		Frame:   frame.AppendMessage(nil, m.ID, m.Offset, m.Event, m.Channel, m.Data),
		Time:    at,
	}
	h.emitMu.Lock()
	if head := h.msgs.Position().Offset; m.Offset != head+1 {
		h.emitMu.Unlock()
		return fmt.Errorf("%w: got %d, head %d", ErrNotNext, m.Offset, head)
	}
	h.assigned = m.Offset
	f := h.commitLocked(e)
	h.emitMu.Unlock()
	f.finish(h)
	return nil
}

// ResetLog empties this node's log and sets it to epoch, with head the
// offset of the newest message before the next one Deliver will take:
// where a node joins the shared log. Positions in other epochs no longer
// resume.
func (h *Hub) ResetLog(epoch string, head uint64) error {
	h.emitMu.Lock()
	defer h.emitMu.Unlock()
	if err := h.msgs.Restore(msglog.State{Epoch: epoch, Head: head}); err != nil {
		return err
	}
	h.assigned = head
	return nil
}
