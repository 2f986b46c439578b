package pair

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pairv1 "github.com/switchboard-rt/switchboard/gen/switchboard/pair/v1"
	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// Reconnect delays of a Link between sessions.
const (
	linkMinDelay = 100 * time.Millisecond
	linkMaxDelay = time.Second
)

// LinkConfig configures a Link. Every field is required.
type LinkConfig struct {
	// Hub is the standby's hub.
	Hub *hub.Hub
	// Conn is the standby's connection to its primary, with its
	// credentials.
	Conn grpc.ClientConnInterface
	// Logger receives the link's logs.
	Logger *slog.Logger
	// Active reports whether the standby serves on its own, having taken
	// over from its primary: it then neither takes the primary's log nor
	// follows it. The link calls it under its own lock: it must not wait
	// for anything that may call Restart.
	Active func() bool
	// Handover pauses the standby's hub for a starting primary that asks
	// for its log, and returns the log (see hub.Handover). The standby
	// stays paused until it sees the primary serve or the session ends.
	Handover func() hub.Snapshot
	// Ended is called when a session ends; handedOver says whether it
	// handed the log over.
	Ended func(handedOver bool)
}

// Link follows the primary's log from a standby, one session at a time,
// reconnecting after each.
type Link struct {
	cfg LinkConfig

	// mu orders the session's changes to the hub against Restart: after
	// Restart returns, the session it ended changes nothing more.
	mu     sync.Mutex
	gen    uint64 // the current session's number; Restart moves past it
	cancel context.CancelFunc

	following atomic.Bool
	primary   atomic.Pointer[string] // the node name of the session's primary
}

// NewLink returns a link for cfg; Run starts it.
func NewLink(cfg LinkConfig) *Link { return &Link{cfg: cfg} }

// Following reports whether the standby holds the primary's log and
// follows it right now.
func (l *Link) Following() bool { return l.following.Load() }

// Primary returns the node name of the primary whose log the standby
// follows, or "" when it follows none.
func (l *Link) Primary() string {
	if p := l.primary.Load(); p != nil && l.following.Load() {
		return *p
	}
	return ""
}

// Run follows the primary until ctx ends.
func (l *Link) Run(ctx context.Context) {
	delay := linkMinDelay
	warned := codes.OK
	for ctx.Err() == nil {
		followed, err := l.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if followed {
			delay, warned = linkMinDelay, codes.OK
		}
		switch code := status.Code(err); {
		case err == nil || errors.Is(err, context.Canceled) || errors.Is(err, errActive):
		case refusal(code):
			// A setting to fix, not a moment's trouble: say so once.
			if code != warned {
				l.cfg.Logger.Warn("standby: the primary refuses to share its message log; the pair needs the same SWITCHBOARD_API_TOKEN and SWITCHBOARD_MAX_DATA_BYTES, and one version", "err", err)
				warned = code
			}
		default:
			l.cfg.Logger.Debug("standby: log session ended", "err", err)
		}
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		delay = min(2*delay, linkMaxDelay)
	}
}

// refusal reports whether code is a primary's refusal that retrying will
// not mend.
func refusal(code codes.Code) bool {
	switch code {
	case codes.Unauthenticated, codes.PermissionDenied, codes.Unimplemented, codes.InvalidArgument, codes.ResourceExhausted:
		return true
	}
	return false
}

// Restart ends the session in progress, if any; once it returns, that
// session applies nothing more to the hub. The standby calls it when it
// takes over from its primary.
func (l *Link) Restart() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gen++
	l.following.Store(false)
	if l.cancel != nil {
		l.cancel()
	}
}

// guard runs fn, a change to the hub, unless the session gen has been
// ended by Restart.
func (l *Link) guard(gen uint64, fn func() error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gen != gen {
		return context.Canceled
	}
	return fn()
}

