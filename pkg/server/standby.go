package server

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/switchboard-rt/switchboard/pkg/hub"
	"github.com/switchboard-rt/switchboard/pkg/pair"
)

// A node started with Config.PrimaryAddr is a standby. It watches the
// primary's gRPC health (service "") and is, at any time, in one of three
// states:
//
//   - unknown: just started, no answer from the primary yet (at most
//     primaryCheckTimeout). It refuses browsers and calls like a passive
//     node, so it never counts browsers the primary also counts.
//   - active: the primary is unreachable or not SERVING. The standby serves
//     browsers and the API exactly like a primary; its health and /readyz
//     say SERVING / 200.
//   - passive: the primary is SERVING. The standby pauses its hub: new /ws
//     upgrades get 503, EmitMessage, GetOnlineCount and new WatchCount
//     calls UNAVAILABLE ("standby: primary is serving"), WatchCount streams
//     in progress end with UNAVAILABLE, /readyz answers 503 "standby" and
//     its own gRPC health is NOT_SERVING. It hands its browsers back: each
//     gets close 1012 at a random time within Config.HandBackSpread, and
//     reconnects through the proxy to the primary.
//
// Transitions: unknown or active -> passive when the primary answers
// SERVING; unknown or passive -> active when it answers anything else, or
// a call fails or takes longer than primaryCheckTimeout. Going active in
// the middle of a hand-back stops it; the browsers not yet closed stay.
//
// Detection: the standby holds a health Watch stream on the primary, so a
// primary that shuts down (NOT_SERVING first) or whose process dies
// (its sockets are reset) is seen within milliseconds. Besides, it calls
// Check every primaryCheckInterval with a primaryCheckTimeout deadline, so
// a primary whose host or network vanished without a reset is seen within
// primaryCheckInterval + primaryCheckTimeout (2 s). A primary that comes
// back is seen within the reconnect backoff (at most
// primaryRetryMaxDelay) plus one check. A primary whose health has no
// Watch (Unimplemented) is polled with Check alone.
//
// The standby only ever reads the primary's health; its own health
// service, which a proxy or a third party may check, reports its own
// state, so the two never feed each other. Only one node may be the
// standby: two nodes each naming the other would chase each other.
//
// When the standby cannot reach the primary but the proxy can, the
// standby goes active and serves whoever reaches it; the proxy sends new
// connections to the primary while it is up, so those are only clients
// the proxy failed over. Once the standby sees the primary again it hands
// them back. Two nodes counting part of the browsers each lasts no longer
// than the detection time plus HandBackSpread.
const (
	primaryCheckInterval = time.Second
	primaryCheckTimeout  = time.Second
	primaryRetryMinDelay = 100 * time.Millisecond
	primaryRetryMaxDelay = time.Second
)

// The states of a node. A primary is active, or syncing while it waits at
// start for its standby's log (Config.StandbyWait). A cluster member is
// joining while it cannot serve: NATS is away, or it has not caught up
// with the log. It refuses browsers (503) and reports NOT_SERVING, so
// that the load balancer sends them to the other members; it keeps the
// browsers it has, and its emits fail with UNAVAILABLE while NATS is away.
const (
	stateActive int32 = iota
	stateUnknown
	statePassive
	stateSyncing
	stateJoining
)

// The standby also follows the primary's message log through a pair.Link
// on the same connection (see package pair): while passive it holds the
// same log as the primary, which commits each message only once the
// standby has it. Going active, it stops following and forks the log (a
// new epoch that keeps the positions it shared with the primary valid), so
// that browsers moving over resume without a gap. A primary that starts
// while the standby is active asks for the standby's log: the standby then
// pauses (a handover) until it sees the primary serve, or the session ends
// first and it goes on serving.

// standby watches the primary and switches its node between active and
// passive. Its fields are under mu.
type standby struct {
	s      *Server
	conn   *grpc.ClientConn
	health healthpb.HealthClient
	link   *pair.Link

	mu         sync.Mutex
	serving    bool // the last verdict: the primary serves
	known      bool // a verdict was reached
	handedOver bool // the log went to a starting primary, which has not served yet
	stopHand   context.CancelFunc
	handing    sync.WaitGroup
}

func newStandby(s *Server) (*standby, error) {
	creds, err := s.primaryCreds()
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize(s.cfg.MaxDataBytes))),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  primaryRetryMinDelay,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   primaryRetryMaxDelay,
			},
			MinConnectTimeout: primaryCheckTimeout,
		}),
	}
	if s.cfg.APIToken != "" {
		// The pair shares its token: the log is behind the same auth as
		// the API.
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken{token: s.cfg.APIToken, secure: s.cfg.TLS.PrimaryCAFile != ""}))
	}
	conn, err := grpc.NewClient(s.cfg.PrimaryAddr, opts...)
	if err != nil {
		return nil, err
	}
	sb := &standby{s: s, conn: conn, health: healthpb.NewHealthClient(conn)}
	sb.link = pair.NewLink(pair.LinkConfig{
		Hub:      s.hub,
		Conn:     conn,
		Logger:   s.log,
		Active:   func() bool { return s.state.Load() == stateActive },
		Handover: sb.handover,
		Ended:    sb.sessionEnded,
	})
	return sb, nil
}

// bearerToken sends the API token with each call to the primary.
type bearerToken struct {
	token  string
	secure bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearerToken) RequireTransportSecurity() bool { return b.secure }

