package cluster

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// Reconnect delays of the consumer, and how often it checks that the
// stream is still the one it reads.
const (
	consumerMinDelay = 250 * time.Millisecond
	consumerMaxDelay = 2 * time.Second
	epochCheck       = 2 * time.Second
	// consumerHeartbeat is how often the NATS server holding the
	// member's consumer says it is there while the log is quiet: a
	// consumer lost with its server (an ordered consumer lives on one)
	// is replaced after two missed, not after nats.go's default ten
	// seconds without a message.
	consumerHeartbeat = 500 * time.Millisecond
)

// consumer delivers the cluster's log to one hub, in order, from JetStream
// sessions: one at start, and one each time the member gets NATS back.
type consumer struct {
	m      *Member
	h      *hub.Hub
	rejoin func() // ends the session, so a new one starts
	again  chan struct{}

	// mu is held while a session delivers a message; serial names the
	// session that may. A session that ends does not wait for its
	// JetStream consumer to stop (it may be stuck recreating itself on a
	// NATS server that is gone), so its late messages are dropped here.
	mu     sync.Mutex
	serial uint64
}

func newConsumer(m *Member, h *hub.Hub) *consumer {
	c := &consumer{m: m, h: h, again: make(chan struct{}, 1)}
	c.rejoin = func() {
		select {
		case c.again <- struct{}{}:
		default:
		}
	}
	return c
}

func (c *consumer) run(ctx context.Context) {
	delay := consumerMinDelay
	for ctx.Err() == nil {
		err := c.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.m.log.Warn("cluster: reading the log failed; retrying", "err", err, "in", delay)
		}
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-t.C:
		case <-c.again:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return
		}
		if err != nil {
			delay = min(2*delay, consumerMaxDelay)
		} else {
			delay = consumerMinDelay
		}
	}
}

// session reads the log until ctx ends, the member loses NATS, or the
// stream turns out to be another one. It starts where the hub's log stands
// when that is in the stream's epoch (a member back after losing NATS
// catches up), else from the history's beginning, the hub's log reset to
// the stream's epoch (a member that joins).
func (c *consumer) session(ctx context.Context) error {
	m, h := c.m, c.h
	drain(c.again)
	if !m.nc.IsConnected() {
		select {
		case <-c.again: // connected again
			return nil
		case <-ctx.Done():
			return nil
		}
	}
	sctx, cancel := context.WithTimeout(ctx, streamAttempt)
	st, err := m.ensureStream(sctx)
	cancel()
	if err != nil {
		return err
	}
	epoch, first, last := st.epoch, st.first, st.last
	pos := h.Position()
	start := pos.Offset + 1
	if pos.Epoch != epoch || start < first || pos.Offset > last {
		start = max(first, 1)
		if keep := uint64(max(m.cfg.HistorySize, 0)); last >= keep {
			start = max(start, last-keep+1)
		}
		if err := h.ResetLog(epoch, start-1); err != nil {
			return err
		}
		if pos.Epoch != "" && pos.Epoch != epoch {
			m.log.Info("cluster: joining the log", "epoch", epoch, "from", start, "head", last)
		}
	}
	m.mu.Lock()
	m.epoch = epoch
	m.mu.Unlock()
	caughtUp := func() { m.setState(func(s *State) { s.CaughtUp, s.Reason = true, "" }) }
	if start > last {
		caughtUp()
	}

	cons, err := m.js.OrderedConsumer(ctx, m.stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   start,
	})
	if err != nil {
		return err
	}
	failed := make(chan error, 1)
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	c.mu.Lock()
	c.serial++
	serial := c.serial
	c.mu.Unlock()
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.serial != serial {
			return // from a session that ended
		}
		md, err := msg.Metadata()
		if err != nil {
			fail(err)
			return
		}
		hm := hub.Message{
			ID:      msg.Headers().Get(jetstream.MsgIDHeader),
			Offset:  md.Sequence.Stream,
			Event:   msg.Headers().Get(eventHeader),
			Channel: msg.Headers().Get(channelHeader),
			Data:    msg.Data(),
		}
		err = h.Deliver(hm, md.Timestamp)
		if errors.Is(err, hub.ErrNotNext) {
			if hm.Offset <= h.Position().Offset {
				return // delivered already
			}
			// The stream dropped messages this member had not read
			// (it fell behind more than the stream keeps): its
			// browsers missed them, and their positions no longer
			// resume.
			m.log.Error("cluster: messages expired from the stream before this member delivered them", "from", h.Position().Offset+1, "to", hm.Offset-1)
			if err = h.ResetLog(epoch, hm.Offset-1); err == nil {
				err = h.Deliver(hm, md.Timestamp)
			}
		}
		if err != nil {
			fail(err)
			return
		}
		if hm.Offset >= last {
			caughtUp()
		}
	}, jetstream.PullHeartbeat(consumerHeartbeat), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, jetstream.ErrConsumerDeleted) {
			fail(err)
		}
	}))
	if err != nil {
		return err
	}
	defer func() {
		c.mu.Lock()
		c.serial++
		c.mu.Unlock()
		go cc.Stop()
	}()

	tick := time.NewTicker(epochCheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.again:
			return nil
		case err := <-failed:
			return err
		case <-tick.C:
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			s, err := m.js.Stream(cctx, m.stream)
			cancel()
			if err == nil && epochOf(m.cfg.Name, s.CachedInfo().Created) != epoch {
				m.log.Warn("cluster: the stream was made anew; its earlier messages are gone", "stream", m.stream)
				return nil
			}
		}
	}
}

func drain(ch chan struct{}) {
	select {
	case <-ch:
	default:
	}
}
