package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/browsersim"
	"github.com/switchboard-rt/switchboard/pkg/client"
)

// evictionLimit is how soon a killed node's browsers must leave every
// count (CONTRACT.md, "Cluster mode").
const evictionLimit = 3 * time.Second

// TestKillNode: kill -9 of a node. Its browsers leave every count within
// 3 s; they reconnect through nginx to the other nodes and resume there
// with nothing missed, and the messages emitted meanwhile (through nginx,
// retried as pkg/client does) reach every browser exactly once, in one
// order.
func TestKillNode(t *testing.T) {
	const n = 300
	d := startDeployment(t, options{})
	f := browsersim.Start(t, n, d.wsURL(), d.origin())
	d.waitCounts(t, "before the kill", n, f.Timeout)
	f.WaitCounts(t, "before the kill", n)
	victim, survivors := d.nodes[2], d.nodes[:2]
	held := victim.local()
	each, _ := d.locals()
	t.Logf("%d browsers on the nodes: %s", n, joinInts(each))
	f.ResetStats()

	stopEmitting := startEmitting(d.api, "during the kill", 50*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	killed := victim.kill()
	evicted := waitEvicted(t, survivors, f.Timeout)
	t.Logf("kill -9 of %s (%d browsers) -> every count without them: %v", victim.name, held, (evicted).Round(time.Millisecond))
	if evicted > evictionLimit {
		t.Errorf("the killed node's browsers left the counts %v after the kill; want within %v", evicted, evictionLimit)
	}
	d.waitCounts(t, "after the kill", n, f.Timeout)
	f.WaitCounts(t, "after the kill", n)
	t.Logf("kill -9 -> every node counts %d and every browser shows it: %v", n, time.Since(killed).Round(time.Millisecond))
	durations, _ := f.ReconnectStats()
	t.Logf("%d reconnects: p50 %v, p99 %v; close codes %v (-1: none)", len(durations),
		browsersim.Percentile(durations, 50).Round(time.Millisecond), browsersim.Percentile(durations, 99).Round(time.Millisecond), f.CloseCodes())
	if int64(len(durations)) < held {
		t.Errorf("%d reconnects; want at least the %d browsers the killed node held", len(durations), held)
	}
	time.Sleep(500 * time.Millisecond)
	emits := stopEmitting()

	checkEmits(t, f, emits)
	tot := f.Totals()
	t.Logf("%d resumes, %d not recovered, %d out of order", tot.Resumes, tot.Lost, tot.OutOfOrder)
	if int64(tot.Resumes) < held {
		t.Errorf("%d resumes; want at least %d (every browser of the killed node)", tot.Resumes, held)
	}
	if tot.Lost > 0 || tot.OutOfOrder > 0 {
		t.Errorf("%d resumes did not recover and %d messages came out of order; want none", tot.Lost, tot.OutOfOrder)
	}
}

// waitEvicted waits until no node of survivors counts browsers that none
// of them holds (those of a node that died), and returns how long that
// took.
func waitEvicted(t testing.TB, survivors []*node, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	held := func() int64 {
		var sum int64
		for _, s := range survivors {
			sum += s.local()
		}
		return sum
	}
	for {
		// The browsers the survivors hold grow while the dead node's
		// reconnect: read them before and after the counts.
		lo := held()
		var counts []int64
		for _, s := range survivors {
			counts = append(counts, s.count())
		}
		hi := held()
		ok := true
		for _, c := range counts {
			ok = ok && c >= min(lo, hi) && c <= max(lo, hi)
		}
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("the survivors count %v and hold %d..%d browsers after %v", counts, lo, hi, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// emitted is one emit of startEmitting.
type emitted struct {
	text string
	res  client.EmitResult
	err  error
	took time.Duration
}

// startEmitting emits a new text through c every interval until the
// returned function is called; that function waits for the emits in
// flight and returns them all. Each emit retries as pkg/client does.
func startEmitting(c *client.Client, prefix string, interval time.Duration) (stop func() []*emitted) {
	var (
		mu      sync.Mutex
		all     []*emitted
		done    = make(chan struct{})
		stopped = make(chan struct{})
	)
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		var inflight sync.WaitGroup
		defer inflight.Wait()
		for i := 0; ; i++ {
			e := &emitted{text: fmt.Sprintf("%s %d", prefix, i)}
			mu.Lock()
			all = append(all, e)
			mu.Unlock()
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				defer cancel()
				start := time.Now()
				e.res, e.err = c.Emit(ctx, "ShowMessage", map[string]string{"text": e.text})
				e.took = time.Since(start)
			}()
			select {
			case <-stopped:
				return
			case <-tick.C:
			}
		}
	}()
	return func() []*emitted {
		close(stopped)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return all
	}
}

// checkEmits checks that every emit was acknowledged and reached every
// browser that has not left exactly once, under one id, all in one order.
func checkEmits(t testing.TB, f *browsersim.Fleet, emits []*emitted) {
	t.Helper()
	clients := f.Active()
	ids := map[string]bool{}
	var slowest time.Duration
	var newest client.EmitResult
	for _, e := range emits {
		if e.err != nil {
			t.Errorf("emit %q: %v; want it acknowledged (pkg/client retries UNAVAILABLE)", e.text, e.err)
			continue
		}
		ids[e.res.ID] = true
		slowest = max(slowest, e.took)
		if e.res.Offset > newest.Offset {
			newest = e.res
		}
	}
	if len(ids) == 0 {
		t.Fatal("no emit was acknowledged")
	}
	f.WaitFramesOf(t, "the newest emit", clients, newest.ID)
	time.Sleep(300 * time.Millisecond) // room for a duplicate to show up
	got := sameOrder(t, clients, ids)
	for _, e := range emits {
		copies := 0
		for _, c := range clients {
			if n := c.TextCopies(e.text); n > 1 {
				copies++
			}
		}
		if copies > 0 {
			t.Errorf("%d clients got %q under more than one id; want one", copies, e.text)
		}
	}
	t.Logf("%d emits, %d acknowledged, slowest %v: every one of %d browsers got each once, in one order (%d)", len(emits), len(ids), slowest.Round(time.Millisecond), len(clients), got)
}