// session is one Follow call. It reports whether it got as far as
// following.
func (l *Link) session(parent context.Context) (followed bool, err error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	l.mu.Lock()
	l.gen++
	gen := l.gen
	l.cancel = cancel
	l.mu.Unlock()
	defer l.following.Store(false)

	h := l.cfg.Hub
	stream, err := pairv1.NewPairServiceClient(l.cfg.Conn).Follow(ctx)
	if err != nil {
		return false, err
	}
	defer stream.CloseSend()
	hello := &pairv1.Hello{Node: h.Node(), Active: l.cfg.Active()}
	if err := stream.Send(&pairv1.FollowRequest{Msg: &pairv1.FollowRequest_Hello{Hello: hello}}); err != nil {
		return false, err
	}
	first, err := stream.Recv()
	if err != nil {
		return false, err
	}
	accepted := first.GetAccepted()
	if accepted == nil {
		return false, errProtocol("a Follow session begins with accepted")
	}
	peer := accepted.GetNode()
	l.primary.Store(&peer)
	handedOver := false
	defer func() { l.cfg.Ended(handedOver) }()
	if accepted.GetWantsLog() {
		snap := l.cfg.Handover()
		handedOver = true
		l.cfg.Logger.Info("standby: handing the log over to the starting primary", "primary", accepted.GetNode(), "epoch", snap.Log.Epoch, "offset", snap.Log.Head)
		for _, c := range chunks(snap) {
			if err := stream.Send(&pairv1.FollowRequest{Msg: &pairv1.FollowRequest_Log{Log: c}}); err != nil {
				return false, err
			}
		}
	}

	var a assembler
	t := time.AfterFunc(logTimeout, cancel)
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Stop()
			return false, err
		}
		c := resp.GetLog()
		if c == nil {
			t.Stop()
			return false, errProtocol("expected the primary's log")
		}
		done, err := a.add(c)
		if err != nil {
			t.Stop()
			return false, err
		}
		if done {
			break
		}
	}
	t.Stop()
	if err := l.guard(gen, func() error {
		if l.cfg.Active() {
			return errActive
		}
		if err := h.Restore(a.snap); err != nil {
			return fmt.Errorf("failed to take the primary's log: %w", err)
		}
		l.following.Store(true)
		return nil
	}); err != nil {
		return false, err
	}
	l.cfg.Logger.Info("standby: following the primary's log", "primary", accepted.GetNode(), "epoch", a.snap.Log.Epoch, "offset", a.snap.Log.Head)

	defer h.HandleCounts(hub.Counts{Node: peer}) // its browsers leave with it
	out := newOutbox()
	stopCounts := h.OnLocalCounts(out.setCounts)
	defer stopCounts()
	sendErr := make(chan error, 1)
	go func() { sendErr <- out.run(ctx, stream) }()
	defer func() {
		cancel()
		<-sendErr
	}()
	for {
		resp, err := stream.Recv()
		if err != nil {
			return true, err
		}
		switch m := resp.GetMsg().(type) {
		case *pairv1.FollowResponse_Entries:
			var last uint64
			if err := l.guard(gen, func() error {
				for _, e := range m.Entries.GetEntries() {
					if err := h.Apply(entryFromProto(e)); err != nil {
						return fmt.Errorf("failed to apply entry %d: %w", e.GetOffset(), err)
					}
					last = e.GetOffset()
				}
				return nil
			}); err != nil {
				return true, err
			}
			out.ack(last)
		case *pairv1.FollowResponse_Counts:
			h.HandleCounts(countsFromProto(peer, m.Counts))
		default:
			return true, errProtocol("a following standby expects entries and counts")
		}
	}
}

// errActive ends a standby's session while it serves on its own.
var errActive = errors.New("the standby serves on its own: it does not follow")

// outbox is what the standby has to tell its primary: the newest offset
// it holds and its newest counts, each coalesced, sent by one goroutine.
type outbox struct {
	mu     sync.Mutex
	acked  uint64 // newest offset held
	sent   uint64 // newest offset acknowledged
	counts *hub.Counts
	wake   chan struct{}
}

func newOutbox() *outbox { return &outbox{wake: make(chan struct{}, 1)} }

func (o *outbox) ack(offset uint64) {
	o.mu.Lock()
	o.acked = max(o.acked, offset)
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) setCounts(c hub.Counts) {
	o.mu.Lock()
	c = mergeCounts(o.counts, c)
	o.counts = &c
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) signal() { notify(o.wake) }

// run sends what the outbox holds until ctx ends or a send fails.
func (o *outbox) run(ctx context.Context, stream pairv1.PairService_FollowClient) error {
	for {
		select {
		case <-o.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
		o.mu.Lock()
		ack, counts := o.acked, o.counts
		send := ack > o.sent
		o.sent, o.counts = ack, nil
		o.mu.Unlock()
		if send {
			if err := stream.Send(&pairv1.FollowRequest{Msg: &pairv1.FollowRequest_Ack{Ack: &pairv1.Ack{Offset: ack}}}); err != nil {
				return err
			}
		}
		if counts != nil {
			if err := sendCounts(*counts, func(m *pairv1.Counts) error {
				return stream.Send(&pairv1.FollowRequest{Msg: &pairv1.FollowRequest_Counts{Counts: m}})
			}); err != nil {
				return err
			}
		}
	}
}
