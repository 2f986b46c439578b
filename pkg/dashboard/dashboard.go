// Package dashboard serves a node's operator's page: what the node is and
// does, the members of its pair or cluster and their connections, the
// message log's position, and the messages per second over the last ten
// minutes. The page (GET /) is one HTML file with its CSS and JavaScript
// inline, which polls GET /state.json every second.
//
// It names members and channels: mount it on the admin listener only.
package dashboard

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// Role is what a node is to the others.
type Role string

// The roles of a node.
const (
	// RoleSingle is a node on its own.
	RoleSingle Role = "single"
	// RolePrimary is the primary of a pair.
	RolePrimary Role = "primary"
	// RoleStandby is the standby of a pair.
	RoleStandby Role = "standby"
	// RoleMember is a member of a cluster.
	RoleMember Role = "member"
)

// Status is what a node says of itself; the hub tells the rest.
type Status struct {
	// Name names the node as the other nodes name it in their counts: its
	// member name in a cluster, its hub's node otherwise.
	Name string
	// Role is what the node is to the others.
	Role Role
	// Cluster is the cluster's name, for a member.
	Cluster string
	// State is the node's state in a word or two, such as "active",
	// "passive", "ready" or "not ready".
	State string
	// Serving reports whether the node takes browsers and emits.
	Serving bool
	// Detail says why the node is in its state, when it is not plain
	// serving: "the primary is serving", the reason a member is not ready.
	Detail string
	// LogShared, on a pair's node, reports whether the pair shares the
	// log right now; nil elsewhere.
	LogShared *bool
	// Peers names the other nodes known to be there, with or without
	// connections: a pair's other node, a cluster's other members.
	Peers []string
	// Started is when the node started.
	Started time.Time
}

// Config configures a Dashboard.
type Config struct {
	// Hub is the node's hub. Required.
	Hub *hub.Hub
	// Status says what the node is, at each request. Default: a single
	// node named after its hub, active.
	Status func() Status
}

// Dashboard serves the operator's page and samples the log's position for
// its chart (see Run).
type Dashboard struct {
	hub    *hub.Hub
	status func() Status
	mux    *http.ServeMux

	mu   sync.Mutex
	rate rate
}

// New returns the dashboard of cfg.Hub.
func New(cfg Config) *Dashboard {
	d := &Dashboard{hub: cfg.Hub, status: cfg.Status, mux: http.NewServeMux()}
	if d.status == nil {
		started := time.Now()
		d.status = func() Status {
			return Status{Name: d.hub.Node(), Role: RoleSingle, State: "active", Serving: true, Started: started}
		}
	}
	d.mux.HandleFunc("GET /{$}", d.servePage)
	d.mux.HandleFunc("GET /state.json", d.serveState)
	return d
}

// ServeHTTP serves the page at / and its data at /state.json; anything
// else is 404.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) { d.mux.ServeHTTP(w, r) }

// Run samples the log's position once a second, for the chart of
// messages per second, until ctx ends.
func (d *Dashboard) Run(ctx context.Context) {
	t := time.NewTicker(sampleInterval)
	defer t.Stop()
	d.sample(time.Now())
	for {
		select {
		case now := <-t.C:
			d.sample(now)
		case <-ctx.Done():
			return
		}
	}
}

func (d *Dashboard) sample(now time.Time) {
	pos := d.hub.Position()
	d.mu.Lock()
	d.rate.add(now, pos.Epoch, pos.Offset)
	d.mu.Unlock()
}

//go:embed page.html
var page []byte

// pagePolicy lets the page run its own inline script and style and fetch
// from its own origin, and nothing else: no outside asset, no framing.
const pagePolicy = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (d *Dashboard) servePage(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pagePolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	w.Write(page)
}

