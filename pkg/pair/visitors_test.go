package pair

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/hub"
)

func join(t *testing.T, h *hub.Hub, visitor string, channels ...string) *hub.Client {
	t.Helper()
	c, err := h.Connect(&recorder{}, hub.Start{Visitor: visitor, Channels: channels})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestVisitorsCrossTheLink: the pair counts a visitor with tabs on both
// nodes once, through a hand-back and after either node goes, with more
// visitors than one counts message holds.
func TestVisitorsCrossTheLink(t *testing.T) {
	p := startPrimary(t, hub.Config{CountInterval: 10 * time.Millisecond})
	sb := startStandby(t, p, false)
	waitFor(t, "the standby to follow", func() bool { return sb.link.Following() })

	const many = 2500 // past countsVisitors, so the whole set takes several messages
	var onStandby []*hub.Client
	for i := range many {
		onStandby = append(onStandby, join(t, sb.hub, fmt.Sprint("v", i), "q"))
	}
	aliceS := join(t, sb.hub, "alice", "q")
	join(t, sb.hub, "alice")
	join(t, p.hub, "alice", "q")
	join(t, p.hub, "")
	want := func(what string, all, q hub.Online, nodes ...*hub.Hub) {
		t.Helper()
		for _, h := range nodes {
			waitFor(t, fmt.Sprintf("%s: node %s to count %+v and %+v in q (has %+v, %+v)", what, h.Node(), all, q, h.Online(""), h.Online("q")),
				func() bool { return h.Online("") == all && h.Online("q") == q })
		}
	}
	want("both run", hub.Online{Connections: many + 4, Visitors: many + 2}, hub.Online{Connections: many + 2, Visitors: many + 1}, p.hub, sb.hub)

	// A hand-back: every browser on the standby moves to the primary, each
	// opening its new connection before its old one is gone.
	for i, c := range onStandby {
		join(t, p.hub, fmt.Sprint("v", i), "q")
		c.Close()
	}
	join(t, p.hub, "alice", "q")
	aliceS.Close()
	want("handed back", hub.Online{Connections: many + 4, Visitors: many + 2}, hub.Online{Connections: many + 2, Visitors: many + 1}, p.hub, sb.hub)

	// The standby goes: alice keeps her tabs on the primary, counted once.
	sb.stopLink()
	want("the standby gone", hub.Online{Connections: many + 3, Visitors: many + 2}, hub.Online{Connections: many + 2, Visitors: many + 1}, p.hub)
	if page, _ := p.hub.Presence("", "", 1); len(page) != 1 || page[0] != (hub.Visit{Visitor: "alice", Connections: 2}) {
		t.Errorf("presence on the primary: got %v; want alice first, with her 2 connections", page)
	}
}

// TestStandbyTakingOverDropsThePrimarysVisitors: a standby whose primary
// goes counts only its own browsers, each visitor once.
func TestStandbyTakingOverDropsThePrimarysVisitors(t *testing.T) {
	p := startPrimary(t, hub.Config{CountInterval: 10 * time.Millisecond})
	sb := startStandby(t, p, false)
	waitFor(t, "the standby to follow", func() bool { return sb.link.Following() })
	join(t, p.hub, "alice")
	join(t, p.hub, "bob")
	join(t, sb.hub, "alice")
	waitFor(t, "the standby to count 2 visitors", func() bool { return sb.hub.Online("") == hub.Online{Connections: 3, Visitors: 2} })
	p.svc.Stop() // the primary's sessions end, as when it dies
	waitFor(t, "the standby to drop the primary's visitors", func() bool { return sb.hub.Online("") == hub.Online{Connections: 1, Visitors: 1} })
}

func TestMergeCounts(t *testing.T) {
	t.Parallel()
	full := hub.Counts{Total: 2, VisitorsFull: true, Visitors: []hub.VisitorCount{{Visitor: "a", Conns: 1}, {Visitor: "b", Conns: 1}}}
	change := hub.Counts{Total: 3, Visitors: []hub.VisitorCount{{Visitor: "b", Conns: 0}, {Visitor: "c", Conns: 2}}}
	got := mergeCounts(&full, change)
	if !got.VisitorsFull || got.Total != 3 || !slices.Equal(got.Visitors, []hub.VisitorCount{{Visitor: "a", Conns: 1}, {Visitor: "c", Conns: 2}}) {
		t.Errorf("a whole set and a change: got %+v; want the whole set a, c", got)
	}
	got = mergeCounts(&change, hub.Counts{Total: 1, Visitors: []hub.VisitorCount{{Visitor: "c", Conns: 0}, {Visitor: "d", Conns: 1}}})
	if got.VisitorsFull || !slices.Equal(got.Visitors, []hub.VisitorCount{{Visitor: "b"}, {Visitor: "c"}, {Visitor: "d", Conns: 1}}) {
		t.Errorf("two changes: got %+v; want b and c gone, d", got)
	}
	if got := mergeCounts(&change, full); !slices.Equal(got.Visitors, full.Visitors) || !got.VisitorsFull {
		t.Errorf("a change, then a whole set: got %+v; want the whole set", got)
	}
	parts := countsToProto(hub.Counts{Total: 1, VisitorsFull: true, Visitors: make([]hub.VisitorCount, 2*countsVisitors+1)})
	if len(parts) != 3 || !parts[0].GetVisitorsFull() || parts[1].GetVisitorsFull() || len(parts[2].GetVisitors()) != 1 {
		t.Errorf("a large whole set: got %d messages; want 3, the first one whole", len(parts))
	}
}
