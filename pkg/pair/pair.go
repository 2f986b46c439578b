// Package pair shares a primary's message log with its standby over the
// gRPC connection the standby keeps to its primary: the one place where
// switchboard.pair.v1 types meet hub types.
//
// On the primary, Service makes each standby that calls Follow the hub's
// follower (see hub.Follow): the standby gets the primary's log, then every
// message the primary takes, and the primary commits a message only once
// the standby acknowledges it. A primary that starts while its standby
// serves on its own takes the standby's log first (Service.WaitForStandby),
// so that browsers handed back resume without a gap.
//
// On the standby, Link runs those sessions: it restores the primary's log
// into the standby's hub and applies each entry (hub.Restore, hub.Apply),
// and hands its own log over when a starting primary asks for it.
//
// Both sides send their own counts whenever they change, and each adds the
// other's to its own (hub.HandleCounts): during a hand-back the primary
// counts the browsers still on the standby. Visitors go as a whole set
// when a session starts, then as changes, so each node counts a visitor
// with tabs on both once.
package pair

import (
	"time"

	pairv1 "github.com/switchboard-rt/switchboard/gen/switchboard/pair/v1"
	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/msglog"
)

// Bounds of one message of a log copy or of live entries: a chunk closes
// at chunkEntries entries, or once it holds chunkBytes of frames, and holds
// at most chunkKeys idempotency keys (each at most 128 bytes, with an id as
// long). The nodes take messages of 4 × the data limit + 64 KiB, at least
// 320 KiB, and one frame is at most about the data limit: a chunk always
// fits.
const (
	chunkEntries = 512
	chunkKeys    = 512
	chunkBytes   = 128 << 10
)

// logTimeout bounds how long one side waits for the other's log copy.
const logTimeout = 10 * time.Second

func entryToProto(e msglog.Entry) *pairv1.Entry {
	return &pairv1.Entry{Offset: e.Offset, Channel: e.Channel, Id: e.ID, Key: e.Key, Frame: e.Frame, TimeUnixNano: e.Time.UnixNano()}
}

func entryFromProto(e *pairv1.Entry) msglog.Entry {
	return msglog.Entry{Offset: e.GetOffset(), Channel: e.GetChannel(), ID: e.GetId(), Key: e.GetKey(), Frame: e.GetFrame(), Time: time.Unix(0, e.GetTimeUnixNano())}
}

// countsVisitors bounds the visitors of one Counts message: each takes at
// most about 270 bytes (a channel and a key of up to 130 bytes), so a
// message always fits the nodes' request size.
const countsVisitors = 1000

// countsToProto returns c as one Counts message, or several when it holds
// more than countsVisitors visitors: the first one carries the counts and
// VisitorsFull, the others the rest of the visitors as changes, which
// add up to the same.
func countsToProto(c hub.Counts) []*pairv1.Counts {
	var out []*pairv1.Counts
	vs := c.Visitors
	for first := true; first || len(vs) > 0; first = false {
		n := min(len(vs), countsVisitors)
		m := &pairv1.Counts{Total: c.Total, Channels: c.Channels, Solo: c.Solo, VisitorsFull: first && c.VisitorsFull,
			Visitors: make([]*pairv1.VisitorCount, 0, n)}
		for _, v := range vs[:n] {
			m.Visitors = append(m.Visitors, &pairv1.VisitorCount{Channel: v.Channel, Visitor: v.Visitor, Conns: v.Conns})
		}
		vs = vs[n:]
		out = append(out, m)
	}
	return out
}

// sendCounts sends c with send, in as many messages as its visitors need.
func sendCounts(c hub.Counts, send func(*pairv1.Counts) error) error {
	for _, m := range countsToProto(c) {
		if err := send(m); err != nil {
			return err
		}
	}
	return nil
}

// notify wakes the goroutine that waits on ch, unless a wake is pending.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func countsFromProto(node string, c *pairv1.Counts) hub.Counts {
	out := hub.Counts{Node: node, Total: c.GetTotal(), Channels: c.GetChannels(), Solo: c.GetSolo(), VisitorsFull: c.GetVisitorsFull()}
	for _, v := range c.GetVisitors() {
		out.Visitors = append(out.Visitors, hub.VisitorCount{Channel: v.GetChannel(), Visitor: v.GetVisitor(), Conns: v.GetConns()})
	}
	return out
}

