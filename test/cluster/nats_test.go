package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/internal/browsersim"
	"github.com/switchboard-rt/switchboard/internal/natstest"
)

// notReadyLimit is how soon a node that lost NATS must say so, with 503
// and NOT_SERVING, so that balancers send new browsers elsewhere.
const notReadyLimit = 3 * time.Second

// TestNATSOutage: the only nats-server is killed (kill -9) and restarted
// on its store. Within 3 s every node answers 503 and NOT_SERVING and
// refuses emits with UNAVAILABLE, so that new browsers and callers go
// nowhere they would be lost; every node keeps its browsers. When NATS is
// back the nodes serve again, every count is right, and no message is
// delivered twice: the emits a web server retried through the outage
// arrive once each, in one order.
func TestNATSOutage(t *testing.T) {
	const n = 300
	d := startDeployment(t, options{singleNATS: true})
	f := browsersim.Start(t, n, d.wsURL(), d.origin())
	d.waitCounts(t, "before the outage", n, f.Timeout)
	before := emit(t, d.api, "before the outage")
	assertOnce(t, f, f.Clients, "an emit before the outage", before.ID)
	heldBefore, _ := d.locals()
	f.ResetStats()

	stopEmitting := startEmitting(d.api, "through the outage", 100*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	nats := d.nats[0]
	killed := nats.Kill()
	down := waitAll(t, d.nodes, "not ready after NATS died", func(nd *node) bool { return !nd.ready() && nd.health() == healthpb.HealthCheckResponse_NOT_SERVING })
	t.Logf("kill -9 of nats-server -> every node 503 and NOT_SERVING: %v", down.Round(time.Millisecond))
	if down > notReadyLimit {
		t.Errorf("nodes took %v to report NOT_SERVING after NATS died; want within %v", down, notReadyLimit)
	}
	for _, nd := range d.nodes {
		if code := nd.rawEmit(t); code != codes.Unavailable {
			t.Errorf("%s: EmitMessage without NATS: got %v; want Unavailable", nd.name, code)
		}
	}
	// A new browser finds no node to take it: nginx answers 503.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, resp, err := websocket.Dial(ctx, d.wsURL(), &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {d.origin()}}})
	cancel()
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a new browser while NATS is away: got %v, %v; want 503 from every node", resp, err)
	}
	// Held out for a while: the nodes keep their browsers, and each
	// counts its own alone once the others' counts went stale.
	time.Sleep(2 * time.Second)
	heldDuring, _ := d.locals()
	t.Logf("during the outage: nodes hold %s (before: %s) and count %s", joinInts(heldDuring), joinInts(heldBefore), joinInts(d.counts()))
	for i := range heldBefore {
		if heldDuring[i] != heldBefore[i] {
			t.Errorf("%s held %d browsers before the outage and %d during it; want them kept", d.nodes[i].name, heldBefore[i], heldDuring[i])
		}
	}
	if codes := f.CloseCodes(); len(codes) > 0 {
		t.Errorf("browsers closed during the outage: %v; want none", codes)
	}

	restarted := time.Now()
	nats.Restart()
	up := waitAll(t, d.nodes, "ready after NATS returned", func(nd *node) bool { return nd.ready() })
	t.Logf("NATS down %v; restart -> every node ready: %v", restarted.Sub(killed).Round(time.Millisecond), up.Round(time.Millisecond))
	d.waitCounts(t, "after the outage", n, f.Timeout)
	f.WaitCounts(t, "after the outage", n)
	t.Logf("restart -> every node counts %d and every browser shows it: %v", n, time.Since(restarted).Round(time.Millisecond))
	time.Sleep(300 * time.Millisecond)
	emits := stopEmitting()
	var slowest time.Duration
	for _, e := range emits {
		slowest = max(slowest, e.took)
	}
	t.Logf("%d emits through the outage; the slowest took %v (retried until NATS was back)", len(emits), slowest.Round(time.Millisecond))

	checkEmits(t, f, emits)
	if got := f.Frames(before.ID); len(got) > 0 {
		for i, k := range got {
			if k != 1 {
				t.Errorf("client %d got the emit from before the outage %d times; want once", i, k)
			}
		}
	}
	after := emit(t, d.api, "after the outage")
	assertOnce(t, f, f.Clients, "an emit after the outage", after.ID)
	if after.Offset <= before.Offset {
		t.Errorf("offset after the outage %d, before %d; want the log continued", after.Offset, before.Offset)
	}
	if tot := f.Totals(); tot.OutOfOrder > 0 {
		t.Errorf("%d messages out of order; want none", tot.OutOfOrder)
	}
}

