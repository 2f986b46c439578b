package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/browsersim"
	"github.com/switchboard-rt/switchboard/pkg/client"
)

// TestTerminateNode: SIGTERM of a node. Each browser it closes leaves
// every count at once (no browser counted twice while it moves), the
// node exits 0, its browsers move to the other nodes and resume there,
// and the messages the web servers emit meanwhile (POSTed through nginx)
// reach every browser exactly once.
func TestTerminateNode(t *testing.T) {
	const n = 300
	// Info logs: a member dropped for silence says so.
	d := startDeployment(t, options{webServers: true, nodeEnv: []string{"SWITCHBOARD_LOG_LEVEL=info"}})
	f := browsersim.Start(t, n, d.wsURL(), d.origin())
	d.waitCounts(t, "before SIGTERM", n, f.Timeout)
	f.WaitCounts(t, "before SIGTERM", n)
	leaving, survivors := d.nodes[1], []*node{d.nodes[0], d.nodes[2]}
	held := leaving.local()
	f.ResetStats()

	stopPosting := d.startPosting("during the drain", 50*time.Millisecond)
	time.Sleep(200 * time.Millisecond)

	// Sample, until the node is gone, how far the survivors' counts are
	// above the browsers all three hold: a browser counted both by the
	// node it left and the one it joined.
	termed := leaving.term()
	var over, samples int64
	for !leaving.proc.Exited() && time.Since(termed) < 12*time.Second {
		before := leaving.local() + survivors[0].local() + survivors[1].local()
		c0, c1 := survivors[0].count(), survivors[1].count()
		after := leaving.local() + survivors[0].local() + survivors[1].local()
		if c0 >= 0 && c1 >= 0 && min(before, after) >= 0 {
			over = max(over, c0-max(before, after), c1-max(before, after))
			samples++
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-leaving.proc.Done():
		if err := leaving.proc.Err(); err != nil {
			t.Errorf("%s after SIGTERM: %v; want exit status 0", leaving.name, err)
		}
	case <-time.After(time.Second):
		t.Fatalf("%s still running 12 s after SIGTERM; want an exit within 10 s", leaving.name)
	}
	exited := time.Since(termed)
	gone := waitEvicted(t, survivors, f.Timeout)
	t.Logf("SIGTERM of %s (%d browsers): exited 0 after %v; the survivors' counts exclude it %v after the exit; while it drained (%d samples) they counted at most %d browsers more than the three nodes held",
		leaving.name, held, exited.Round(time.Millisecond), gone.Round(time.Millisecond), samples, over)
	if limit := int64(n / 20); over > limit {
		t.Errorf("during the drain a survivor counted %d browsers more than the nodes held; want at most %d (each closed browser leaves at once)", over, limit)
	}
	if gone > time.Second {
		t.Errorf("the survivors counted the stopped node's browsers %v after it exited; want at once", gone)
	}
	d.waitCounts(t, "after SIGTERM", n, f.Timeout)
	f.WaitCounts(t, "after SIGTERM", n)
	t.Logf("SIGTERM -> every node counts %d and every browser shows it: %v", n, time.Since(termed).Round(time.Millisecond))
	time.Sleep(300 * time.Millisecond)
	posts := stopPosting()

	durations, joined := f.ReconnectStats()
	codes := f.CloseCodes()
	t.Logf("%d reconnects: p50 %v, p99 %v, at most %d in any 100 ms; close codes %v", len(durations),
		browsersim.Percentile(durations, 50).Round(time.Millisecond), browsersim.Percentile(durations, 99).Round(time.Millisecond),
		browsersim.MaxInWindow(joined, 100*time.Millisecond), codes)
	if int64(codes[1001]) < held {
		t.Errorf("close codes %v; want the %d browsers of the stopped node closed with 1001", codes, held)
	}
	tot := f.Totals()
	if int64(tot.Resumes) < held || tot.Lost > 0 || tot.OutOfOrder > 0 {
		t.Errorf("%d resumes (%d not recovered), %d messages out of order; want at least %d resumes, all recovered, none out of order", tot.Resumes, tot.Lost, tot.OutOfOrder, held)
	}
	checkEmits(t, f, posts)

	// A member that shuts down says so: nobody waited for its heartbeats
	// to stop, which would have dropped it 1.5 s after the last one.
	for _, s := range survivors {
		if out := s.proc.Output(); strings.Contains(out, "member unheard") {
			t.Errorf("%s dropped a member for silence; want %s to have left:\n%s", s.name, leaving.name, out)
		}
	}
}

// startPosting posts a new text to the web servers through nginx every
// interval, as a page's form would, until the returned function is
// called; that function waits for the POSTs in flight and returns them.
// A web server emits through nginx with pkg/client.
func (d *deployment) startPosting(prefix string, interval time.Duration) (stop func() []*emitted) {
	var (
		mu      sync.Mutex
		all     []*emitted
		done    = make(chan struct{})
		stopped = make(chan struct{})
	)
	hc := &http.Client{Timeout: waitTimeout}
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
				start := time.Now()
				e.res, e.err = post(hc, d.nginxHTTP, e.text)
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

// post posts text to POST /api/messages through nginx.
func post(hc *http.Client, nginxHTTP, text string) (client.EmitResult, error) {
	b, _ := json.Marshal(map[string]string{"text": text})
	resp, err := hc.Post("http://"+nginxHTTP+"/api/messages", "application/json", bytes.NewReader(b))
	if err != nil {
		return client.EmitResult{}, err
	}
	defer resp.Body.Close()
	var r struct {
		ID         string `json:"id"`
		Recipients int64  `json:"recipients"`
		Offset     uint64 `json:"offset"`
		Error      string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return client.EmitResult{}, fmt.Errorf("POST /api/messages: %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		return client.EmitResult{}, fmt.Errorf("POST /api/messages: %s: %s", resp.Status, r.Error)
	}
	return client.EmitResult{ID: r.ID, Recipients: r.Recipients, Offset: r.Offset}, nil
}