func (d *Dashboard) serveState(w http.ResponseWriter, _ *http.Request) {
	b, err := json.Marshal(d.state(time.Now()))
	if err != nil {
		http.Error(w, "failed to encode the state: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.Write(b)
}

// topChannels is how many channels the state lists by name.
const topChannels = 10

// state is the document at /state.json.
type state struct {
	TimeMS        int64      `json:"time_ms"`
	Node          nodeState  `json:"node"`
	Connections   both       `json:"connections"`
	Visitors      int64      `json:"visitors"`
	Channels      both       `json:"channels"`
	Subscriptions both       `json:"subscriptions"`
	Members       []member   `json:"members"`
	TopChannels   []channel  `json:"top_channels"`
	Log           logState   `json:"log"`
	Rate          rateSeries `json:"rate"`
}

type nodeState struct {
	Name      string `json:"name"`
	Role      Role   `json:"role"`
	Cluster   string `json:"cluster,omitempty"`
	State     string `json:"state"`
	Serving   bool   `json:"serving"`
	Detail    string `json:"detail,omitempty"`
	LogShared *bool  `json:"log_shared,omitempty"`
	UptimeS   int64  `json:"uptime_s"`
}

// both is a number on this node, and in all the nodes it counts with
// (its pair, its cluster).
type both struct {
	Node int64 `json:"node"`
	All  int64 `json:"all"`
}

type member struct {
	Name          string `json:"name"`
	Role          Role   `json:"role"`
	Self          bool   `json:"self,omitempty"`
	Connections   int64  `json:"connections"`
	Channels      int64  `json:"channels"`
	Subscriptions int64  `json:"subscriptions"`
}

type channel struct {
	Name        string `json:"name"`
	Subscribers int64  `json:"subscribers"`
}

type logState struct {
	Epoch           string `json:"epoch"`
	Offset          uint64 `json:"offset"`
	HistoryMessages int    `json:"history_messages"`
	HistoryBytes    int    `json:"history_bytes"`
}

// state gathers the document at now.
func (d *Dashboard) state(now time.Time) state {
	st := d.status()
	local := d.hub.LocalCounts()
	remote := d.hub.RemoteCounts()
	pos := d.hub.Position()
	msgs, bytes := d.hub.HistoryStats()

	s := state{
		TimeMS: now.UnixMilli(),
		Node: nodeState{
			Name: st.Name, Role: st.Role, Cluster: st.Cluster, State: st.State,
			Serving: st.Serving, Detail: st.Detail, LogShared: st.LogShared,
			UptimeS: int64(now.Sub(st.Started) / time.Second),
		},
		Log: logState{Epoch: pos.Epoch, Offset: pos.Offset, HistoryMessages: msgs, HistoryBytes: bytes},
	}

	self := memberOf(local, st.Role)
	self.Name, self.Self = st.Name, true
	s.Members = []member{self}
	byName := make(map[string]hub.Counts, len(remote)+len(st.Peers))
	for _, p := range st.Peers {
		byName[p] = hub.Counts{Node: p}
	}
	for _, c := range remote {
		byName[c.Node] = c
	}
	delete(byName, st.Name)
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		s.Members = append(s.Members, memberOf(byName[name], peerRole(st.Role)))
	}

	all := maps.Clone(local.Channels)
	for _, c := range remote {
		for ch, n := range c.Channels {
			all[ch] += n
		}
	}
	online := d.hub.Online("")
	s.Connections = both{Node: local.Total, All: online.Connections}
	s.Visitors = online.Visitors
	s.Channels = both{Node: self.Channels, All: int64(len(all))}
	s.Subscriptions.Node = self.Subscriptions
	for _, n := range all {
		s.Subscriptions.All += n
	}
	s.TopChannels = top(all, topChannels)

	d.mu.Lock()
	s.Rate = d.rate.series()
	d.mu.Unlock()
	return s
}

// memberOf is the row of a node whose counts are c.
func memberOf(c hub.Counts, role Role) member {
	m := member{Name: c.Node, Role: role, Connections: c.Total, Channels: int64(len(c.Channels))}
	for _, n := range c.Channels {
		m.Subscriptions += n
	}
	return m
}

// peerRole is the role of the other nodes a node of role r counts with.
func peerRole(r Role) Role {
	switch r {
	case RolePrimary:
		return RoleStandby
	case RoleStandby:
		return RolePrimary
	}
	return r
}

// top returns the n channels with the most subscribers, the most first,
// ties by name.
func top(counts map[string]int64, n int) []channel {
	out := make([]channel, 0, len(counts))
	for name, c := range counts {
		out = append(out, channel{Name: name, Subscribers: c})
	}
	slices.SortFunc(out, func(a, b channel) int {
		return cmp.Or(cmp.Compare(b.Subscribers, a.Subscribers), cmp.Compare(a.Name, b.Name))
	})
	return out[:min(n, len(out))]
}
