package pair

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pairv1 "github.com/switchboard-rt/switchboard/gen/switchboard/pair/v1"
	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/msglog"
)

// Service serves switchboard.pair.v1.PairService on a primary.
type Service struct {
	pairv1.UnimplementedPairServiceServer
	hub *hub.Hub
	log *slog.Logger

	mu       sync.Mutex
	adoption adoptionState
	changed  chan struct{} // closed and replaced when adoption changes
	sessions map[*primarySession]struct{}
	stopped  bool
}

// adoptionState is where a starting primary is in taking its standby's
// log.
type adoptionState uint8

const (
	notWaiting adoptionState = iota // serving: a standby gets this node's log
	waiting                         // WaitForStandby waits for a standby's log
	adopting                        // a session is receiving it
	adopted                         // a session restored it
)

var _ pairv1.PairServiceServer = (*Service)(nil)

// NewService returns the pair service of a primary whose hub is h.
func NewService(h *hub.Hub, logger *slog.Logger) *Service {
	return &Service{hub: h, log: logger, changed: make(chan struct{}), sessions: make(map[*primarySession]struct{})}
}

// setAdoption changes the adoption state and wakes whoever waits on it;
// s.mu must be held.
func (s *Service) setAdoption(a adoptionState) {
	s.adoption = a
	close(s.changed)
	s.changed = make(chan struct{})
}

// WaitForStandby waits, up to wait, for a standby to follow and hand over
// its log, which then replaces the hub's: a primary that comes back after
// a crash continues the log its standby kept while it was away. The
// caller keeps the hub paused meanwhile. It reports whether a log was
// taken. A handover that has begun when wait runs out is waited for.
func (s *Service) WaitForStandby(ctx context.Context, wait time.Duration) bool {
	s.mu.Lock()
	s.setAdoption(waiting)
	s.mu.Unlock()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	expired := false
	for {
		s.mu.Lock()
		state, changed := s.adoption, s.changed
		if state == adopted || (expired && state == waiting) || ctx.Err() != nil {
			s.setAdoption(notWaiting)
			s.mu.Unlock()
			return state == adopted
		}
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			expired = true
		case <-ctx.Done():
		}
	}
}

// Stop ends every Follow session, as the node shuts down: gRPC's graceful
// stop would wait for them forever.
func (s *Service) Stop() {
	s.mu.Lock()
	s.stopped = true
	sessions := make([]*primarySession, 0, len(s.sessions))
	for ps := range s.sessions {
		sessions = append(sessions, ps)
	}
	s.mu.Unlock()
	for _, ps := range sessions {
		ps.cancel()
	}
}

// Standbys returns the node names of the standbys in session with this
// primary, sorted.
func (s *Service) Standbys() []string {
	s.mu.Lock()
	names := make([]string, 0, len(s.sessions))
	for ps := range s.sessions {
		names = append(names, ps.peer)
	}
	s.mu.Unlock()
	slices.Sort(names)
	return slices.Compact(names)
}

// Follow serves one standby's session (see the proto).
func (s *Service) Follow(stream pairv1.PairService_FollowServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "a Follow session begins with a hello")
	}
	if s.hub.Draining() {
		return status.Error(codes.Unavailable, "primary is shutting down")
	}
	ps := &primarySession{s: s, stream: stream, peer: hello.GetNode(), cancel: cancel, f: newFollower()}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return status.Error(codes.Unavailable, "primary is shutting down")
	}
	s.sessions[ps] = struct{}{}
	wantsLog := s.adoption == waiting
	if wantsLog {
		s.setAdoption(adopting)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, ps)
		if s.adoption == adopting {
			s.setAdoption(waiting)
		}
		s.mu.Unlock()
	}()
	err = ps.run(ctx, wantsLog, hello.GetActive())
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped && stream.Context().Err() == nil {
		return status.Error(codes.Unavailable, "primary is shutting down")
	}
	return err
}

// primarySession is one standby following this node.
type primarySession struct {
	s      *Service
	stream pairv1.PairService_FollowServer
	peer   string // the standby's node name
	cancel context.CancelFunc
	f      *follower
}

func (ps *primarySession) run(ctx context.Context, wantsLog, active bool) error {
	s, h := ps.s, ps.s.hub
	if err := ps.stream.Send(&pairv1.FollowResponse{Msg: &pairv1.FollowResponse_Accepted{Accepted: &pairv1.Accepted{Node: h.Node(), WantsLog: wantsLog}}}); err != nil {
		return err
	}
	if wantsLog {
		snap, err := ps.recvLog(ctx)
		if err != nil {
			return err
		}
		if err := h.Restore(snap); err != nil {
			return status.Errorf(codes.InvalidArgument, "failed to take the standby's log: %v", err)
		}
		s.log.Info("took the standby's log", "standby", ps.peer, "standby_active", active, "epoch", snap.Log.Epoch, "offset", snap.Log.Head, "messages", len(snap.Log.Entries))
	}
	// Attached before the adoption is reported, so that no emit the node
	// takes once it serves misses the standby.
	snap := h.Follow(ps.f)
	defer h.Unfollow(ps.f)
	if wantsLog {
		s.mu.Lock()
		s.setAdoption(adopted)
		s.mu.Unlock()
	}
	for _, c := range chunks(snap) {
		if err := ps.stream.Send(&pairv1.FollowResponse{Msg: &pairv1.FollowResponse_Log{Log: c}}); err != nil {
			return err
		}
	}
	s.log.Info("standby following", "standby", ps.peer, "epoch", snap.Log.Epoch, "offset", snap.Log.Head)
	defer h.HandleCounts(hub.Counts{Node: ps.peer}) // its browsers leave with it
	stopCounts := h.OnLocalCounts(ps.f.setCounts)
	defer stopCounts()

	recvErr := make(chan error, 1)
	go func() { recvErr <- ps.recvLoop() }()
	err := ps.sendLoop(ctx, recvErr)
	ps.cancel()
	return err
}

