package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-rt/switchboard/gen/switchboard/v1"
	"github.com/switchboard-rt/switchboard/internal/natstest"
	"github.com/switchboard-rt/switchboard/pkg/cluster"
)

func clusterNode(t testing.TB, url, member string) *node {
	t.Helper()
	return startNode(t, Config{Cluster: cluster.Config{URLs: []string{url}, Name: "servertest", Member: member}})
}

// TestClusterOfThree runs three members on one NATS: browsers on every
// member, emits through every member; one order, exact counts everywhere;
// a member that stops leaves every count at once.
func TestClusterOfThree(t *testing.T) {
	t.Parallel()
	nats := natstest.StartEmbedded(t)
	nodes := []*node{clusterNode(t, nats.URL(), "a"), clusterNode(t, nats.URL(), "b"), clusterNode(t, nats.URL(), "c")}
	var browsers []*browser
	for _, n := range nodes {
		for range 3 {
			browsers = append(browsers, n.dialReading(t))
		}
	}
	for _, n := range nodes {
		n.waitCount(t, "", 9)
	}
	for _, b := range browsers {
		b.waitCount(t, 9)
	}
	var last *switchboardv1.EmitMessageResponse
	for i := range 12 {
		last = nodes[i%3].emit(t, &switchboardv1.EmitMessageRequest{Event: fmt.Sprint("E", i)})
		if last.GetRecipients() != 9 {
			t.Errorf("emit %d: got %d recipients; want the cluster's 9", i, last.GetRecipients())
		}
	}
	want := ids(browsers[0].waitMessage(t, last.GetId()))
	if len(want) != 12 {
		t.Fatalf("browser 0 got %d messages; want 12", len(want))
	}
	for i, b := range browsers[1:] {
		if got := ids(b.waitMessage(t, last.GetId())); !slices.Equal(got, want) {
			t.Errorf("browser %d: got %v; want %v, the same order as browser 0", i+1, got, want)
		}
	}
	if m := nodes[0].metrics(t); !strings.Contains(m, "\nswitchboard_cluster_ready 1\n") || !strings.Contains(m, "\nswitchboard_nodes 2\n") {
		t.Errorf("/metrics of a member: want switchboard_cluster_ready 1 and switchboard_nodes 2; got\n%s", grepLines(m, "switchboard_cluster", "switchboard_nodes"))
	}
	nodes[2].stop(t)
	start := time.Now()
	nodes[0].waitCount(t, "", 6)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a stopped member left the count after %v; want within about a second", took)
	}
}

// TestClusterMemberLosesNATS: a member that loses NATS says NOT_SERVING
// and refuses upgrades and emits, keeps its browsers, and when NATS is
// back serves again and delivers what its browsers missed.
func TestClusterMemberLosesNATS(t *testing.T) {
	t.Parallel()
	nats := natstest.StartEmbedded(t)
	n := clusterNode(t, nats.URL(), "solo")
	b := n.dialReading(t)
	first := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "before"})
	b.waitMessage(t, first.GetId())

	nats.Stop()
	start := time.Now()
	eventually(t, waitTimeout, func() (bool, string) {
		code, body := n.readyz()
		return code == http.StatusServiceUnavailable && strings.Contains(body, "NATS"), fmt.Sprintf("GET /readyz: %d %q", code, body)
	})
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("not ready %v after NATS went; want within 3 s", took)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := n.api.EmitMessage(ctx, &switchboardv1.EmitMessageRequest{Event: "lost"}); status.Code(err) != codes.Unavailable {
		t.Errorf("EmitMessage without NATS: got %v; want UNAVAILABLE", err)
	}
	if _, resp, err := dialBrowser(ctx, n.hc, n.ws, nil); resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("upgrade without NATS: got %v, %v; want 503", resp, err)
	}
	if err := b.readErr(); err != nil {
		t.Errorf("the browser it had: %v; want still connected", err)
	}

	nats.Start()
	eventually(t, waitTimeout, func() (bool, string) {
		code, body := n.readyz()
		return code == http.StatusOK, fmt.Sprintf("GET /readyz: %d %q", code, body)
	})
	after := n.emit(t, &switchboardv1.EmitMessageRequest{Event: "after"})
	if got := ids(b.waitMessage(t, after.GetId())); !slices.Equal(got, []string{first.GetId(), after.GetId()}) {
		t.Errorf("messages across the outage: got %v; want the two, once each", got)
	}
}

func TestClusterExcludesAPrimary(t *testing.T) {
	t.Parallel()
	_, err := New(Config{HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", PrimaryAddr: "127.0.0.1:1",
		Cluster: cluster.Config{URLs: []string{"nats://127.0.0.1:1"}}, Logger: testLogger(t, 0)})
	if err == nil || !strings.Contains(err.Error(), "exclude each other") {
		t.Errorf("New with a primary and NATS: got %v; want a refusal", err)
	}
}