// TestNATSServerLost: one NATS server of three is killed (kill -9), first
// one that leads neither JetStream's meta layer nor the stream but holds
// members' consumers (an ordered consumer lives on one server), then the
// one that leads the stream. The members whose connection or consumer it
// held move to the others and keep their browsers; the log, with three
// replicas, keeps every message; counts stay right; emits retried
// meanwhile reach every browser once. Losing a follower holds no emit
// and no node up; a member whose consumer it held delivers late until it
// has a new one (measured). Losing the stream's leader holds emits until
// JetStream elects another (its Raft election timeout is 4 to 9 s):
// measured, and what the README states.
func TestNATSServerLost(t *testing.T) {
	const n = 300
	const stream = "SB_switchboard" // the stream of the cluster "switchboard"
	d := startDeployment(t, options{})
	f := browsersim.Start(t, n, d.wsURL(), d.origin())
	d.waitCounts(t, "before", n, f.Timeout)
	f.ResetStats()
	stopEmitting := startEmitting(d.api, "through the loss", 100*time.Millisecond)
	time.Sleep(300 * time.Millisecond)

	lose := func(leader bool) {
		t.Helper()
		meta, lead, consumers := placement(t, d.nats, stream)
		var victim *natstest.Server
		for _, s := range d.nats {
			switch {
			case leader && s.Name == lead:
				victim = s
			case !leader && s.Name != meta && (victim == nil || consumers[s.Name] > consumers[victim.Name]):
				victim = s
			}
		}
		for !leader && victim.Name == lead {
			// The follower to lose leads the stream: hand that on.
			victim.StepDownStream(t, stream)
			meta, lead, consumers = placement(t, d.nats, stream)
		}
		what := fmt.Sprintf("a follower (meta leader %s, stream leader %s)", meta, lead)
		if leader {
			what = fmt.Sprintf("the stream's leader (meta leader %s)", meta)
		}
		held, users := consumers[victim.Name], victim.Clients()
		killed := victim.Kill()
		probe := emit(t, d.api, "right after losing "+victim.Name)
		acked := time.Since(killed)
		f.WaitFrames(t, "an emit right after losing "+victim.Name, probe.ID)
		delivered := time.Since(killed)
		ready := waitAll(t, d.nodes, "ready after losing "+victim.Name, func(nd *node) bool { return nd.ready() })
		d.waitCounts(t, "after losing "+victim.Name, n, f.Timeout)
		f.WaitCounts(t, "after losing "+victim.Name, n)
		t.Logf("kill -9 of %s, %s, holding %d members' consumers and %d connections: an emit made right after it acknowledged %v after the kill and at every browser %v after it; every node ready %v after it, every count %d %v after it",
			victim.Name, what, held, users, acked.Round(time.Millisecond), delivered.Round(time.Millisecond), ready.Round(time.Millisecond), n, time.Since(killed).Round(time.Millisecond))
		if !leader && (acked > notReadyLimit || ready > notReadyLimit) {
			t.Errorf("losing a follower held emits %v and nodes %v; want at most %v", acked, ready, notReadyLimit)
		}
		victim.Restart()
		d.waitCounts(t, "after "+victim.Name+" returned", n, f.Timeout)
	}
	lose(false)
	lose(true)

	time.Sleep(300 * time.Millisecond)
	emits := stopEmitting()
	var slowest time.Duration
	for _, e := range emits {
		slowest = max(slowest, e.took)
	}
	t.Logf("the slowest of %d emits through both losses took %v", len(emits), slowest.Round(time.Millisecond))
	checkEmits(t, f, emits)
	if codes := f.CloseCodes(); len(codes) > 0 {
		t.Errorf("browsers closed: %v; want none (a node keeps its browsers when its NATS server goes)", codes)
	}
	after := emit(t, d.nodes[0].api, "after the NATS servers returned")
	assertOnce(t, f, f.Clients, "an emit after the NATS servers returned", after.ID)
}

// placement returns the names of the NATS servers that lead JetStream's
// meta layer and stream, once all servers agree on both, and how many of
// the stream's consumers each server holds.
func placement(t testing.TB, servers []*natstest.Server, stream string) (meta, lead string, consumers map[string]int) {
	t.Helper()
	start := time.Now()
	for {
		var views []string
		consumers = map[string]int{}
		for _, s := range servers {
			p := s.Placement(stream)
			views = append(views, p.Meta+"/"+p.Stream)
			consumers[s.Name] = p.Consumers
		}
		if m, l, _ := strings.Cut(views[0], "/"); m != "" && l != "" && !slices.ContainsFunc(views, func(v string) bool { return v != views[0] }) {
			return m, l, consumers
		}
		if time.Since(start) > waitTimeout {
			t.Fatalf("the NATS servers name the meta and %s leaders %q; want two they agree on", stream, views)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAll waits until cond holds for every node and returns how long
// that took.
func waitAll(t testing.TB, nodes []*node, what string, cond func(*node) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok := true
		for _, nd := range nodes {
			ok = ok && cond(nd)
		}
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > waitTimeout {
			t.Fatalf("%s: not every node after %v", what, waitTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// health asks the node's gRPC health service for the node's status
// (UNKNOWN when it does not answer).
func (n *node) health() healthpb.HealthCheckResponse_ServingStatus {
	cc, err := grpc.NewClient(n.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return res.GetStatus()
}

// rawEmit makes one EmitMessage call, with no retry, and returns its
// code.
func (n *node) rawEmit(t testing.TB) codes.Code {
	t.Helper()
	cc, err := grpc.NewClient(n.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testToken)
	_, err = switchboardv1.NewSwitchboardServiceClient(cc).EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "ShowMessage"})
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Code()
	}
	return codes.Unknown
}