// recvLog receives the standby's log copy, within logTimeout.
func (ps *primarySession) recvLog(ctx context.Context) (hub.Snapshot, error) {
	t := time.AfterFunc(logTimeout, ps.cancel)
	defer t.Stop()
	var a assembler
	for {
		req, err := ps.stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return hub.Snapshot{}, status.Error(codes.DeadlineExceeded, "the standby's log did not arrive in time")
			}
			return hub.Snapshot{}, err
		}
		c := req.GetLog()
		if c == nil {
			return hub.Snapshot{}, status.Error(codes.InvalidArgument, "expected the standby's log")
		}
		done, err := a.add(c)
		if err != nil {
			return hub.Snapshot{}, status.Error(codes.InvalidArgument, err.Error())
		}
		if done {
			return a.snap, nil
		}
	}
}

// recvLoop takes the standby's acknowledgements and counts until the
// stream ends.
func (ps *primarySession) recvLoop() error {
	h := ps.s.hub
	for {
		req, err := ps.stream.Recv()
		if err != nil {
			return err
		}
		switch m := req.GetMsg().(type) {
		case *pairv1.FollowRequest_Ack:
			h.Acked(ps.f, m.Ack.GetOffset())
		case *pairv1.FollowRequest_Counts:
			h.HandleCounts(countsFromProto(ps.peer, m.Counts))
		default:
			return status.Error(codes.InvalidArgument, "a following standby sends only acks and counts")
		}
	}
}

// sendLoop streams entries and counts to the standby until the session
// ends: the standby leaves, the hub stops waiting for it, or the node
// shuts down.
func (ps *primarySession) sendLoop(ctx context.Context, recvErr <-chan error) error {
	for {
		select {
		case <-ps.f.wake:
		case err := <-recvErr:
			return err
		case <-ps.f.stopped:
			return status.Errorf(codes.Aborted, "no longer followed: %v", ps.f.err)
		case <-ctx.Done():
			return ctx.Err()
		}
		entries, counts := ps.f.take()
		for len(entries) > 0 {
			batch, size := &pairv1.Entries{}, 0
			for len(entries) > 0 && len(batch.Entries) < chunkEntries && (size == 0 || size+len(entries[0].Frame) <= chunkBytes) {
				batch.Entries = append(batch.Entries, entryToProto(entries[0]))
				size += len(entries[0].Frame)
				entries = entries[1:]
			}
			if err := ps.stream.Send(&pairv1.FollowResponse{Msg: &pairv1.FollowResponse_Entries{Entries: batch}}); err != nil {
				return err
			}
		}
		if counts != nil {
			if err := ps.sendCounts(*counts); err != nil {
				return err
			}
		}
	}
}

// follower is the hub.Follower of one session: it queues what the hub
// hands it for the session's sender.
type follower struct {
	mu      sync.Mutex
	entries []msglog.Entry
	counts  *hub.Counts // the newest counts not sent yet
	wake    chan struct{}
	stopped chan struct{}
	once    sync.Once
	err     error
}

var _ hub.Follower = (*follower)(nil)

func newFollower() *follower {
	return &follower{wake: make(chan struct{}, 1), stopped: make(chan struct{})}
}

// Append queues e for the standby.
func (f *follower) Append(e msglog.Entry) {
	f.mu.Lock()
	f.entries = append(f.entries, e)
	f.mu.Unlock()
	f.signal()
}

// Stop ends the session: the hub no longer waits for this standby.
func (f *follower) Stop(err error) {
	f.once.Do(func() {
		f.err = err
		close(f.stopped)
	})
}

func (f *follower) setCounts(c hub.Counts) {
	f.mu.Lock()
	c = mergeCounts(f.counts, c)
	f.counts = &c
	f.mu.Unlock()
	f.signal()
}

func (f *follower) signal() { notify(f.wake) }

// take returns what is queued for the standby.
func (f *follower) take() ([]msglog.Entry, *hub.Counts) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, c := f.entries, f.counts
	f.entries, f.counts = nil, nil
	return e, c
}

// sendCounts sends this node's counts to the standby.
func (ps *primarySession) sendCounts(c hub.Counts) error {
	return sendCounts(c, func(m *pairv1.Counts) error {
		return ps.stream.Send(&pairv1.FollowResponse{Msg: &pairv1.FollowResponse_Counts{Counts: m}})
	})
}
