package cluster

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/browsersim"
)

// TestCountsAgreeWithTruth: 1,000 browsers spread over the three nodes by
// nginx, then random disconnects (tabs closed, tabs that vanish, sockets
// dropped and reconnected) and newcomers: once they settle, every node's
// count, the browsers the nodes hold between them and every browser's
// last count frame are the number of browsers connected.
func TestCountsAgreeWithTruth(t *testing.T) {
	const n = 1000
	// Count frames at most every 250 ms: the fleet reads every frame
	// under the race detector, on the cores the nodes use.
	d := startDeployment(t, options{nodeEnv: []string{"SWITCHBOARD_COUNT_INTERVAL=250ms"}})
	f := browsersim.Start(t, n, d.wsURL(), d.origin())
	took := d.waitCounts(t, "after the start", n, f.Timeout)
	f.WaitCounts(t, "after the start", n)
	each, _ := d.locals()
	t.Logf("%d browsers: every node counts %d %v after the last connected; nginx spread them %s", n, n, took.Round(time.Millisecond), joinInts(each))
	for i, l := range each {
		// least_conn: each node takes about a third.
		if l < n/5 {
			t.Errorf("node%d holds %d of %d browsers; want about a third (least_conn)", i+1, l, n)
		}
	}

	// Churn, at random moments over two seconds: 100 tabs closed (1000),
	// 100 that vanish (no close frame), 100 sockets closed and 100 cut
	// that reconnect, and 100 newcomers.
	rng := rand.New(rand.NewPCG(1, 2))
	perm := rng.Perm(n)
	type change struct {
		at time.Duration
		do func()
	}
	var changes []change
	add := func(do func()) {
		changes = append(changes, change{time.Duration(rng.Int64N(int64(2 * time.Second))), do})
	}
	for i, k := range perm[:400] {
		c := f.Clients[k]
		switch i / 100 {
		case 0:
			add(func() { f.Leave(c, true) })
		case 1:
			add(func() { f.Leave(c, false) })
		case 2:
			add(func() { c.Disconnect(true) })
		case 3:
			add(func() { c.Disconnect(false) })
		}
	}
	for range 100 {
		add(func() { f.Add(browsersim.NewClient(d.wsURL(), d.origin())) })
	}
	start := time.Now()
	slices.SortFunc(changes, func(a, b change) int { return cmp.Compare(a.at, b.at) })
	for _, ch := range changes {
		if d := ch.at - time.Since(start); d > 0 {
			time.Sleep(d)
		}
		ch.do()
	}
	const want = n - 200 + 100
	settled := time.Now()
	f.WaitConnected(t, "after the churn")
	d.waitCounts(t, "after the churn", want, f.Timeout)
	nodesAgree := time.Since(settled)
	f.WaitCounts(t, "after the churn", want)
	browsersAgree := time.Since(settled)
	each, _ = d.locals()
	t.Logf("churn of 500 over 2 s: every node counts %d %v after the last change, every browser shows it %v after it; the nodes hold %s",
		want, nodesAgree.Round(time.Millisecond), browsersAgree.Round(time.Millisecond), joinInts(each))

	// The counts stay right: nothing counted twice or late.
	time.Sleep(time.Second)
	if counts := d.counts(); !allEqual(counts, want) {
		t.Errorf("a second later the nodes count %v; want %d", counts, want)
	}
	if _, sum := d.locals(); sum != want {
		t.Errorf("a second later the nodes hold %d browsers; want %d", sum, want)
	}
	wrong := 0
	for _, c := range f.Active() {
		if c.Count() != want {
			wrong++
		}
	}
	if wrong > 0 {
		t.Errorf("a second later %d browsers show another count than %d", wrong, want)
	}
	t.Logf("%d count frames in all since the start", f.CountFrames())
}

func allEqual(v []int64, want int64) bool {
	for _, n := range v {
		if n != want {
			return false
		}
	}
	return true
}
