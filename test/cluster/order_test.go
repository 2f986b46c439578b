package cluster

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/browsersim"
	"github.com/switchboard-rt/switchboard/pkg/client"
)

// TestOneOrder: emits through every node and through nginx, many at once:
// every browser, whichever node holds it, gets each message exactly once,
// and all in the same order, the log's (ascending offsets). A retry with
// the same idempotency key on another node is a duplicate that nobody
// receives twice.
func TestOneOrder(t *testing.T) {
	const n = 300
	d := startDeployment(t, options{})
	f := browsersim.Start(t, n, d.wsURL(), d.origin())
	d.waitCounts(t, "at the start", n, f.Timeout)
	each, _ := d.locals()
	t.Logf("%d browsers on the nodes: %s", n, joinInts(each))

	// Four callers per node and two through nginx, five emits each, all
	// at once.
	type emitted struct {
		via string
		res client.EmitResult
		err error
	}
	var (
		mu   sync.Mutex
		all  []emitted
		wg   sync.WaitGroup
		apis = map[string]*client.Client{"nginx": d.api}
	)
	for _, nd := range d.nodes {
		apis[nd.name] = nd.api
	}
	start := make(chan struct{})
	for via, api := range apis {
		callers := 4
		if via == "nginx" {
			callers = 2
		}
		for c := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := range 5 {
					ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
					res, err := api.Emit(ctx, "ShowMessage", map[string]string{"text": fmt.Sprintf("%s caller %d emit %d", via, c, i)})
					cancel()
					mu.Lock()
					all = append(all, emitted{via, res, err})
					mu.Unlock()
				}
			}()
		}
	}
	began := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d emits through 3 nodes and nginx, 14 callers at once: %v", len(all), time.Since(began).Round(time.Millisecond))

	ids := map[string]bool{}
	offsets := map[uint64]string{}
	for _, e := range all {
		if e.err != nil {
			t.Fatalf("emit through %s: %v", e.via, e.err)
		}
		if e.res.Duplicate {
			t.Errorf("emit through %s: duplicate %+v; want a new message", e.via, e.res)
		}
		if other, ok := offsets[e.res.Offset]; ok {
			t.Errorf("offset %d given to %s and %s", e.res.Offset, other, e.res.ID)
		}
		offsets[e.res.Offset] = e.res.ID
		ids[e.res.ID] = true
	}
	slices.SortFunc(all, func(a, b emitted) int { return cmp.Compare(a.res.Offset, b.res.Offset) })
	last := all[len(all)-1].res.ID
	f.WaitFrames(t, "the last emit", last)
	time.Sleep(300 * time.Millisecond) // room for a duplicate to show up
	if got := sameOrder(t, f.Clients, ids); got != len(ids) {
		t.Fatalf("clients got %d messages in one order; want %d", got, len(ids))
	}
	// That one order is the log's.
	byOffset := make([]string, len(all))
	for i, e := range all {
		byOffset[i] = e.res.ID
	}
	var ref []string
	for _, id := range f.Clients[0].Order() {
		if ids[id] {
			ref = append(ref, id)
		}
	}
	if !slices.Equal(ref, byOffset) {
		t.Errorf("browsers' order is not the log's (by offset):\n got %v\nwant %v", browsersim.Head(ref, 10), browsersim.Head(byOffset, 10))
	}
	if tot := f.Totals(); tot.OutOfOrder > 0 {
		t.Errorf("%d messages arrived with an offset not past the newest seen; want none", tot.OutOfOrder)
	}
	t.Logf("all %d browsers got the %d messages once each, in the log's order (offsets %d to %d)", n, len(ids), all[0].res.Offset, all[len(all)-1].res.Offset)

	// An emit whose answer was lost is retried on another node with its
	// key: the cluster's log holds it once.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	first, err := d.nodes[0].api.Emit(ctx, "ShowMessage", map[string]string{"text": "retried"}, client.WithIdempotencyKey("order-test-retry"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := d.nodes[2].api.Emit(ctx, "ShowMessage", map[string]string{"text": "retried"}, client.WithIdempotencyKey("order-test-retry"))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Offset != first.Offset || again.ID != first.ID {
		t.Errorf("retry on node3 of node1's emit: got %+v; want a duplicate of %+v", again, first)
	}
	assertOnce(t, f, f.Clients, "an emit retried on another node", first.ID)
}
