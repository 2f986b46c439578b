package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/natstest"
	"github.com/switchboard-rt/switchboard/pkg/dashboard"
)

// TestDashboardOnTheAdminListenerOnly: the operator's page and its state
// are served on the admin listener, never on the public one.
func TestDashboardOnTheAdminListenerOnly(t *testing.T) {
	t.Parallel()
	n := startNode(t, Config{AdminAddr: "127.0.0.1:0"})
	admin := "http://" + n.srv.AdminAddr()
	res, err := n.hc.Get(admin + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "state.json") {
		t.Errorf("GET / on the admin listener: got %d %q; want the page", res.StatusCode, res.Header.Get("Content-Type"))
	}

	n.dialReading(t)
	eventually(t, waitTimeout, func() (bool, string) {
		var s struct {
			Node struct {
				Role    string `json:"role"`
				State   string `json:"state"`
				Serving bool   `json:"serving"`
			} `json:"node"`
			Connections struct {
				All int64 `json:"all"`
			} `json:"connections"`
		}
		res, err := n.hc.Get(admin + "/state.json")
		if err != nil {
			return false, err.Error()
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if err := json.Unmarshal(b, &s); err != nil {
			return false, fmt.Sprintf("GET /state.json: %d %s: %v", res.StatusCode, b, err)
		}
		return s.Node.Role == "single" && s.Node.State == "active" && s.Node.Serving && s.Connections.All == 1,
			fmt.Sprintf("GET /state.json: %s; want a single node, active, serving, one connection", b)
	})

	for _, path := range []string{"/", "/state.json"} {
		if code, err := n.get(path); err != nil || code != http.StatusNotFound {
			t.Errorf("GET %s on the public listener: got %d, %v; want 404", path, code, err)
		}
	}
}

// waitStatus waits until the node's status for its page satisfies ok.
func waitStatus(t testing.TB, s *Server, what string, ok func(dashboard.Status) bool) dashboard.Status {
	t.Helper()
	var st dashboard.Status
	eventually(t, waitTimeout, func() (bool, string) {
		st = s.dashboardStatus()
		return ok(st), fmt.Sprintf("status %+v; want %s", st, what)
	})
	return st
}

func shared(st dashboard.Status) bool { return st.LogShared != nil && *st.LogShared }

func TestDashboardStatusOfAPair(t *testing.T) {
	t.Parallel()
	primary := startNode(t, Config{})
	standby := startNode(t, Config{PrimaryAddr: primary.srv.GRPCAddr()})
	p, s := primary.srv.hub.Node(), standby.srv.hub.Node()

	waitStatus(t, standby.srv, "a passive standby following the primary", func(st dashboard.Status) bool {
		return st.Role == dashboard.RoleStandby && st.State == "passive" && !st.Serving && st.Detail == "the primary is serving" &&
			shared(st) && slices.Equal(st.Peers, []string{p}) && st.Name == s
	})
	waitStatus(t, primary.srv, "an active primary whose standby follows", func(st dashboard.Status) bool {
		return st.Role == dashboard.RolePrimary && st.State == "active" && st.Serving && shared(st) && slices.Equal(st.Peers, []string{s}) && st.Name == p
	})

	primary.stop(t)
	waitStatus(t, standby.srv, "an active standby serving alone", func(st dashboard.Status) bool {
		return st.Role == dashboard.RoleStandby && st.State == "active" && st.Serving && strings.Contains(st.Detail, "primary is unavailable") &&
			!shared(st) && len(st.Peers) == 0
	})
}

// TestDashboardStatusWhileSyncing: a primary waiting for its standby's
// log says so, and is a primary, with no standby following, once it
// serves alone.
func TestDashboardStatusWhileSyncing(t *testing.T) {
	t.Parallel()
	n := runNodeAsync(t, Config{StandbyWait: 2 * time.Second})
	waitStatus(t, n, "a primary syncing", func(st dashboard.Status) bool {
		return st.Role == dashboard.RolePrimary && st.State == "syncing" && !st.Serving && st.Detail == "taking the message log from the standby"
	})
	waitStatus(t, n, "a primary serving alone", func(st dashboard.Status) bool {
		return st.Role == dashboard.RolePrimary && st.State == "active" && st.Serving && st.LogShared != nil && !*st.LogShared && len(st.Peers) == 0
	})
}

// runNodeAsync runs a node from cfg until the test ends, without waiting
// for it to be ready.
func runNodeAsync(t testing.TB, cfg Config) *Server {
	t.Helper()
	srv := newNode(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return srv
}

func TestDashboardStatusOfAMember(t *testing.T) {
	t.Parallel()
	nats := natstest.StartEmbedded(t)
	a := clusterNode(t, nats.URL(), "a")
	clusterNode(t, nats.URL(), "b")
	waitStatus(t, a.srv, "member a of servertest, ready, hearing b", func(st dashboard.Status) bool {
		return st.Role == dashboard.RoleMember && st.Name == "a" && st.Cluster == "servertest" && st.State == "ready" && st.Serving &&
			slices.Equal(st.Peers, []string{"b"}) && st.LogShared == nil
	})
	nats.Stop()
	waitStatus(t, a.srv, "member a not ready for want of NATS", func(st dashboard.Status) bool {
		return st.State == "not ready" && !st.Serving && strings.Contains(st.Detail, "NATS")
	})
	nats.Start()
	waitStatus(t, a.srv, "member a ready again", func(st dashboard.Status) bool {
		return st.State == "ready" && st.Serving && st.Detail == ""
	})
}
