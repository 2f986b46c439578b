package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/switchboard-rt/switchboard/pkg/cluster"
	"github.com/switchboard-rt/switchboard/pkg/control"
)

// joinCluster makes the node a cluster member (see Config.Cluster).
func (s *Server) joinCluster() error {
	cfg := s.cfg
	if cfg.PrimaryAddr != "" {
		return errors.New("SWITCHBOARD_PRIMARY_ADDR and SWITCHBOARD_NATS_URL exclude each other: a cluster's members are all active, a pair's standby is passive")
	}
	if cfg.StandbyWait > 0 {
		return errors.New("SWITCHBOARD_STANDBY_WAIT is for the primary of a pair; a cluster member has no standby")
	}
	cc := cfg.Cluster
	cc.HistorySize, cc.HistoryTTL = cfg.Hub.HistorySize, cfg.Hub.HistoryTTL
	cc.MaxDataBytes = cfg.MaxDataBytes
	if cc.MaxDataBytes <= 0 {
		cc.MaxDataBytes = control.DefaultMaxDataBytes
	}
	if cc.Logger == nil {
		cc.Logger = s.log
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := cluster.Join(ctx, cc)
	if err != nil {
		return fmt.Errorf("invalid cluster settings: %w", err)
	}
	s.member = m
	return nil
}

// followCluster makes the node's state and health follow its membership
// until ctx ends.
func (s *Server) followCluster(ctx context.Context) {
	for {
		st, changed := s.member.State()
		if st.Ready() {
			s.state.Store(stateActive)
			s.setHealth(healthpb.HealthCheckResponse_SERVING)
		} else {
			s.state.Store(stateJoining)
			s.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// clusterReason says why a member cannot serve.
func (s *Server) clusterReason() string {
	if s.member == nil {
		return "not a cluster member"
	}
	st, _ := s.member.State()
	return st.Reason
}
