package cluster

import (
	"testing"
	"time"
)

// TestStartTogether: three nodes started at once on a NATS cluster that
// has just come up, as `docker compose up` starts them, are all ready
// within a few seconds. They race to make the stream, and JetStream
// leaves some of such concurrent requests unanswered.
func TestStartTogether(t *testing.T) {
	d := startDeployment(t, options{})
	t.Logf("3 nodes started together on a new 3-server NATS cluster: all ready after %v", d.nodesReady.Round(time.Millisecond))
	if limit := 5 * time.Second; d.nodesReady > limit {
		t.Errorf("nodes started together took %v to be ready; want at most %v", d.nodesReady, limit)
	}
	for _, n := range d.nodes {
		if got := n.count(); got != 0 {
			t.Errorf("%s counts %d browsers; want 0", n.name, got)
		}
	}
}
