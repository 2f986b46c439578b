package server

import (
	"context"
	"net/http"
	"sync"

	"github.com/switchboard-rt/switchboard/pkg/cluster"
	"github.com/switchboard-rt/switchboard/pkg/dashboard"
)

// startDashboard mounts the operator's page on the admin listener's mux
// and samples the log for its chart until stop is called.
func (s *Server) startDashboard(mux *http.ServeMux) (stop func()) {
	d := dashboard.New(dashboard.Config{Hub: s.hub, Status: s.dashboardStatus})
	mux.Handle("GET /{$}", d)
	mux.Handle("GET /state.json", d)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { d.Run(ctx) })
	return func() {
		cancel()
		wg.Wait()
	}
}

// dashboardStatus says what the node is, for the operator's page.
func (s *Server) dashboardStatus() dashboard.Status {
	st := dashboard.Status{Name: s.hub.Node(), Started: s.started}
	state := s.state.Load()
	switch {
	case s.member != nil:
		ms, _ := s.member.State()
		st.Role, st.Name, st.Peers = dashboard.RoleMember, s.member.Name(), s.member.Peers()
		st.Cluster = s.cfg.Cluster.Name
		if st.Cluster == "" {
			st.Cluster = cluster.DefaultName
		}
		st.State, st.Detail = "ready", ""
		if !ms.Ready() {
			st.State, st.Detail = "not ready", ms.Reason
		}
	case s.standby != nil:
		st.Role = dashboard.RoleStandby
		following := s.standby.link.Following()
		st.LogShared = &following
		if p := s.standby.link.Primary(); p != "" {
			st.Peers = []string{p}
		}
		switch state {
		case stateActive:
			st.State, st.Detail = "active", "the primary is unavailable: serving in its place"
		case statePassive:
			st.State, st.Detail = "passive", "the primary is serving"
		default:
			st.State, st.Detail = "checking", "checking the primary"
		}
	default:
		st.Role, st.State = dashboard.RoleSingle, "active"
		if st.Peers = s.pair.Standbys(); len(st.Peers) > 0 || s.cfg.StandbyWait > 0 {
			st.Role = dashboard.RolePrimary
			following := s.hub.Following()
			st.LogShared = &following
		}
		if state == stateSyncing {
			st.State, st.Detail = "syncing", "taking the message log from the standby"
		}
	}
	switch {
	case s.hub.Draining():
		st.State, st.Detail = "draining", "shutting down"
	case !s.ready.Load():
		st.State, st.Detail = "starting", ""
	}
	st.Serving = s.ready.Load() && !s.hub.Draining() && state == stateActive
	return st
}
