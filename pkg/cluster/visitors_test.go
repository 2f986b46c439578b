package cluster

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/hub"
)

func wantOnline(t *testing.T, what, channel string, want hub.Online, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, fmt.Sprintf("%s: %s to count %+v in %q (has %+v)", what, n.member.Name(), want, channel, n.hub.Online(channel)),
			func() bool { return n.hub.Online(channel) == want })
	}
}

// TestVisitorsAcrossMembers: a visitor with tabs on two members counts
// once on every member, and once still when the member holding one tab
// is killed.
func TestVisitorsAcrossMembers(t *testing.T) {
	url, _, _ := startNATS(t)
	a, b, c := joinNode(t, url, "a", hub.Config{}), joinNode(t, url, "b", hub.Config{}), joinNode(t, url, "c", hub.Config{})
	_, ra := connect(t, a.hub, hub.Start{Visitor: "alice", Channels: []string{"q"}})
	connect(t, a.hub, hub.Start{Visitor: "alice"})
	connect(t, b.hub, hub.Start{Visitor: "alice", Channels: []string{"q"}})
	connect(t, c.hub, hub.Start{Visitor: "bob", Channels: []string{"q"}})
	connect(t, c.hub, hub.Start{})
	all := []*node{a, b, c}
	wantOnline(t, "tabs on two members", "", hub.Online{Connections: 5, Visitors: 3}, all...)
	wantOnline(t, "tabs on two members", "q", hub.Online{Connections: 3, Visitors: 2}, all...)
	waitFor(t, "a's browser to show 3 visitors", func() bool {
		ra.mu.Lock()
		defer ra.mu.Unlock()
		last := ra.frames[len(ra.frames)-1]
		return last["type"] == "count" && last["visitors"] == 3.0
	})
	if page, _ := c.hub.Presence("", "", 10); !slices.Equal(page, []hub.Visit{{Visitor: "alice", Connections: 3}, {Visitor: "bob", Connections: 1}}) {
		t.Errorf("presence on c: got %v; want alice with 3 connections, bob with 1", page)
	}

	// b is killed (falls silent): alice keeps her tabs on a, counted once.
	b.member.exchangeOf().stopSending()
	wantOnline(t, "b killed", "", hub.Online{Connections: 4, Visitors: 3}, a, c)
	wantOnline(t, "b killed", "q", hub.Online{Connections: 2, Visitors: 2}, a, c)
	if page, _ := c.hub.Presence("q", "", 10); !slices.Equal(page, []hub.Visit{{Visitor: "alice", Connections: 1}, {Visitor: "bob", Connections: 1}}) {
		t.Errorf("presence of q on c after b's death: got %v; want alice and bob, 1 connection each", page)
	}
}

// TestLateMemberTakesTheWholeSet: a member that joins after the others
// asks for their visitors, more than one message holds, and counts them
// exactly; changes after that arrive as changes.
func TestLateMemberTakesTheWholeSet(t *testing.T) {
	url, _, _ := startNATS(t)
	a := joinNode(t, url, "a", hub.Config{})
	const many = 2*chunkVisitors + 10
	var clients []*hub.Client
	for i := range many {
		cl, _ := connect(t, a.hub, hub.Start{Visitor: fmt.Sprint("v", i%(many-5)), Channels: []string{"q"}})
		clients = append(clients, cl)
	}
	b := joinNode(t, url, "b", hub.Config{})
	wantOnline(t, "b joined", "", hub.Online{Connections: many, Visitors: many - 5}, b)
	wantOnline(t, "b joined", "q", hub.Online{Connections: many, Visitors: many - 5}, b)
	for _, cl := range clients[:100] {
		cl.Close()
	}
	wantOnline(t, "100 left", "", hub.Online{Connections: many - 100, Visitors: many - 100}, b)
}

// TestLostVisitorChangeIsMended: a member that misses a message with
// visitors asks for the whole set and ends exact.
func TestLostVisitorChangeIsMended(t *testing.T) {
	url, _, _ := startNATS(t)
	a, b := joinNode(t, url, "a", hub.Config{}), joinNode(t, url, "b", hub.Config{})
	connect(t, a.hub, hub.Start{Visitor: "alice"})
	wantOnline(t, "alice", "", hub.Online{Connections: 1, Visitors: 1}, b)

	var lost atomic.Int64
	x := a.member.exchangeOf()
	x.mu.Lock()
	x.lose = func(m countsMsg) bool {
		// Lose the first message that says bob came.
		if len(m.Visitors) > 0 && m.Visitors[0].Visitor == "bob" && lost.Load() == 0 {
			lost.Add(1)
			return true
		}
		return false
	}
	x.mu.Unlock()
	connect(t, a.hub, hub.Start{Visitor: "bob"})
	waitFor(t, "the message to be lost", func() bool { return lost.Load() == 1 })
	time.Sleep(50 * time.Millisecond)
	connect(t, a.hub, hub.Start{Visitor: "carol"}) // its message shows b the gap
	wantOnline(t, "mended", "", hub.Online{Connections: 3, Visitors: 3}, b)
}