// run watches the primary, and follows its log, until ctx ends.
func (sb *standby) run(ctx context.Context) {
	defer sb.conn.Close()
	defer func() {
		sb.mu.Lock()
		sb.endHandBack()
		sb.mu.Unlock()
	}()
	var following sync.WaitGroup
	following.Add(1)
	go func() {
		defer following.Done()
		sb.link.Run(ctx)
	}()
	defer following.Wait()
	delay := primaryRetryMinDelay
	for {
		answered, err := sb.session(ctx)
		if ctx.Err() != nil {
			return
		}
		sb.set(ctx, false, err)
		if answered {
			delay = primaryRetryMinDelay
		}
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		delay = min(2*delay, primaryRetryMaxDelay)
	}
}

// session checks the primary once, then follows its health through a
// Watch stream and a Check every primaryCheckInterval until one of them
// fails. It reports whether the primary answered at all.
func (sb *standby) session(ctx context.Context) (answered bool, err error) {
	check := func() error {
		cctx, cancel := context.WithTimeout(ctx, primaryCheckTimeout)
		defer cancel()
		r, err := sb.health.Check(cctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		answered = true
		sb.set(ctx, r.GetStatus() == healthpb.HealthCheckResponse_SERVING, nil)
		return nil
	}
	if err := check(); err != nil {
		return answered, err
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates := make(chan healthpb.HealthCheckResponse_ServingStatus)
	ended := make(chan error, 1)
	var recv sync.WaitGroup
	defer recv.Wait()
	defer cancel()
	recv.Add(1)
	go func() {
		defer recv.Done()
		stream, err := sb.health.Watch(wctx, &healthpb.HealthCheckRequest{})
		for err == nil {
			var r *healthpb.HealthCheckResponse
			if r, err = stream.Recv(); err == nil {
				select {
				case updates <- r.GetStatus():
				case <-wctx.Done():
					err = wctx.Err()
				}
			}
		}
		ended <- err
	}()

	tick := time.NewTicker(primaryCheckInterval)
	defer tick.Stop()
	for {
		select {
		case st := <-updates:
			answered = true
			sb.set(ctx, st == healthpb.HealthCheckResponse_SERVING, nil)
		case err := <-ended:
			if status.Code(err) != codes.Unimplemented {
				return answered, err
			}
			sb.s.log.Info("standby: the primary's health has no Watch; polling Check", "interval", primaryCheckInterval)
			ended = nil // poll with Check alone from now on
		case <-tick.C:
			if err := check(); err != nil {
				return answered, err
			}
		case <-ctx.Done():
			return answered, ctx.Err()
		}
	}
}

// set records a verdict on the primary and switches the node when it
// changed. cause says why the primary counts as unavailable, if known.
func (sb *standby) set(ctx context.Context, serving bool, cause error) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.known && sb.serving == serving {
		return
	}
	first := !sb.known
	sb.known, sb.serving = true, serving
	s := sb.s
	if !serving {
		sb.endHandBack()
		if sb.handedOver {
			s.log.Info("standby: primary not serving yet; it is taking over with this node's log", "primary", s.cfg.PrimaryAddr)
			return
		}
		sb.takeOver(cause)
		return
	}
	sb.handedOver = false
	s.state.Store(statePassive)
	s.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)
	s.hub.Pause()
	if first {
		s.log.Info("standby: primary serving, staying passive", "primary", s.cfg.PrimaryAddr)
		return
	}
	s.log.Info("standby: primary serving, handing back browsers", "primary", s.cfg.PrimaryAddr, "browsers", s.hub.Count(""), "spread", s.cfg.HandBackSpread)
	hctx, cancel := context.WithCancel(ctx)
	sb.stopHand = cancel
	sb.handing.Add(1)
	go func() {
		defer sb.handing.Done()
		n := s.hub.HandBack(hctx, s.cfg.HandBackSpread)
		if hctx.Err() != nil {
			s.log.Info("standby: hand-back stopped", "handed_back", n)
			return
		}
		s.log.Info("standby: handed back browsers", "handed_back", n)
	}()
}

// takeOver makes the node active: it stops following the primary's log,
// forks it and serves. sb.mu must be held.
func (sb *standby) takeOver(cause error) {
	s := sb.s
	sb.link.Restart()
	s.hub.ForkLog()
	s.hub.Resume()
	s.state.Store(stateActive)
	s.setHealth(healthpb.HealthCheckResponse_SERVING)
	pos := s.hub.Position()
	s.log.Info("standby: primary unavailable, taking over", "primary", s.cfg.PrimaryAddr, "cause", errText(cause), "epoch", pos.Epoch, "offset", pos.Offset)
}

// handover pauses the node for a starting primary that takes its log, and
// returns the log.
func (sb *standby) handover() hub.Snapshot {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	s := sb.s
	sb.handedOver = true
	s.state.Store(statePassive)
	s.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)
	return s.hub.Handover()
}

// sessionEnded learns that a log session ended; one that handed the log to
// a primary which never served leaves the node serving again.
func (sb *standby) sessionEnded(handedOver bool) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if !handedOver || !sb.handedOver {
		return
	}
	sb.handedOver = false
	if sb.known && !sb.serving {
		sb.takeOver(errors.New("the primary took the log but did not serve"))
	}
}

// endHandBack stops a hand-back in progress and waits for it; sb.mu must
// be held.
func (sb *standby) endHandBack() {
	if sb.stopHand != nil {
		sb.stopHand()
		sb.stopHand = nil
	}
	sb.handing.Wait()
}

func errText(err error) string {
	switch {
	case err == nil:
		return "not serving"
	case errors.Is(err, context.DeadlineExceeded), status.Code(err) == codes.DeadlineExceeded:
		return "no answer within " + primaryCheckTimeout.String()
	}
	return err.Error()
}
