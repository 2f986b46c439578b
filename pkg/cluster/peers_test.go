package cluster

import (
	"slices"
	"testing"

	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// TestPeers: a member knows the others it hears from by name, idle ones
// included (they are in no count), and forgets one that leaves.
func TestPeers(t *testing.T) {
	url, _, _ := startNATS(t)
	a := joinNode(t, url, "a", hub.Config{})
	b := joinNode(t, url, "b", hub.Config{})
	joinNode(t, url, "c", hub.Config{})
	if got := a.member.Name(); got != "a" {
		t.Errorf("Name: got %q; want a", got)
	}
	waitFor(t, "a to hear b and c", func() bool { return slices.Equal(a.member.Peers(), []string{"b", "c"}) })
	if n := len(a.hub.RemoteCounts()); n != 0 {
		t.Errorf("idle members in a's remote counts: got %d; want none (Peers is what names them)", n)
	}
	b.close()
	waitFor(t, "a to forget b", func() bool { return slices.Equal(a.member.Peers(), []string{"c"}) })
}