// mergeCounts returns the counts a peer must get to stand where it would
// after pending and then next: next's counts, and the visitors of both,
// next's winning, as a whole set when either was one.
func mergeCounts(pending *hub.Counts, next hub.Counts) hub.Counts {
	if pending == nil || next.VisitorsFull {
		return next
	}
	type key struct{ channel, visitor string }
	conns := make(map[key]int32, len(pending.Visitors)+len(next.Visitors))
	var order []key
	for _, vs := range [][]hub.VisitorCount{pending.Visitors, next.Visitors} {
		for _, v := range vs {
			k := key{v.Channel, v.Visitor}
			if _, ok := conns[k]; !ok {
				order = append(order, k)
			}
			conns[k] = v.Conns
		}
	}
	next.VisitorsFull = pending.VisitorsFull
	next.Visitors = make([]hub.VisitorCount, 0, len(order))
	for _, k := range order {
		if n := conns[k]; n > 0 || !next.VisitorsFull {
			next.Visitors = append(next.Visitors, hub.VisitorCount{Channel: k.channel, Visitor: k.visitor, Conns: n})
		}
	}
	return next
}

// chunks splits a snapshot into the log chunks of a copy.
func chunks(s hub.Snapshot) []*pairv1.LogChunk {
	h := &pairv1.LogHeader{Epoch: s.Log.Epoch, Head: s.Log.Head}
	for _, f := range s.Log.Forks {
		h.Forks = append(h.Forks, &pairv1.Fork{Epoch: f.Epoch, End: f.End})
	}
	out := []*pairv1.LogChunk{{Header: h}}
	cur, size := out[0], 0
	for _, e := range s.Log.Entries {
		if len(cur.Entries) == chunkEntries || size+len(e.Frame) > chunkBytes && len(cur.Entries) > 0 {
			cur, size = &pairv1.LogChunk{}, 0
			out = append(out, cur)
		}
		cur.Entries = append(cur.Entries, entryToProto(e))
		size += len(e.Frame)
	}
	for _, k := range s.Keys {
		if len(cur.Keys) == chunkKeys {
			cur = &pairv1.LogChunk{}
			out = append(out, cur)
		}
		cur.Keys = append(cur.Keys, &pairv1.IdempotencyKey{
			Key: k.Key, TimeUnixNano: k.Time.UnixNano(),
			Id: k.Result.ID, Offset: k.Result.Offset, Recipients: int64(k.Result.Recipients),
		})
	}
	cur.Last = true
	return out
}

// assembler puts a snapshot back together from the chunks of a copy.
type assembler struct {
	snap  hub.Snapshot
	begun bool
}

// add takes the next chunk; it reports whether the copy is complete.
func (a *assembler) add(c *pairv1.LogChunk) (done bool, err error) {
	if h := c.GetHeader(); h != nil {
		if a.begun {
			return false, errProtocol("a log copy has two headers")
		}
		a.begun = true
		a.snap.Log.Epoch, a.snap.Log.Head = h.GetEpoch(), h.GetHead()
		for _, f := range h.GetForks() {
			a.snap.Log.Forks = append(a.snap.Log.Forks, msglog.Fork{Epoch: f.GetEpoch(), End: f.GetEnd()})
		}
	} else if !a.begun {
		return false, errProtocol("a log copy must begin with its header")
	}
	for _, e := range c.GetEntries() {
		a.snap.Log.Entries = append(a.snap.Log.Entries, entryFromProto(e))
	}
	for _, k := range c.GetKeys() {
		a.snap.Keys = append(a.snap.Keys, hub.IdempotencyKey{
			Key: k.GetKey(), Time: time.Unix(0, k.GetTimeUnixNano()),
			Result: hub.Emitted{ID: k.GetId(), Offset: k.GetOffset(), Recipients: int(k.GetRecipients())},
		})
	}
	return c.GetLast(), nil
}

type errProtocol string

func (e errProtocol) Error() string { return "pair protocol: " + string(e) }
