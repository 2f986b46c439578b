package pair

import (
	"slices"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/hub"
)

// TestPeerNames: each side of a pair names the other while the standby
// follows, idle as the passive standby is (it is in no count), and
// neither does once the session ends.
func TestPeerNames(t *testing.T) {
	p := startPrimary(t, hub.Config{CountInterval: 10 * time.Millisecond})
	if got := p.svc.Standbys(); len(got) != 0 {
		t.Errorf("Standbys with none: got %q; want none", got)
	}
	sb := startStandby(t, p, false)
	waitFor(t, "the standby to follow", func() bool { return sb.link.Following() })
	if got, want := sb.link.Primary(), p.hub.Node(); got != want {
		t.Errorf("Primary: got %q; want %q", got, want)
	}
	if got, want := p.svc.Standbys(), []string{sb.hub.Node()}; !slices.Equal(got, want) {
		t.Errorf("Standbys: got %q; want %q", got, want)
	}
	if n := len(p.hub.RemoteCounts()); n != 0 {
		t.Errorf("the idle standby in the primary's remote counts: got %d; want none", n)
	}
	sb.stopLink()
	waitFor(t, "the primary to forget the standby", func() bool { return len(p.svc.Standbys()) == 0 })
	if got := sb.link.Primary(); got != "" {
		t.Errorf("Primary after the session: got %q; want none", got)
	}
}
